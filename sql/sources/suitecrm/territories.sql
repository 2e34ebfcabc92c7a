-- SuiteCRM has no sales territories: none (users and accounts carry no territory)
SELECT CAST(NULL AS CHAR) AS territory_id,
       CAST(NULL AS CHAR) AS name,
       CAST(NULL AS CHAR) AS parent_id,
       CAST(NULL AS DATETIME) AS updated_at
FROM DUAL
WHERE 1 = 0
