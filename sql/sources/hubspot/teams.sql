-- canonical teams from HubSpot's team: HubSpot names no team manager; a team changed when
-- Fivetran last wrote it
SELECT CAST(id AS VARCHAR) AS team_id,
       name,
       CAST(NULL AS VARCHAR) AS manager_id,
       _fivetran_synced AS updated_at
FROM team
{% if since %}
WHERE _fivetran_synced > :since
{% if retry %}
   OR CAST(id AS VARCHAR) IN :retry_ids
{% endif %}
{% endif %}
