-- canonical leads from SuiteCRM's leads: Converted (at its opportunity's creation), Dead =
-- disqualified, any other status open
SELECT l.id AS lead_id,
       l.lead_source AS source,
       l.assigned_user_id AS owner_id,
       l.account_id,
       CASE WHEN l.status = 'Converted' OR l.converted = 1 THEN 'converted'
            WHEN l.status = 'Dead' THEN 'disqualified' ELSE 'open' END AS status,
       l.date_entered AS created_at,
       o.date_entered AS converted_at,
       l.opportunity_id,
       l.date_modified AS updated_at
FROM leads l
LEFT JOIN opportunities o ON o.id = l.opportunity_id
WHERE l.deleted = 0
{% if since %}
  AND (l.date_modified > :since
{% if retry %}
       OR l.id IN :retry_ids
{% endif %}
  )
{% endif %}
