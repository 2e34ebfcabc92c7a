-- canonical users from HubSpot's owners: the primary team; HubSpot keeps no managers. An
-- owner is active while it has an active user (`active_user_id`, "null if owner is not an
-- active user": fivetran/dbt_hubspot_source models/src_hubspot.yml; the connector has no
-- `is_active`); an inactive owner left when last updated
SELECT CAST(o.owner_id AS VARCHAR) AS user_id,
       CONCAT_WS(' ', NULLIF(o.first_name, ''), NULLIF(o.last_name, '')) AS name,
       o.email,
       CAST(NULL AS VARCHAR) AS manager_id,
       CAST(t.team_id AS VARCHAR) AS team_id,
       CAST(NULL AS VARCHAR) AS territory_id,
       o.active_user_id IS NOT NULL AS is_active,
       o.created_at AS hired_at,
       CASE WHEN o.active_user_id IS NULL THEN o.updated_at END AS left_at,
       o.updated_at
FROM owner o
LEFT JOIN owner_team t ON t.owner_id = o.owner_id AND t.is_team_primary
{% if since %}
WHERE o.updated_at > :since
{% if retry %}
   OR CAST(o.owner_id AS VARCHAR) IN :retry_ids
{% endif %}
{% endif %}
