-- every opportunity Odoo still has, to notice hard deletes (unlink)
SELECT CAST(id AS VARCHAR) AS opportunity_id FROM crm_lead WHERE type = 'opportunity'
