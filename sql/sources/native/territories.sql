-- canonical territories from the native schema
SELECT territory_id,
       name,
       parent_id,
       updated_at
FROM crm_territories
{% if since %}
WHERE updated_at > :since
{% if retry %}
   OR territory_id IN :retry_ids
{% endif %}
{% endif %}
