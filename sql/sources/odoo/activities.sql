-- canonical activities from Odoo: activities marked done on a deal (a mail_message that
-- keeps the activity's type); To-Do and Upload Document count as notes
SELECT CAST(m.id AS VARCHAR) AS activity_id,
       CAST(m.res_id AS VARCHAR) AS opportunity_id,
       CAST(l.partner_id AS VARCHAR) AS account_id,
       CAST(u.id AS VARCHAR) AS owner_id,
       CASE WHEN LOWER(a.name ->> 'en_US') IN ('to-do', 'to do', 'upload document') THEN 'note'
            ELSE LOWER(a.name ->> 'en_US') END AS type,
       m.date AS occurred_at,
       m.write_date AS updated_at
FROM mail_message m
JOIN mail_activity_type a ON a.id = m.mail_activity_type_id
JOIN crm_lead l ON l.id = m.res_id
LEFT JOIN res_users u ON u.partner_id = m.author_id
WHERE m.model = 'crm.lead'
{% if since %}
  AND (m.write_date > :since
{% if retry %}
       OR CAST(m.id AS VARCHAR) IN :retry_ids
{% endif %}
  )
{% endif %}
