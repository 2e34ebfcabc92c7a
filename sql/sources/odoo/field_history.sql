-- canonical field_history from Odoo's mail tracking (amount, salesperson; the close date is
-- not tracked, see unrecorded.yaml) and the status changes the stage history implies. An
-- unassigned salesperson is tracked as 0: no owner.
WITH stage_change AS (
{% include "odoo/_stage_history.sql" %}
),
{% include "_status_changes.sql" %}
SELECT opportunity_id, field, changed_at, old_value, new_value
FROM status_change
UNION ALL
SELECT CAST(m.res_id AS VARCHAR),
       CASE f.name WHEN 'expected_revenue' THEN 'amount' ELSE 'owner_id' END,
       m.date,
       CASE f.name
           WHEN 'expected_revenue'
               THEN CAST(CAST(t.old_value_{{ tracked_money }} AS NUMERIC(18, 2)) AS VARCHAR)
           ELSE CAST(NULLIF(t.old_value_integer, 0) AS VARCHAR) END,
       CASE f.name
           WHEN 'expected_revenue'
               THEN CAST(CAST(t.new_value_{{ tracked_money }} AS NUMERIC(18, 2)) AS VARCHAR)
           ELSE CAST(NULLIF(t.new_value_integer, 0) AS VARCHAR) END
FROM mail_tracking_value t
JOIN mail_message m ON m.id = t.mail_message_id AND m.model = 'crm.lead'
JOIN ir_model_fields f
  ON f.id = t.{{ tracked_field }} AND f.model = 'crm.lead'
 AND f.name IN ('expected_revenue', 'user_id')
WHERE m.res_id IN (SELECT CAST(opportunity_id AS INTEGER) FROM stage_change)
