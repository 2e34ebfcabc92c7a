-- mart_conversion_alert: the stage-conversion flags managers are alerted to, per as-of day:
-- for the company and each team, in the any-stage funnel over all deals, the last whole week
-- (Monday to Monday before the as-of week) flagged by mart_stage_conversion as anomalous (a
-- week-over-week drop, is_anomaly) or as a bottleneck (below the benchmark, is_bottleneck).
-- `raised` marks a flag the previous day built did not have on the same scope, stage and kind:
-- its alert goes out once, and a flag that persists is not raised again until it has cleared.
-- previous_rate: the week before's rate (conversion_rate - change_vs_previous).
{% set watched -%}
dimension = 'all' AND funnel = 'any_stage' AND period_kind = 'week'
AND scope_kind IN ('company', 'team')
AND period_start = CAST(date_trunc('week', CAST(as_of_date AS TIMESTAMP)) - INTERVAL '7 days' AS DATE)
{%- endset %}
WITH previous_day (as_of_date) AS (
    SELECT MAX(as_of_date) FROM mart_stage_conversion WHERE as_of_date < :as_of_date
),
flagged AS (
{% for kind in ("anomaly", "bottleneck") %}
    SELECT as_of_date, scope_kind, scope_id, pipeline, stage, '{{ kind }}' AS kind,
           period_start, entered, advanced, lost, conversion_rate,
           conversion_rate - change_vs_previous AS previous_rate, benchmark_rate, p_value
    FROM mart_stage_conversion
    WHERE is_{{ kind }} AND {{ watched }}
      AND (as_of_date = :as_of_date OR as_of_date = (SELECT as_of_date FROM previous_day))
{% if not loop.last %}
    UNION ALL
{% endif %}
{% endfor %}
)
SELECT t.as_of_date, t.scope_kind, t.scope_id, t.pipeline, t.stage, t.kind, t.period_start,
       t.entered, t.advanced, t.lost, t.conversion_rate, t.previous_rate, t.benchmark_rate,
       t.p_value,
       NOT EXISTS (SELECT 1 FROM flagged AS y
                   WHERE y.as_of_date < t.as_of_date AND y.scope_kind = t.scope_kind
                     AND y.scope_id = t.scope_id AND y.pipeline = t.pipeline
                     AND y.stage = t.stage AND y.kind = t.kind) AS raised
FROM flagged AS t
WHERE t.as_of_date = :as_of_date
