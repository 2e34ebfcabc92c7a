-- canonical leads from Odoo's crm_lead: a lead (open, or archived = disqualified), or an
-- opportunity converted from a lead (the same record, with its conversion date)
SELECT CAST(l.id AS VARCHAR) AS lead_id,
       src.name AS source,
       CAST(l.user_id AS VARCHAR) AS owner_id,
       CAST(l.partner_id AS VARCHAR) AS account_id,
       CASE WHEN l.type = 'opportunity' THEN 'converted'
            WHEN l.active IS FALSE THEN 'disqualified' ELSE 'open' END AS status,
       l.create_date AS created_at,
       CASE WHEN l.type = 'opportunity' THEN l.date_conversion END AS converted_at,
       CASE WHEN l.type = 'opportunity' THEN CAST(l.id AS VARCHAR) END AS opportunity_id,
       l.write_date AS updated_at
FROM crm_lead l
LEFT JOIN utm_source src ON src.id = l.source_id
WHERE (l.type = 'lead' OR l.date_conversion IS NOT NULL)
{% if since %}
  AND (l.write_date > :since
{% if retry %}
       OR CAST(l.id AS VARCHAR) IN :retry_ids
{% endif %}
  )
{% endif %}
