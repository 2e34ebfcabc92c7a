-- canonical accounts from HubSpot's company
SELECT CAST(id AS VARCHAR) AS account_id,
       property_name AS name,
       property_industry AS industry,
       CAST(NULL AS VARCHAR) AS territory_id,
       CAST(property_hubspot_owner_id AS VARCHAR) AS owner_id,
       property_phone AS phone,
       CAST(NULL AS VARCHAR) AS email,
       property_website AS website,
       CAST(NULL AS VARCHAR) AS tax_id,
       property_createdate AS created_at,
       property_hs_lastmodifieddate AS updated_at
FROM company
WHERE is_deleted IS NOT TRUE
{% if since %}
  AND (property_hs_lastmodifieddate > :since
{% if retry %}
       OR CAST(id AS VARCHAR) IN :retry_ids
{% endif %}
  )
{% endif %}
