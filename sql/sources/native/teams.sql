-- canonical teams from the native schema
SELECT team_id,
       name,
       manager_id,
       updated_at
FROM crm_teams
{% if since %}
WHERE updated_at > :since
{% if retry %}
   OR team_id IN :retry_ids
{% endif %}
{% endif %}
