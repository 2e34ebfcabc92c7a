-- HubSpot keeps leads as contacts in a lifecycle stage, not as records of their own: none
SELECT CAST(NULL AS VARCHAR) AS lead_id,
       CAST(NULL AS VARCHAR) AS source,
       CAST(NULL AS VARCHAR) AS owner_id,
       CAST(NULL AS VARCHAR) AS account_id,
       CAST(NULL AS VARCHAR) AS status,
       CAST(NULL AS TIMESTAMP) AS created_at,
       CAST(NULL AS TIMESTAMP) AS converted_at,
       CAST(NULL AS VARCHAR) AS opportunity_id,
       CAST(NULL AS TIMESTAMP) AS updated_at
WHERE 1 = 0
