-- mart_win_loss: the deals won and lost in each of the recent months and quarters (closed
-- before the as-of day's end, in the reporting time zone), for the company and each team, cut
-- by lead source, industry, competitor, team and, for lost deals, the stage they were lost
-- from (their last stay that ended lost). win_rate = won / (won + lost); none for the stage cut.
{% set dimensions = ["lead_source", "industry", "competitor", "team", "lost_at_stage"] %}
{% import "marts/_scopes.sql" as scopes %}
{% from "marts/_local.sql" import local %}
WITH lost_from AS (
    SELECT opportunity_id, stage,
           ROW_NUMBER() OVER (PARTITION BY opportunity_id ORDER BY entered_at DESC) AS latest
    FROM fct_stage_interval
    WHERE exit_kind = 'lost'
),
closed AS (
    SELECT f.team_id, f.lead_source, a.industry, f.competitor, f.team_id AS team,
           CASE WHEN f.status = 'lost' THEN lf.stage END AS lost_at_stage,
           f.status = 'won' AS won,
           CASE WHEN f.status = 'won' THEN f.amount ELSE 0 END AS won_amount,
           CASE WHEN f.status = 'lost' THEN f.amount ELSE 0 END AS lost_amount,
           {{ local("f.closed_at", timezone) }} AS closed_local
    FROM day_opportunity AS f
    LEFT JOIN stg_accounts AS a ON a.account_id = f.account_id
    LEFT JOIN lost_from AS lf ON lf.opportunity_id = f.opportunity_id AND lf.latest = 1
    WHERE f.closed_at < :day_end AND f.status IN ('won', 'lost')
),
closed_in_period AS (
{{ scopes.in_recent_periods("closed", "closed_local", ["month", "quarter"], periods) }}
)
SELECT CAST(:as_of_date AS DATE) AS as_of_date, period_kind, period_start, scope_kind, scope_id,
       dimension, dimension_value, won, lost,
       CASE WHEN dimension <> 'lost_at_stage' AND won + lost > 0
            THEN CAST(won AS DOUBLE PRECISION) / (won + lost) END AS win_rate,
       won_amount, lost_amount
FROM (
{% for dimension in dimensions %}
    SELECT period_kind, period_start, scope_kind, scope_id, '{{ dimension }}' AS dimension,
           {{ dimension }} AS dimension_value, won, lost, won_amount, lost_amount
    FROM ({{ scopes.per_scope("closed_in_period", ["period_kind", "period_start", dimension],
              "COUNT(*) FILTER (WHERE won) AS won, COUNT(*) FILTER (WHERE NOT won) AS lost, "
              ~ "COALESCE(SUM(won_amount), 0) AS won_amount, "
              ~ "COALESCE(SUM(lost_amount), 0) AS lost_amount", scopes.SCOPES[:2]) }}) AS cut
{% if not loop.last %}
    UNION ALL
{% endif %}
{% endfor %}
) AS cuts
