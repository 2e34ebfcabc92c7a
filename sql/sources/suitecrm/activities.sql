-- canonical activities from SuiteCRM's calls, meetings, tasks, notes and e-mails on
-- opportunities: what happened, not what was planned or failed (statuses from
-- include/language/en_us.lang.php): calls and meetings Held (not Planned or Not Held),
-- tasks Completed (counted as notes), e-mails neither In Draft nor Send Error
{% set modules = [("calls", "call", "date_start", "x.status = 'Held'"),
                  ("meetings", "meeting", "date_start", "x.status = 'Held'"),
                  ("tasks", "note", "date_start", "x.status = 'Completed'"),
                  ("notes", "note", "date_entered", "TRUE"),
                  ("emails", "email", "date_sent_received",
                   "COALESCE(x.status, '') NOT IN ('draft', 'send_error')")] %}
{% for table, type, moment, done in modules %}
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
WHERE x.parent_type = 'Opportunities' AND x.deleted = 0 AND {{ done }}
{% if since %}
  AND (x.date_modified > :since
{% if retry %}
       OR x.id IN :retry_ids
{% endif %}
  )
{% endif %}
{% endfor %}
