{% from "salesforce/_live.sql" import live with context %}
-- canonical activities from Salesforce's Task (calls, e-mails, other = notes) and Event
-- (meetings, visits) on opportunities. An open task (IsClosed false) is a plan, not an
-- activity done.
SELECT id AS activity_id,
       what_id AS opportunity_id,
       account_id,
       owner_id,
       CASE WHEN task_subtype = 'Call' OR type = 'Call' THEN 'call'
            WHEN task_subtype = 'Email' OR type = 'Email' THEN 'email'
            WHEN type = 'Meeting' THEN 'meeting'
            ELSE 'note' END AS type,
       COALESCE(completed_date_time, CAST(activity_date AS TIMESTAMP)) AS occurred_at,
       system_modstamp AS updated_at
FROM task t
WHERE is_deleted IS NOT TRUE AND is_closed {{ live("task", "t") }}
  AND what_id IN (SELECT id FROM opportunity)
{% if since %}
  AND (system_modstamp > :since
{% if retry %}
       OR id IN :retry_ids
{% endif %}
  )
{% endif %}
UNION ALL
SELECT id,
       what_id,
       account_id,
       owner_id,
       CASE WHEN type = 'Visit' THEN 'visit' ELSE 'meeting' END,
       COALESCE(start_date_time, activity_date_time),
       system_modstamp
FROM event e
WHERE is_deleted IS NOT TRUE {{ live("event", "e") }}
  AND what_id IN (SELECT id FROM opportunity)
{% if since %}
  AND (system_modstamp > :since
{% if retry %}
       OR id IN :retry_ids
{% endif %}
  )
{% endif %}
