-- canonical users from Odoo's res_users (internal users): the sales team they belong to,
-- its leader as their manager; an archived user has left
SELECT CAST(u.id AS VARCHAR) AS user_id,
       p.name,
       u.login AS email,
       CAST(CASE WHEN t.user_id <> u.id THEN t.user_id END AS VARCHAR) AS manager_id,
       CAST(m.crm_team_id AS VARCHAR) AS team_id,
       CAST(NULL AS VARCHAR) AS territory_id,
       u.active AS is_active,
       u.create_date AS hired_at,
       CASE WHEN u.active IS FALSE THEN u.write_date END AS left_at,
       u.write_date AS updated_at
FROM res_users u
JOIN res_partner p ON p.id = u.partner_id
LEFT JOIN (
    SELECT DISTINCT ON (user_id) user_id, crm_team_id
    FROM crm_team_member
    WHERE active IS NOT FALSE
    ORDER BY user_id, id
) m ON m.user_id = u.id
LEFT JOIN crm_team t ON t.id = m.crm_team_id
WHERE u.share IS NOT TRUE
{% if since %}
  AND (u.write_date > :since
{% if retry %}
       OR CAST(u.id AS VARCHAR) IN :retry_ids
{% endif %}
  )
{% endif %}
