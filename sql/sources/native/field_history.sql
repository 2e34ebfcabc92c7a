-- canonical field_history from the native schema
SELECT opportunity_id,
       field,
       changed_at,
       old_value,
       new_value
FROM crm_field_history
{% if since %}
WHERE opportunity_id IN (
    SELECT opportunity_id FROM crm_opportunities WHERE updated_at > :since)
{% if retry %}
   OR opportunity_id IN :retry_ids
{% endif %}
{% endif %}
