-- canonical users from HubSpot's owners: the primary team; HubSpot keeps no managers, and
-- an inactive owner left when last updated
SELECT CAST(o.owner_id AS VARCHAR) AS user_id,
       CONCAT_WS(' ', NULLIF(o.first_name, ''), NULLIF(o.last_name, '')) AS name,
       o.email,
       CAST(NULL AS VARCHAR) AS manager_id,
       CAST(t.team_id AS VARCHAR) AS team_id,
       CAST(NULL AS VARCHAR) AS territory_id,
       o.is_active,
       o.created_at AS hired_at,
       CASE WHEN o.is_active IS FALSE THEN o.updated_at END AS left_at,
       o.updated_at
FROM owner o
LEFT JOIN owner_team t ON t.owner_id = o.owner_id AND t.is_team_primary
{% if since %}
WHERE o.updated_at > :since
{% if retry %}
   OR CAST(o.owner_id AS VARCHAR) IN :retry_ids
{% endif %}
{% endif %}
