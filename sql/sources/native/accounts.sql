-- canonical accounts from the native schema
SELECT account_id,
       name,
       industry,
       territory_id,
       owner_id,
       phone,
       email,
       website,
       tax_id,
       created_at,
       updated_at
FROM crm_accounts
{% if since %}
WHERE updated_at > :since
{% if retry %}
   OR account_id IN :retry_ids
{% endif %}
{% endif %}
