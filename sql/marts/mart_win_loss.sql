-- mart_win_loss: the deals won and lost in each of the recent months and quarters (closed
-- before the as-of day's end, in the reporting time zone), for the company and each team, cut
-- by lead source, industry, competitor, team and, for lost deals, the stage they were lost
-- from (their last stay that ended lost). win_rate = won / (won + lost); none for the stage cut.
{% set dimensions = ["lead_source", "industry", "competitor", "team", "lost_at_stage"] %}
{% from "marts/_scopes.sql" import SCOPES %}
{% from "marts/_local.sql" import local %}
{% set scopes = SCOPES[:2] %}
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
{% for period_kind, count in [("month", periods.month), ("quarter", periods.quarter)] %}
in_{{ period_kind }} AS (
    SELECT *, CAST(date_trunc('{{ period_kind }}', closed_local) AS DATE) AS period_start
    FROM closed
    WHERE closed_local >= date_trunc('{{ period_kind }}', CAST(:as_of_date AS TIMESTAMP))
              - INTERVAL '{{ (count - 1) * (3 if period_kind == "quarter" else 1) }} months'
      AND closed_local < CAST(:as_of_date AS TIMESTAMP) + INTERVAL '1 day'
){{ "," if not loop.last }}
{% endfor %}
SELECT CAST(:as_of_date AS DATE) AS as_of_date, period_kind, period_start, scope_kind, scope_id,
       dimension, dimension_value, won, lost,
       CASE WHEN dimension <> 'lost_at_stage' AND won + lost > 0
            THEN CAST(won AS DOUBLE PRECISION) / (won + lost) END AS win_rate,
       won_amount, lost_amount
FROM (
{% for period_kind in ["month", "quarter"] %}
{% set outer = loop %}
{% for dimension in dimensions %}
{% set dimension_loop = loop %}
{% for scope_kind, column in scopes %}
    SELECT '{{ period_kind }}' AS period_kind, period_start, '{{ scope_kind }}' AS scope_kind,
           {{ column if column else "'all'" }} AS scope_id, '{{ dimension }}' AS dimension,
           {{ dimension }} AS dimension_value,
           COUNT(*) FILTER (WHERE won) AS won, COUNT(*) FILTER (WHERE NOT won) AS lost,
           COALESCE(SUM(won_amount), 0) AS won_amount,
           COALESCE(SUM(lost_amount), 0) AS lost_amount
    FROM in_{{ period_kind }}
    WHERE {{ dimension }} IS NOT NULL{% if column %} AND {{ column }} IS NOT NULL{% endif %}

    GROUP BY period_start, {% if column %}{{ column }}, {% endif %}{{ dimension }}
{% if not (outer.last and dimension_loop.last and loop.last) %}
    UNION ALL
{% endif %}
{% endfor %}
{% endfor %}
{% endfor %}
) AS cuts
