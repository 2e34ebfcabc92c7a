-- every deal HubSpot still has (deleted ones count as gone)
SELECT CAST(deal_id AS VARCHAR) AS opportunity_id FROM deal WHERE is_deleted IS NOT TRUE
