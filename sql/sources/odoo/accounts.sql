-- canonical accounts from Odoo's res_partner: companies and whoever a deal is with
SELECT CAST(p.id AS VARCHAR) AS account_id,
       p.name,
       i.name ->> 'en_US' AS industry,
       CAST(NULL AS VARCHAR) AS territory_id,
       CAST(p.user_id AS VARCHAR) AS owner_id,
       p.phone,
       p.email,
       p.website,
       p.vat AS tax_id,
       p.create_date AS created_at,
       p.write_date AS updated_at
FROM res_partner p
LEFT JOIN res_partner_industry i ON i.id = p.industry_id
WHERE (p.is_company OR p.id IN (SELECT partner_id FROM crm_lead))
{% if since %}
  AND (p.write_date > :since
{% if retry %}
       OR CAST(p.id AS VARCHAR) IN :retry_ids
{% endif %}
  )
{% endif %}
