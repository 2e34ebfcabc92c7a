-- canonical users from the native schema
SELECT user_id,
       name,
       email,
       manager_id,
       team_id,
       territory_id,
       is_active,
       hired_at,
       left_at,
       updated_at
FROM crm_users
{% if since %}
WHERE updated_at > :since
{% if retry %}
   OR user_id IN :retry_ids
{% endif %}
{% endif %}
