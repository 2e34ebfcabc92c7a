-- canonical field_history from OpportunityHistory (amount and close date compared with the
-- previous row) and the status changes the stage changes imply
WITH {% include "salesforce/_history.sql" %},
{% include "_status_changes.sql" %}
SELECT opportunity_id, field, changed_at, old_value, new_value
FROM status_change
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
