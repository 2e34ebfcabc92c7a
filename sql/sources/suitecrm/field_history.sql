-- canonical field_history from SuiteCRM's opportunities_audit (amount, expected close date,
-- assigned user) and the status changes the stage changes imply
WITH {% include "suitecrm/_history.sql" %},
{% include "_status_changes.sql" %}
SELECT opportunity_id, field, changed_at, old_value, new_value
FROM status_change
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
