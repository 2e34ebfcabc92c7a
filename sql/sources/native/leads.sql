-- canonical leads from the native schema
SELECT lead_id,
       source,
       owner_id,
       account_id,
       status,
       created_at,
       converted_at,
       opportunity_id,
       updated_at
FROM crm_leads
{% if since %}
WHERE updated_at > :since
{% if retry %}
   OR lead_id IN :retry_ids
{% endif %}
{% endif %}
