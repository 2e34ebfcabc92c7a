-- fct_pipeline_snapshot: the pipeline as it stood at each run day's end, rebuilt from
-- history: the deals open then, and those closed that day, each with the stage, status,
-- amount, expected close date and owner it had then, and its stage's probability (a won
-- deal's is 1, a lost one's 0).
{% import "facts/_deals_as_of.sql" as history %}
{% from "dims/_stages.sql" import stage_rows %}
{% from "facts/_days.sql" import run_days %}
WITH {{ stage_rows("stage_info", stages) }},
{{ run_days("run_day", days) }},
run_end (moment) AS (SELECT r.day_end FROM run_day AS r),
{{ history.deals_at("deals_then", "run_end", "stage_info") }}
SELECT r.as_of_date, d.opportunity_id, d.owner_id, d.pipeline, d.stage, d.status, d.amount,
       d.expected_close_date, d.probability, d.weighted_amount
FROM deals_then AS d
JOIN run_day AS r ON r.day_end = d.moment
WHERE d.status = 'open'
   OR (d.status IN ('won', 'lost') AND d.closed_at >= r.day_start AND d.closed_at < r.day_end)
