{% from "suitecrm/_text.sql" import decoded %}
-- canonical users from SuiteCRM's users: reports_to is the manager, the security group the
-- team; an inactive user left when last modified
WITH {% include "suitecrm/_email.sql" %},
team AS (
    SELECT user_id, MIN(securitygroup_id) AS team_id
    FROM securitygroups_users
    WHERE deleted = 0
    GROUP BY user_id
)
SELECT u.id AS user_id,
       {{ decoded("TRIM(CONCAT_WS(' ', NULLIF(u.first_name, ''), NULLIF(u.last_name, '')))") }}
           AS name,
       e.email,
       u.reports_to_id AS manager_id,
       t.team_id,
       CAST(NULL AS CHAR) AS territory_id,
       u.status = 'Active' AS is_active,
       u.date_entered AS hired_at,
       CASE WHEN u.status <> 'Active' THEN u.date_modified END AS left_at,
       u.date_modified AS updated_at
FROM users u
LEFT JOIN primary_email e ON e.bean_id = u.id AND e.bean_module = 'Users'
LEFT JOIN team t ON t.user_id = u.id
WHERE u.deleted = 0
{% if since %}
  AND (u.date_modified > :since
{% if retry %}
       OR u.id IN :retry_ids
{% endif %}
  )
{% endif %}
