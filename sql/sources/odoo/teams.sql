-- canonical teams from Odoo's crm_team: the team leader is the manager
SELECT CAST(id AS VARCHAR) AS team_id,
       name ->> 'en_US' AS name,
       CAST(user_id AS VARCHAR) AS manager_id,
       write_date AS updated_at
FROM crm_team
{% if since %}
WHERE write_date > :since
{% if retry %}
   OR CAST(id AS VARCHAR) IN :retry_ids
{% endif %}
{% endif %}
