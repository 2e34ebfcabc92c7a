-- canonical field_history from OpportunityHistory (amount and close date compared with the
-- previous row) and the status changes the stage changes imply
WITH {% include "salesforce/_history.sql" %},
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
SELECT opportunity_id,
       'amount',
       created_date,
       CAST(CAST(previous_amount AS NUMERIC(18, 2)) AS VARCHAR),
       CAST(CAST(amount AS NUMERIC(18, 2)) AS VARCHAR)
FROM snapshot
WHERE n > 1 AND amount IS DISTINCT FROM previous_amount
UNION ALL
SELECT opportunity_id,
       'expected_close_date',
       created_date,
       TO_CHAR(previous_close_date, 'YYYY-MM-DD'),
       TO_CHAR(close_date, 'YYYY-MM-DD')
FROM snapshot
WHERE n > 1 AND close_date IS DISTINCT FROM previous_close_date
