-- canonical stage_history from the native schema
SELECT opportunity_id,
       changed_at,
       to_stage,
       from_stage,
       changed_by
FROM crm_stage_history
{% if since %}
WHERE opportunity_id IN (
    SELECT opportunity_id FROM crm_opportunities WHERE updated_at > :since)
{% if retry %}
   OR opportunity_id IN :retry_ids
{% endif %}
{% endif %}
