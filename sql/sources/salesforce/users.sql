{% from "salesforce/_live.sql" import live with context %}
-- canonical users from Salesforce's User: team and territory from the role (the nearest
-- with a forecast manager, at or above the user's); an inactive user has left
WITH RECURSIVE {% include "salesforce/_roles.sql" %}
SELECT u.id AS user_id,
       u.name,
       u.email,
       u.manager_id,
       t.team_id,
       t.territory_id,
       u.is_active,
       u.created_date AS hired_at,
       CASE WHEN u.is_active IS FALSE THEN u.last_modified_date END AS left_at,
       u.system_modstamp AS updated_at
FROM "user" u
LEFT JOIN role_team t ON t.role_id = u.user_role_id
WHERE TRUE {{ live("user", "u") }}
{% if since %}
  AND (u.system_modstamp > :since
{% if retry %}
       OR u.id IN :retry_ids
{% endif %}
  )
{% endif %}
