-- canonical teams from Salesforce roles with a forecast manager
WITH RECURSIVE {% include "salesforce/_roles.sql" %}
SELECT id AS team_id,
       name,
       forecast_user_id AS manager_id,
       system_modstamp AS updated_at
FROM team_role
{% if since %}
WHERE system_modstamp > :since
{% if retry %}
   OR id IN :retry_ids
{% endif %}
{% endif %}
