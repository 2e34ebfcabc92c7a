-- canonical users from Salesforce's User: team and territory from the role; an inactive
-- user has left
WITH {% include "salesforce/_roles.sql" %}
SELECT u.id AS user_id,
       u.name,
       u.email,
       u.manager_id,
       t.id AS team_id,
       t.parent_role_id AS territory_id,
       u.is_active,
       u.created_date AS hired_at,
       CASE WHEN u.is_active IS FALSE THEN u.last_modified_date END AS left_at,
       u.system_modstamp AS updated_at
FROM "user" u
LEFT JOIN team_role t ON t.id = u.user_role_id
{% if since %}
WHERE u.system_modstamp > :since
{% if retry %}
   OR u.id IN :retry_ids
{% endif %}
{% endif %}
