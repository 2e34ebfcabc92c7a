-- canonical activities from the native schema
SELECT activity_id,
       opportunity_id,
       account_id,
       owner_id,
       type,
       occurred_at,
       updated_at
FROM crm_activities
{% if since %}
WHERE updated_at > :since
{% if retry %}
   OR activity_id IN :retry_ids
{% endif %}
{% endif %}
