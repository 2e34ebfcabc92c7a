-- canonical field_history from Odoo's mail tracking (amount, close date, salesperson) and
-- the status changes the stage history implies
WITH stage_change AS (
{% include "odoo/_stage_history.sql" %}
),
{% include "_status_changes.sql" %}
SELECT opportunity_id, field, changed_at, old_value, new_value
FROM status_change
UNION ALL
SELECT CAST(m.res_id AS VARCHAR),
       CASE f.name WHEN 'expected_revenue' THEN 'amount'
                   WHEN 'date_deadline' THEN 'expected_close_date'
                   ELSE 'owner_id' END,
       m.date,
       CASE f.name
           WHEN 'expected_revenue'
               THEN CAST(CAST(t.old_value_{{ tracked_money }} AS NUMERIC(18, 2)) AS VARCHAR)
           WHEN 'date_deadline' THEN TO_CHAR(t.old_value_datetime, 'YYYY-MM-DD')
           ELSE CAST(t.old_value_integer AS VARCHAR) END,
       CASE f.name
           WHEN 'expected_revenue'
               THEN CAST(CAST(t.new_value_{{ tracked_money }} AS NUMERIC(18, 2)) AS VARCHAR)
           WHEN 'date_deadline' THEN TO_CHAR(t.new_value_datetime, 'YYYY-MM-DD')
           ELSE CAST(t.new_value_integer AS VARCHAR) END
FROM mail_tracking_value t
JOIN mail_message m ON m.id = t.mail_message_id AND m.model = 'crm.lead'
JOIN ir_model_fields f
  ON f.id = t.{{ tracked_field }} AND f.model = 'crm.lead'
 AND f.name IN ('expected_revenue', 'date_deadline', 'user_id')
WHERE m.res_id IN (SELECT CAST(opportunity_id AS INTEGER) FROM stage_change)
