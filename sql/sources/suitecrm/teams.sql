{% from "suitecrm/_text.sql" import decoded %}
-- canonical teams from SuiteCRM's security groups
WITH {% include "suitecrm/_teams.sql" %}
SELECT g.id AS team_id,
       {{ decoded("g.name") }} AS name,
       t.manager_id,
       g.date_modified AS updated_at
FROM securitygroups g
LEFT JOIN team_manager t ON t.team_id = g.id
WHERE g.deleted = 0
{% if since %}
  AND (g.date_modified > :since
{% if retry %}
       OR g.id IN :retry_ids
{% endif %}
  )
{% endif %}
