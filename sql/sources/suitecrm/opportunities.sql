{% from "suitecrm/_text.sql" import decoded %}
-- canonical opportunities from SuiteCRM's opportunities: date_closed is the expected close
-- date; the deal closed when it moved into Closed Won / Closed Lost. `deleted` is SuiteCRM's
-- soft delete.
WITH {% include "suitecrm/_history.sql" %},
{% include "_closing.sql" %},
account AS (
    SELECT opportunity_id, MIN(account_id) AS account_id
    FROM accounts_opportunities
    WHERE deleted = 0
    GROUP BY opportunity_id
)
SELECT o.id AS opportunity_id,
       {{ decoded("o.name") }} AS name,
       a.account_id,
       o.assigned_user_id AS owner_id,
       {{ pipeline | literal }} AS pipeline,
       CASE o.sales_stage WHEN 'Closed Won' THEN {{ won_stage | literal }}
                          WHEN 'Closed Lost' THEN {{ lost_stage | literal }}
                          ELSE o.sales_stage END AS stage,
       CASE o.sales_stage WHEN 'Closed Won' THEN 'won'
                          WHEN 'Closed Lost' THEN 'lost' ELSE 'open' END AS status,
       o.amount,
       COALESCE(c.iso4217, {{ currency | literal }}) AS currency,
       o.date_closed AS expected_close_date,
       o.date_entered AS created_at,
       o.date_modified AS updated_at,
       CASE WHEN o.sales_stage IN ('Closed Won', 'Closed Lost') THEN k.closed_at END
           AS closed_at,
       CAST(NULL AS CHAR) AS lost_reason,
       CAST(NULL AS CHAR) AS competitor,
       o.lead_source,
       o.deleted = 1 AS is_deleted
FROM opportunities o
JOIN deal d ON d.id = o.id
LEFT JOIN account a ON a.opportunity_id = o.id
LEFT JOIN currencies c ON c.id = o.currency_id AND o.currency_id <> '-99'
LEFT JOIN closing k ON k.opportunity_id = o.id
