-- canonical activities from HubSpot's engagements on deals (tasks are not activities done).
-- v3 connectors keep owner and time in the typed tables (engagement_call, _email, _meeting,
-- _note: property_hubspot_owner_id, property_hs_timestamp, _fivetran_deleted), v1 connectors
-- in engagement itself (owner_id, timestamp, active): see variables.sql. An engagement
-- changes when Fivetran writes it again (_fivetran_synced; HubSpot's own last-updated time
-- is not among the connector's documented columns).
WITH {% include "hubspot/_primary_company.sql" %},
engagement_done AS (
{% if v3_engagements %}
{% for kind in v3_engagements.split(",") %}
    SELECT engagement_id AS id,
           {{ kind | literal }} AS type,
           property_hubspot_owner_id AS owner_id,
           property_hs_timestamp AS occurred_at,
           _fivetran_synced AS updated_at
    FROM engagement_{{ kind }}
    WHERE _fivetran_deleted IS NOT TRUE
{% if not loop.last %}
    UNION ALL
{% endif %}
{% endfor %}
{% else %}
    SELECT id,
           LOWER(type) AS type,
           owner_id,
           timestamp AS occurred_at,
           _fivetran_synced AS updated_at
    FROM engagement
    WHERE type IN ('CALL', 'EMAIL', 'MEETING', 'NOTE') AND active IS NOT FALSE
{% endif %}
)
SELECT CAST(e.id AS VARCHAR) AS activity_id,
       CAST(ed.deal_id AS VARCHAR) AS opportunity_id,
       CAST(c.company_id AS VARCHAR) AS account_id,
       CAST(e.owner_id AS VARCHAR) AS owner_id,
       e.type,
       e.occurred_at,
       e.updated_at
FROM engagement_done e
JOIN engagement_deal ed ON ed.engagement_id = e.id
LEFT JOIN primary_company c ON c.deal_id = ed.deal_id
{% if since %}
WHERE e.updated_at > :since
{% if retry %}
   OR CAST(e.id AS VARCHAR) IN :retry_ids
{% endif %}
{% endif %}
