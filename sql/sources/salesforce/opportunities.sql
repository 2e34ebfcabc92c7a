{% from "salesforce/_live.sql" import live with context %}
-- canonical opportunities from Salesforce's Opportunity (deleted rows left out: to loudou
-- they are gone). Won and lost come from is_won / is_closed; the close moment from the
-- stage change that closed the deal (CloseDate is only a day, and often the planned one).
WITH {% include "salesforce/_history.sql" %},
{% include "_closing.sql" %}
SELECT o.id AS opportunity_id,
       o.name,
       o.account_id,
       o.owner_id,
       {{ pipeline | literal }} AS pipeline,
       CASE WHEN o.is_won THEN {{ won_stage | literal }}
            WHEN o.is_closed THEN {{ lost_stage | literal }}
            ELSE o.stage_name END AS stage,
       CASE WHEN o.is_won THEN 'won' WHEN o.is_closed THEN 'lost' ELSE 'open' END AS status,
       o.amount,
{% if has_deal_currency == "True" %}
       o.currency_iso_code AS currency,
{% else %}
       {{ currency | literal }} AS currency,
{% endif %}
       o.close_date AS expected_close_date,
       o.created_date AS created_at,
       o.system_modstamp AS updated_at,
       CASE WHEN o.is_closed THEN c.closed_at END AS closed_at,
       CAST(NULL AS VARCHAR) AS lost_reason,
       CAST(NULL AS VARCHAR) AS competitor,
       o.lead_source,
       FALSE AS is_deleted
FROM opportunity o
JOIN deal d ON d.id = o.id {{ live("opportunity", "o") }}
LEFT JOIN closing c ON c.opportunity_id = o.id
