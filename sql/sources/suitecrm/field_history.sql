-- canonical field_history from SuiteCRM's opportunities_audit (amount, expected close date,
-- assigned user) and the status changes the stage changes imply. SuiteCRM 7 audits
-- amount_usdollar, not amount (modules/Opportunities/vardefs.php): a past amount is the
-- audited base-currency value times the deal currency's conversion rate, today's (SuiteCRM
-- keeps no past rates).
WITH {% include "suitecrm/_history.sql" %},
{% include "_status_changes.sql" %},
rate AS (
    SELECT o.id, COALESCE(c.conversion_rate, 1) AS conversion_rate
    FROM opportunities o
    LEFT JOIN currencies c ON c.id = o.currency_id AND o.currency_id <> '-99'
)
SELECT opportunity_id, field, changed_at, old_value, new_value
FROM status_change
UNION ALL
SELECT a.parent_id,
       CASE a.field_name WHEN 'amount_usdollar' THEN 'amount'
                         WHEN 'date_closed' THEN 'expected_close_date'
                         ELSE 'owner_id' END,
       a.date_created,
       CASE a.field_name WHEN 'amount_usdollar'
            THEN CAST(CAST(CAST(NULLIF(a.before_value_string, '') AS DOUBLE) * r.conversion_rate
                           AS DECIMAL(18, 2)) AS CHAR)
            ELSE a.before_value_string END,
       CASE a.field_name WHEN 'amount_usdollar'
            THEN CAST(CAST(CAST(NULLIF(a.after_value_string, '') AS DOUBLE) * r.conversion_rate
                           AS DECIMAL(18, 2)) AS CHAR)
            ELSE a.after_value_string END
FROM opportunities_audit a
JOIN rate r ON r.id = a.parent_id
WHERE a.field_name IN ('amount_usdollar', 'date_closed', 'assigned_user_id')
  AND a.parent_id IN (SELECT id FROM deal)
