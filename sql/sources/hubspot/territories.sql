-- HubSpot has no sales territories: none (users and accounts carry no territory)
SELECT CAST(NULL AS VARCHAR) AS territory_id,
       CAST(NULL AS VARCHAR) AS name,
       CAST(NULL AS VARCHAR) AS parent_id,
       CAST(NULL AS TIMESTAMP) AS updated_at
WHERE 1 = 0
