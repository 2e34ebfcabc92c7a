-- every opportunity Salesforce still has (deleted ones count as gone)
SELECT id AS opportunity_id FROM opportunity WHERE is_deleted IS NOT TRUE
