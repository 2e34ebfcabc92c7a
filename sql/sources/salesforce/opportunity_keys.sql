{% from "salesforce/_live.sql" import live with context %}
-- every opportunity Salesforce still has (deleted ones count as gone)
SELECT id AS opportunity_id
FROM opportunity o
WHERE is_deleted IS NOT TRUE {{ live("opportunity", "o") }}
