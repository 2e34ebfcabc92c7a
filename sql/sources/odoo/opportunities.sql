-- canonical opportunities from Odoo's crm_lead (type 'opportunity'). Lost is an archived
-- deal at probability 0 (checked first); won is a stage marked is_won; any other archived
-- deal was set aside, a soft delete. date_closed is kept when a won deal is dragged back to
-- an open stage: it counts only for a closed deal. A deal without a company takes the main
-- company's currency, as Odoo's company_currency does.
SELECT CAST(l.id AS VARCHAR) AS opportunity_id,
       l.name,
       CAST(l.partner_id AS VARCHAR) AS account_id,
       CAST(l.user_id AS VARCHAR) AS owner_id,
       {{ pipeline | literal }} AS pipeline,
       CASE WHEN d.is_lost THEN {{ lost_stage | literal }}
            WHEN s.is_won THEN {{ won_stage | literal }}
            ELSE s.name ->> 'en_US' END AS stage,
       CASE WHEN d.is_lost THEN 'lost' WHEN s.is_won THEN 'won' ELSE 'open' END AS status,
       l.expected_revenue AS amount,
       COALESCE(cur.name, main_currency.name) AS currency,
       l.date_deadline AS expected_close_date,
       d.created_at,
       l.write_date AS updated_at,
       CASE WHEN d.is_lost OR s.is_won THEN l.date_closed END AS closed_at,
       r.name ->> 'en_US' AS lost_reason,
       CAST(NULL AS VARCHAR) AS competitor,
       src.name AS lead_source,
       (l.active IS FALSE AND NOT d.is_lost) AS is_deleted
FROM ({% include "odoo/_deals.sql" %}) d
JOIN crm_lead l ON l.id = d.id
LEFT JOIN crm_stage s ON s.id = l.stage_id
LEFT JOIN res_company co ON co.id = l.company_id
LEFT JOIN res_currency cur ON cur.id = co.currency_id
LEFT JOIN res_currency main_currency
  ON main_currency.id = (SELECT currency_id FROM res_company ORDER BY id LIMIT 1)
LEFT JOIN crm_lost_reason r ON r.id = l.lost_reason_id
LEFT JOIN utm_source src ON src.id = l.source_id
