-- SuiteCRM keeps no quotas: none
SELECT CAST(NULL AS CHAR) AS scope_kind,
       CAST(NULL AS CHAR) AS scope_id,
       CAST(NULL AS DATE) AS period_start,
       CAST(NULL AS DATE) AS period_end,
       CAST(NULL AS DECIMAL(18, 2)) AS amount
FROM DUAL
WHERE 1 = 0
