-- mart_sales_metrics: the ratios a sales director reads every month, per period (the recent
-- weeks, months and quarters, in the reporting time zone, up to the as-of day) and scope:
-- - lead_to_opportunity_rate: of leads created in the period, the share converted to a deal;
-- - lead_to_qualified_rate: of those leads, the share whose deal reached the qualified stage;
-- - opportunity_to_qualified_rate: of deals created in the period, the share that reached the
--   qualified stage (any-stage: reaching a later stage counts; day_qualified_deal);
-- - win_rate: of deals closed in the period, the share won;
-- - qualified_win_rate: the same among closed deals that reached the qualified stage;
-- - qualified_per_win: closed qualified deals per won qualified deal;
-- - sales_cycle_days: median days from creation to won, for deals won in the period;
-- - avg_won_amount: mean amount of deals won in the period.
-- Each row carries the numerator and denominator it was computed from (for the last two: no
-- numerator, and the deals won as the denominator). Deals are as they were at the day's end.
{% import "marts/_scopes.sql" as scopes %}
{% from "marts/_local.sql" import local %}
{% set period_kinds = ["week", "month", "quarter"] %}
{# `measures` of the rows of `source` whose `moment` (local time) falls in each recent
   period, per scope #}
{% macro by_period(name, source, moment, measures) %}
{{ name }}_in_period AS (
{{ scopes.in_recent_periods(source, moment, period_kinds, periods) }}
),
{{ name }} AS (
{{ scopes.per_scope(name ~ "_in_period", ["period_kind", "period_start"], measures) }}
)
{%- endmacro %}
WITH qualified AS (
    SELECT DISTINCT opportunity_id FROM day_qualified_deal
),
leads AS (
    SELECT {{ local("l.created_at", timezone) }} AS created_local, u.team_id, u.territory_id,
           l.owner_id,
           l.opportunity_id IS NOT NULL AND l.converted_at < :day_end AS converted,
           l.opportunity_id IS NOT NULL AND l.converted_at < :day_end
               AND q.opportunity_id IS NOT NULL AS qualified
    FROM stg_leads AS l
    LEFT JOIN stg_users AS u ON u.user_id = l.owner_id
    LEFT JOIN qualified AS q ON q.opportunity_id = l.opportunity_id
    WHERE l.created_at < :day_end
),
deals AS (
    SELECT {{ local("f.created_at", timezone) }} AS created_local,
           {{ local("f.closed_at", timezone) }} AS closed_local,
           f.closed_at, f.status, f.amount, f.team_id, f.territory_id,
           f.owner_id, q.opportunity_id IS NOT NULL AS qualified,
           EXTRACT(EPOCH FROM (f.closed_at - f.created_at)) / 86400.0 AS cycle_days
    FROM day_opportunity AS f
    LEFT JOIN qualified AS q ON q.opportunity_id = f.opportunity_id
    WHERE f.created_at < :day_end
),
closed AS (
    SELECT * FROM deals WHERE closed_at < :day_end AND status IN ('won', 'lost')
),
won AS (
    SELECT * FROM closed WHERE status = 'won'
),
{{ by_period("by_lead", "leads", "created_local",
    "COUNT(*) AS leads, COUNT(*) FILTER (WHERE converted) AS converted, "
    ~ "COUNT(*) FILTER (WHERE qualified) AS qualified") }},
{{ by_period("by_deal", "deals", "created_local",
    "COUNT(*) AS created, COUNT(*) FILTER (WHERE qualified) AS qualified") }},
{{ by_period("by_close", "closed", "closed_local",
    "COUNT(*) AS closed, COUNT(*) FILTER (WHERE status = 'won') AS won, "
    ~ "COUNT(*) FILTER (WHERE qualified) AS qualified, "
    ~ "COUNT(*) FILTER (WHERE qualified AND status = 'won') AS qualified_won") }},
{{ by_period("by_win", "won", "closed_local",
    "percentile_cont(0.5) WITHIN GROUP (ORDER BY cycle_days) AS sales_cycle_days, "
    ~ "AVG(amount) AS avg_won_amount, COUNT(*) AS won") }},
ratios (period_kind, period_start, scope_kind, scope_id, metric, numerator, denominator) AS (
    SELECT period_kind, period_start, scope_kind, scope_id, 'lead_to_opportunity_rate', converted, leads FROM by_lead
    UNION ALL
    SELECT period_kind, period_start, scope_kind, scope_id, 'lead_to_qualified_rate', qualified, leads FROM by_lead
    UNION ALL
    SELECT period_kind, period_start, scope_kind, scope_id, 'opportunity_to_qualified_rate', qualified, created FROM by_deal
    UNION ALL
    SELECT period_kind, period_start, scope_kind, scope_id, 'win_rate', won, closed FROM by_close
    UNION ALL
    SELECT period_kind, period_start, scope_kind, scope_id, 'qualified_win_rate', qualified_won, qualified FROM by_close
    UNION ALL
    SELECT period_kind, period_start, scope_kind, scope_id, 'qualified_per_win', qualified, qualified_won FROM by_close
)
SELECT CAST(:as_of_date AS DATE) AS as_of_date, period_kind, period_start, scope_kind, scope_id,
       metric,
       CASE WHEN denominator > 0
            THEN CAST(numerator AS DOUBLE PRECISION) / denominator END AS value,
       CAST(numerator AS DOUBLE PRECISION) AS numerator,
       CAST(denominator AS DOUBLE PRECISION) AS denominator
FROM ratios
UNION ALL
SELECT CAST(:as_of_date AS DATE), period_kind, period_start, scope_kind, scope_id,
       'sales_cycle_days', sales_cycle_days, CAST(NULL AS DOUBLE PRECISION),
       CAST(won AS DOUBLE PRECISION)
FROM by_win
UNION ALL
SELECT CAST(:as_of_date AS DATE), period_kind, period_start, scope_kind, scope_id,
       'avg_won_amount', avg_won_amount, CAST(NULL AS DOUBLE PRECISION),
       CAST(won AS DOUBLE PRECISION)
FROM by_win
