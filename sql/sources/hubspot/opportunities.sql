-- canonical opportunities from HubSpot's deal: pipeline and stage by label, won and lost
-- from the stage (closed at probability 1 is won, see _stays.sql), closed at the move into
-- that stage. closedate is the expected close date while the deal is open.
WITH {% include "hubspot/_stays.sql" %},
{% include "_closing.sql" %},
{% include "hubspot/_primary_company.sql" %}
SELECT CAST(d.deal_id AS VARCHAR) AS opportunity_id,
       d.property_dealname AS name,
       CAST(c.company_id AS VARCHAR) AS account_id,
       CAST(d.owner_id AS VARCHAR) AS owner_id,
       p.label AS pipeline,
       l.name AS stage,
       COALESCE(l.status, 'open') AS status,
       d.property_amount AS amount,
       COALESCE(d.property_deal_currency_code, {{ currency | literal }}) AS currency,
       -- the portal's midnight of the day: that day in the reporting zone, not UTC's
       CAST(CAST(d.property_closedate AS TIMESTAMPTZ) AT TIME ZONE {{ reporting_timezone | literal }}
            AS DATE) AS expected_close_date,
       d.property_createdate AS created_at,
       d.property_hs_lastmodifieddate AS updated_at,
       CASE WHEN l.status <> 'open' THEN k.closed_at END AS closed_at,
       d.property_closed_lost_reason AS lost_reason,
       CAST(NULL AS VARCHAR) AS competitor,
       d.property_lead_source AS lead_source,
       FALSE AS is_deleted
FROM deal d
JOIN deal_read r ON r.deal_id = d.deal_id
LEFT JOIN deal_pipeline p ON p.pipeline_id = d.deal_pipeline_id
LEFT JOIN stage_label l ON l.stage_id = d.deal_pipeline_stage_id
LEFT JOIN closing k ON k.opportunity_id = CAST(d.deal_id AS VARCHAR)
LEFT JOIN primary_company c ON c.deal_id = d.deal_id
