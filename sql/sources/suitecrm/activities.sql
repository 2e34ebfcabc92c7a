-- canonical activities from SuiteCRM's calls, meetings, tasks, notes and archived e-mails on
-- opportunities (a completed task counts as a note)
{% set modules = [("calls", "call", "date_start"), ("meetings", "meeting", "date_start"),
                  ("tasks", "note", "date_start"), ("notes", "note", "date_entered"),
                  ("emails", "email", "date_sent_received")] %}
{% for table, type, moment in modules %}
{% if not loop.first %}UNION ALL{% endif %}
SELECT x.id AS activity_id,
       x.parent_id AS opportunity_id,
       ao.account_id,
       x.assigned_user_id AS owner_id,
       '{{ type }}' AS type,
       x.{{ moment }} AS occurred_at,
       x.date_modified AS updated_at
FROM {{ table }} x
LEFT JOIN accounts_opportunities ao ON ao.opportunity_id = x.parent_id AND ao.deleted = 0
WHERE x.parent_type = 'Opportunities' AND x.deleted = 0
{% if table == "tasks" %}
  AND x.status = 'Completed'
{% endif %}
{% if since %}
  AND (x.date_modified > :since
{% if retry %}
       OR x.id IN :retry_ids
{% endif %}
  )
{% endif %}
{% endfor %}
