-- mart_forecast_accuracy: every kept forecast of a period that closed before the as-of day,
-- against what was booked in it. actual: the amount of the deals won in the period (local
-- months and quarters), as they were at the as-of day's end, in the scopes of their owner as
-- stg_users has them now. accuracy = max(0, 1 - |actual - forecast| / actual); bias =
-- (forecast - actual) / actual (positive: the forecast was too high); both undefined when
-- nothing was booked. lead_days: days from the forecast to the period's end. origin: live for
-- the forecasts runs kept (mart_forecast), backtest for those replayed from history
-- (mart_forecast_backtest), so accuracy is known before the first live month closes.
-- `loudou forecast backtest` scores the forecasts it replays with this file too.
{% import "facts/_deals_as_of.sql" as history %}
{% import "marts/_scopes.sql" as scopes %}
{% from "dims/_stages.sql" import stage_rows %}
{% from "marts/_local.sql" import local %}
WITH {{ stage_rows("stage_info", stages) }},
end_of_day (moment) AS (SELECT CAST(:day_end AS TIMESTAMP)),
{{ history.deals_at("deals_then", "end_of_day", "stage_info") }},
won AS (
    SELECT d.owner_id, u.team_id, u.territory_id, COALESCE(d.amount, 0) AS amount,
           {{ local("d.closed_at", timezone) }} AS closed_local
    FROM deals_then AS d
    LEFT JOIN stg_users AS u ON u.user_id = d.owner_id
    WHERE d.status = 'won' AND d.closed_at < :day_end
),
won_in_period AS (
{% for kind in ["month", "quarter"] %}
    SELECT *, '{{ kind }}' AS period_kind,
           CAST(date_trunc('{{ kind }}', closed_local) AS DATE) AS period_start
    FROM won
{% if not loop.last %}
    UNION ALL
{% endif %}
{% endfor %}
),
booked AS (
{{ scopes.per_scope("won_in_period", ["period_kind", "period_start"], "SUM(amount) AS actual") }}
),
forecast AS (
    SELECT as_of_date, period_kind, period_start, period_end, scope_kind, scope_id, method,
           expected, p10, p90, 'live' AS origin
    FROM mart_forecast
    UNION ALL
    SELECT as_of_date, period_kind, period_start, period_end, scope_kind, scope_id, method,
           expected, p10, p90, 'backtest'
    FROM mart_forecast_backtest
),
scored AS (
    SELECT f.as_of_date, f.period_kind, f.period_start, f.period_end, f.scope_kind, f.scope_id,
           f.method, f.expected, f.p10, f.p90, f.origin, COALESCE(b.actual, 0) AS actual
    FROM forecast AS f
    LEFT JOIN booked AS b
        ON b.period_kind = f.period_kind AND b.period_start = f.period_start
        AND b.scope_kind = f.scope_kind AND b.scope_id = f.scope_id
    WHERE f.period_end < CAST(:as_of_date AS DATE)
)
SELECT as_of_date AS forecast_as_of, period_kind, period_start, scope_kind, scope_id, method,
       expected AS forecast, actual,
       CASE WHEN actual > 0
            THEN CASE WHEN ABS(actual - expected) > actual THEN 0
                      ELSE 1 - ABS(actual - expected) / actual END
       END AS accuracy,
       CASE WHEN actual > 0 THEN (expected - actual) / actual END AS bias,
       CAST(period_end - as_of_date AS INTEGER) AS lead_days, p10, p90, origin
FROM scored
