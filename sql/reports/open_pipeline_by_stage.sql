-- the demo's closing table: the open pipeline by stage
SELECT stage,
       COUNT(*) AS open_deals,
       SUM(amount) AS amount,
       SUM(weighted_amount) AS weighted,
       SUM(CASE WHEN is_stalled THEN 1 ELSE 0 END) AS stalled
FROM fct_opportunity
WHERE status = 'open'
GROUP BY stage, stage_order
ORDER BY stage_order
