-- fct_pipeline_snapshot: the pipeline as it stood at the as-of day's end, rebuilt from
-- history: the deals open then, and those closed that day, each with the stage, status,
-- amount, expected close date and owner it had then, and its stage's probability (a won
-- deal's is 1, a lost one's 0).
{% import "facts/_deals_as_of.sql" as history %}
{% from "dims/_stages.sql" import stage_rows %}
WITH {{ stage_rows("stage_info", stages) }},
end_of_day (moment) AS (SELECT CAST(:day_end AS TIMESTAMP)),
{{ history.deals_at("deals_then", "end_of_day", "stage_info") }}
SELECT CAST(:as_of_date AS DATE) AS as_of_date, opportunity_id, owner_id, pipeline, stage,
       status, amount, expected_close_date, probability, weighted_amount
FROM deals_then
WHERE status = 'open'
   OR (status IN ('won', 'lost') AND closed_at >= :day_start AND closed_at < :day_end)
