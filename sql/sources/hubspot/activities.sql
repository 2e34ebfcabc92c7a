-- canonical activities from HubSpot's engagements on deals (tasks are not activities done)
WITH {% include "hubspot/_primary_company.sql" %}
SELECT CAST(e.id AS VARCHAR) AS activity_id,
       CAST(ed.deal_id AS VARCHAR) AS opportunity_id,
       CAST(c.company_id AS VARCHAR) AS account_id,
       CAST(e.owner_id AS VARCHAR) AS owner_id,
       LOWER(e.type) AS type,
       e.timestamp AS occurred_at,
       e.last_updated AS updated_at
FROM engagement e
JOIN engagement_deal ed ON ed.engagement_id = e.id
LEFT JOIN primary_company c ON c.deal_id = ed.deal_id
WHERE e.type IN ('CALL', 'EMAIL', 'MEETING', 'NOTE') AND e.active IS NOT FALSE
{% if since %}
  AND (e.last_updated > :since
{% if retry %}
       OR CAST(e.id AS VARCHAR) IN :retry_ids
{% endif %}
  )
{% endif %}
