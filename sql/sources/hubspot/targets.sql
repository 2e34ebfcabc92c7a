-- HubSpot's goals are not replicated: none
SELECT CAST(NULL AS VARCHAR) AS scope_kind,
       CAST(NULL AS VARCHAR) AS scope_id,
       CAST(NULL AS DATE) AS period_start,
       CAST(NULL AS DATE) AS period_end,
       CAST(NULL AS NUMERIC(18, 2)) AS amount
WHERE 1 = 0
