-- canonical field_history from SuiteCRM's opportunities_audit (amount, expected close date,
-- assigned user) and the status changes the stage changes imply
WITH {% include "suitecrm/_history.sql" %},
status AS (
    SELECT opportunity_id,
           changed_at,
           CASE from_stage WHEN {{ won_stage | literal }} THEN 'won'
                           WHEN {{ lost_stage | literal }} THEN 'lost' ELSE 'open' END AS old_value,
           CASE to_stage WHEN {{ won_stage | literal }} THEN 'won'
                         WHEN {{ lost_stage | literal }} THEN 'lost' ELSE 'open' END AS new_value
    FROM stage_change
    WHERE from_stage IS NOT NULL
)
SELECT opportunity_id, 'status' AS field, changed_at, old_value, new_value
FROM status
WHERE old_value <> new_value
UNION ALL
SELECT parent_id,
       CASE field_name WHEN 'amount' THEN 'amount'
                       WHEN 'date_closed' THEN 'expected_close_date'
                       ELSE 'owner_id' END,
       date_created,
       CASE field_name WHEN 'amount'
            THEN CAST(CAST(before_value_string AS DECIMAL(18, 2)) AS CHAR)
            ELSE before_value_string END,
       CASE field_name WHEN 'amount'
            THEN CAST(CAST(after_value_string AS DECIMAL(18, 2)) AS CHAR)
            ELSE after_value_string END
FROM opportunities_audit
WHERE field_name IN ('amount', 'date_closed', 'assigned_user_id')
  AND parent_id IN (SELECT id FROM deal)
