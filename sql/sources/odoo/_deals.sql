{#- the opportunities a run reads: all, or those written since the watermark and the retried -#}
SELECT id,
       stage_id,
       user_id,
       create_uid,
       date_closed,
       COALESCE(date_conversion, create_date) AS created_at,
       (active IS FALSE AND COALESCE(probability, 0) = 0) AS is_lost
FROM crm_lead
WHERE type = 'opportunity'
{% if since %}
  AND (write_date > :since
{% if retry %}
       OR CAST(id AS VARCHAR) IN :retry_ids
{% endif %}
  )
{% endif %}
