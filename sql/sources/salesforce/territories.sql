-- canonical territories from Salesforce roles: the roles directly above the teams
WITH RECURSIVE {% include "salesforce/_roles.sql" %}
SELECT t.id AS territory_id,
       t.name,
       CASE WHEN t.parent_role_id IN (SELECT id FROM territory_role)
            THEN t.parent_role_id END AS parent_id,
       t.system_modstamp AS updated_at
FROM territory_role t
{% if since %}
WHERE t.system_modstamp > :since
{% if retry %}
   OR t.id IN :retry_ids
{% endif %}
{% endif %}
