{% from "salesforce/_live.sql" import live with context %}
-- canonical leads from Salesforce's Lead: converted, disqualified (a closed status that did
-- not convert) or open; an unconverted lead names a company, not an account
SELECT id AS lead_id,
       lead_source AS source,
       owner_id,
       converted_account_id AS account_id,
       CASE WHEN is_converted THEN 'converted'
            WHEN status ILIKE 'closed%' OR status ILIKE '%disqualified%' THEN 'disqualified'
            ELSE 'open' END AS status,
       created_date AS created_at,
       CAST(converted_date AS TIMESTAMP) AS converted_at,
       converted_opportunity_id AS opportunity_id,
       system_modstamp AS updated_at
FROM lead l
WHERE is_deleted IS NOT TRUE {{ live("lead", "l") }}
{% if since %}
  AND (system_modstamp > :since
{% if retry %}
       OR id IN :retry_ids
{% endif %}
  )
{% endif %}
