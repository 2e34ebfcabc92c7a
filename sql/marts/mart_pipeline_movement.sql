-- mart_pipeline_movement: how the open pipeline moved from the start of each of the recent
-- weeks (Monday to Monday in the reporting time zone; the as-of week runs to the end of the
-- as-of day) to its end. For each scope the bridge
--
--     start + created + reopened + moved_in + amount_up - amount_down
--           - won - lost - moved_out - removed = end
--
-- balances in deals and to the cent. A deal open in the scope at the start carries its start
-- amount; one that enters during the week (created, reopened, moved in from another scope)
-- enters with its amount at the week's end. Amount changes of deals open at the start are
-- split out as amount_up and amount_down. A deal leaves as won or lost (closed in the week,
-- counted in the scope that owns it at the end), moved_out (another scope owns it at the end)
-- or removed (neither open nor closed any more, e.g. a status loudou does not know).
--
-- Deals open in the same scope at both ends also sit in exactly one status bucket, in this
-- order of precedence: advanced (a later stage), regressed (an earlier stage), pushed_out
-- (expected close date later), pulled_in (earlier), unchanged. Their amounts are end amounts.
-- A deal belongs to its owner's team and territory as stg_users has them now; a deal whose
-- owner has no such scope is not counted in it. Every scope with a deal in any bucket has a
-- row for each of the sixteen buckets.
{% import "facts/_deals_as_of.sql" as history %}
{% from "dims/_stages.sql" import stage_rows %}
{% from "facts/_days.sql" import run_days %}
{#- the weeks of each run day r: week k (0 the earliest) starts on a local Monday and ends at
    the next one, as naive UTC; the last, the as-of week, ends with the as-of day #}
{% macro week_start(k) -%}
(date_trunc('week', CAST(r.as_of_date AS TIMESTAMP)) - INTERVAL '{{ 7 * (weeks - 1 - k) }} days')
{%- endmacro %}
{% macro bound(k) -%}
{% if k == weeks %}r.day_end{% else %}((CAST({{ week_start(k) }} AS TIMESTAMP) AT TIME ZONE {{ timezone | text }}) AT TIME ZONE 'UTC'){% endif %}
{%- endmacro %}
{#- (bucket, the deals in it, counted in the scope at the start or at the end, amount) #}
{% set buckets = [
    ("start", "open_start", "start", "start_amount"),
    ("created", "is_new AND (open_end OR closed_end)", "end", "end_amount"),
    ("reopened", "NOT is_new AND NOT open_start AND open_end", "end", "end_amount"),
    ("moved_in", "open_start AND NOT same AND (open_end OR closed_end)", "end", "end_amount"),
    ("amount_up", "stayed AND amount_rose", "start", "end_amount - start_amount"),
    ("amount_down", "stayed AND amount_fell", "start", "start_amount - end_amount"),
    ("won", "(open_start OR is_new) AND won_end", "end", "end_amount"),
    ("lost", "(open_start OR is_new) AND lost_end", "end", "end_amount"),
    ("moved_out", "open_start AND NOT same", "start", "end_amount"),
    ("removed", "removed", "start", "start_amount"),
    ("end", "open_end", "end", "end_amount"),
    ("advanced", "kept AND later_stage", "start", "end_amount"),
    ("regressed", "kept AND earlier_stage", "start", "end_amount"),
    ("pushed_out", "kept AND NOT later_stage AND NOT earlier_stage AND pushed", "start", "end_amount"),
    ("pulled_in", "kept AND NOT later_stage AND NOT earlier_stage AND pulled", "start", "end_amount"),
    ("unchanged", "kept AND NOT later_stage AND NOT earlier_stage AND NOT pushed AND NOT pulled", "start", "end_amount"),
] %}
{% from "marts/_scopes.sql" import SCOPES as scopes %}
WITH {{ stage_rows("stage_info", stages) }},
{{ run_days("run_day", days) }},
run_week (as_of_date, week_start, week_end, start_at, end_at) AS (
{% for k in range(weeks) %}
    SELECT r.as_of_date, CAST({{ week_start(k) }} AS DATE),
           {% if k + 1 == weeks %}r.as_of_date + 1{% else %}CAST({{ week_start(k + 1) }} AS DATE){% endif %},
           {{ bound(k) }}, {{ bound(k + 1) }}
    FROM run_day AS r
{% if not loop.last %}
    UNION ALL
{% endif %}
{% endfor %}
),
-- each week once: the run days of a backfill share their finished weeks
week AS (
    SELECT DISTINCT week_start, week_end, start_at, end_at FROM run_week
),
bound (moment) AS (
    SELECT start_at FROM week UNION SELECT end_at FROM week
),
{{ history.deals_at("deals_at", "bound", "stage_info") }},
-- each week's deals at its end beside the same deals at its start (every deal at the start
-- is there at the end: created before either)
pair AS (
    SELECT w.week_start, w.week_end, b.owner_id AS start_owner, a.owner_id AS end_owner,
           b.opportunity_id IS NULL AS is_new,
           COALESCE(b.status = 'open', FALSE) AS open_start,
           COALESCE(a.status = 'open', FALSE) AS open_end,
           COALESCE(a.status IN ('won', 'lost'), FALSE) AS closed_end,
           COALESCE(a.status = 'won', FALSE) AS won_end,
           COALESCE(a.status = 'lost', FALSE) AS lost_end,
           COALESCE(b.amount, 0) AS start_amount, COALESCE(a.amount, 0) AS end_amount,
           COALESCE(a.stage_order > b.stage_order, FALSE) AS later_stage,
           COALESCE(a.stage_order < b.stage_order, FALSE) AS earlier_stage,
           COALESCE(a.expected_close_date > b.expected_close_date, FALSE) AS pushed,
           COALESCE(a.expected_close_date < b.expected_close_date, FALSE) AS pulled
    FROM week AS w
    JOIN deals_at AS a ON a.moment = w.end_at
    LEFT JOIN deals_at AS b ON b.moment = w.start_at AND b.opportunity_id = a.opportunity_id
),
-- the deals that moved alike between the same two owners, counted once: scoping them four
-- times costs what the owners and the ways of moving are, not what the deals are
moved AS (
    SELECT week_start, week_end, start_owner, end_owner, is_new, open_start, open_end,
           closed_end, won_end, lost_end, later_stage, earlier_stage, pushed, pulled,
           end_amount > start_amount AS amount_rose, end_amount < start_amount AS amount_fell,
           COUNT(*) AS deals, SUM(start_amount) AS start_amount, SUM(end_amount) AS end_amount
    FROM pair
    GROUP BY week_start, week_end, start_owner, end_owner, is_new, open_start, open_end,
             closed_end, won_end, lost_end, later_stage, earlier_stage, pushed, pulled,
             end_amount > start_amount, end_amount < start_amount
),
-- each deal once per scope kind, with the scope that owns it at either end
scoped AS (
{% for kind, column in scopes %}
    SELECT p.*, '{{ kind }}' AS scope_kind,
{% if column == "owner_id" %}{# a deal's rep is its owner, known to stg_users or not #}
           p.start_owner AS start_scope, p.end_owner AS end_scope
    FROM moved AS p
{% elif column %}
           us.{{ column }} AS start_scope, ue.{{ column }} AS end_scope
    FROM moved AS p
    LEFT JOIN stg_users AS us ON us.user_id = p.start_owner
    LEFT JOIN stg_users AS ue ON ue.user_id = p.end_owner
{% else %}
           'all' AS start_scope, 'all' AS end_scope
    FROM moved AS p
{% endif %}
{% if not loop.last %}
    UNION ALL
{% endif %}
{% endfor %}
),
flagged AS (
    SELECT *, open_start AND NOT removed AS stayed
    FROM (SELECT *, open_start AND same AND NOT open_end AND NOT closed_end AS removed,
                 open_start AND open_end AND same AS kept
          FROM (SELECT *, COALESCE(start_scope = end_scope, FALSE) AS same
                FROM scoped) AS compared) AS with_removed
),
{% for side in ("start", "end") %}
{{ side }}_side AS (
    SELECT week_start, week_end, scope_kind, {{ side }}_scope AS scope_id,
{% for name, condition, counted_at, amount in buckets if counted_at == side %}
           SUM(deals) FILTER (WHERE {{ condition }}) AS {{ name }}_count,
           SUM({{ amount }}) FILTER (WHERE {{ condition }}) AS {{ name }}_amount{{ "," if not loop.last }}
{% endfor %}
    FROM flagged
    WHERE {{ side }}_scope IS NOT NULL
    GROUP BY week_start, week_end, scope_kind, {{ side }}_scope
),
{% endfor %}
counted AS (
    SELECT COALESCE(s.week_start, e.week_start) AS week_start,
           COALESCE(s.week_end, e.week_end) AS week_end,
           COALESCE(s.scope_kind, e.scope_kind) AS scope_kind,
           COALESCE(s.scope_id, e.scope_id) AS scope_id,
{% for name, condition, counted_at, amount in buckets %}
           COALESCE({{ "s" if counted_at == "start" else "e" }}.{{ name }}_count, 0) AS {{ name }}_count,
           COALESCE({{ "s" if counted_at == "start" else "e" }}.{{ name }}_amount, 0) AS {{ name }}_amount{{ "," if not loop.last }}
{% endfor %}
    FROM start_side AS s
    FULL JOIN end_side AS e
        ON e.week_start = s.week_start AND e.week_end = s.week_end
       AND e.scope_kind = s.scope_kind AND e.scope_id = s.scope_id
)
{% for name, condition, counted_at, amount in buckets %}
SELECT w.as_of_date, c.week_start, c.week_end, c.scope_kind, c.scope_id,
       '{{ name }}' AS bucket, CAST(c.{{ name }}_count AS BIGINT) AS deal_count,
       CAST(ROUND(CAST(c.{{ name }}_amount AS NUMERIC(38, 6)), 2) AS DOUBLE PRECISION) AS amount
FROM counted AS c
JOIN run_week AS w ON w.week_start = c.week_start AND w.week_end = c.week_end
WHERE {% for other, _, _, _ in buckets %}c.{{ other }}_count{{ " + " if not loop.last }}{% endfor %} > 0
{% if not loop.last %}
UNION ALL
{% endif %}
{% endfor %}
