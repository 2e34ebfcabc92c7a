-- canonical opportunities from the native schema
SELECT opportunity_id,
       name,
       account_id,
       owner_id,
       pipeline,
       stage,
       status,
       amount,
       currency,
       expected_close_date,
       created_at,
       updated_at,
       closed_at,
       lost_reason,
       competitor,
       lead_source,
       is_deleted
FROM crm_opportunities
{% if since %}
WHERE updated_at > :since
{% if retry %}
   OR opportunity_id IN :retry_ids
{% endif %}
{% endif %}
