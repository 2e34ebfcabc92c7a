{#- The deals as they were at a moment, rebuilt from history: what every table of a past day
    starts from. Each macro writes common table expressions for the caller's WITH; `moment`
    is a :parameter holding naive UTC, and the names of what a macro makes start with
    `name`. Written once for DuckDB and PostgreSQL: the same SQL runs in either. -#}

{#- Bounds for a span that has none on one side, in either engine's TIMESTAMP. -#}
{% set START_OF_TIME = "CAST('0001-01-01' AS TIMESTAMP)" %}
{% set END_OF_TIME = "CAST('9999-12-31' AS TIMESTAMP)" %}

{#- History text read as a number, or NULL where it is none (a CRM may write anything). -#}
{% macro number(text) -%}
CASE WHEN TRIM({{ text }}) ~ '^[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)?$'
     THEN CAST(TRIM({{ text }}) AS DOUBLE PRECISION) END
{%- endmacro %}

{#- History text read as a date (its first ten characters, ISO), or NULL where it is none. -#}
{% macro day(text) -%}
CASE WHEN {{ text }} ~ '^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])([ T].*)?$'
     THEN CAST(SUBSTR({{ text }}, 1, 10) AS DATE) END
{%- endmacro %}

{#- `name`_stay: every stay of a live deal (of `deals`, with opportunity_id, stage,
    created_at) in a stage: stage, entered_at, left_at (the next entry, or the end of time).
    A deal enters its first stage at creation: its first recorded change's from_stage, or,
    with no change recorded, the stage it is in now; then each change's to_stage. Changes at
    one instant are ordered by stage name; an entry left the instant it was made holds at no
    moment. One sort of the history makes both ends of every stay. -#}
{% macro stays(name, deals) %}
{{ name }}_change AS (
    SELECT h.opportunity_id, h.changed_at, h.from_stage, h.to_stage, d.created_at,
           LAG(h.changed_at) OVER in_order AS before_at,
           LEAD(h.changed_at) OVER in_order AS next_at
    FROM stg_stage_history AS h
    JOIN {{ deals }} AS d ON d.opportunity_id = h.opportunity_id
    WHERE h.to_stage IS NOT NULL
    WINDOW in_order AS (PARTITION BY h.opportunity_id
                        ORDER BY h.changed_at, h.to_stage, h.from_stage)
),
{{ name }}_stay AS (
    SELECT opportunity_id, to_stage AS stage, changed_at AS entered_at,
           COALESCE(next_at, {{ END_OF_TIME }}) AS left_at
    FROM {{ name }}_change
    UNION ALL
    SELECT opportunity_id, from_stage, created_at, changed_at
    FROM {{ name }}_change
    WHERE before_at IS NULL AND from_stage IS NOT NULL
    UNION ALL
    SELECT d.opportunity_id, d.stage, d.created_at, {{ END_OF_TIME }}
    FROM {{ deals }} AS d
    WHERE d.stage IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM {{ name }}_change AS c
                      WHERE c.opportunity_id = d.opportunity_id)
)
{% endmacro %}

{#- `name`: every live deal created before each moment of `moments` (a CTE with a column
    `moment`) as it was then, a row per moment and deal: moment, opportunity_id, owner_id,
    pipeline, stage, stage_order, status, amount, expected_close_date, probability,
    weighted_amount, closed_at. The stage is the last one entered before the moment; status,
    amount, expected close date and owner come from field history (the last change's new
    value before the moment; if every change came later, the first later change's old value;
    with none, the value now). Without status history a deal counts as closed once its
    closed_at has passed, or once it entered the won or lost stage. `stages` names the CTE of
    dims/_stages.sql's stage_rows.
    Each stay and each field value is read once, as the span of time it held, and joined to
    the moments that fall in it: one pass over the history for any number of moments. -#}
{% macro deals_at(name, moments, stages) %}
{{ name }}_deal AS (
    SELECT opportunity_id, owner_id, pipeline, stage, status, amount, expected_close_date,
           created_at, closed_at
    FROM stg_opportunities
    WHERE is_deleted IS NOT TRUE
),
{{ stays(name, name ~ "_deal") }},
{{ name }}_stage AS (
    SELECT m.moment, s.opportunity_id, s.stage
    FROM {{ name }}_stay AS s
    JOIN {{ moments }} AS m ON s.entered_at < m.moment AND s.left_at >= m.moment
),
{{ name }}_field_change AS (
    SELECT f.opportunity_id, f.field, f.changed_at, f.old_value, f.new_value
    FROM stg_field_history AS f
    JOIN {{ name }}_deal AS d ON d.opportunity_id = f.opportunity_id
    WHERE f.field IN ('status', 'amount', 'expected_close_date', 'owner_id')
      AND f.changed_at IS NOT NULL
),
-- a change's new value holds from it until the next change with a value; before a deal's
-- first change, the old value of the first change that has one
{{ name }}_held AS (
    SELECT opportunity_id, field, new_value AS value, 0 AS after_moment, changed_at AS since,
           COALESCE(LEAD(changed_at) OVER (PARTITION BY opportunity_id, field
                                           ORDER BY changed_at), {{ END_OF_TIME }}) AS until
    FROM {{ name }}_field_change
    WHERE new_value IS NOT NULL
    UNION ALL
    SELECT opportunity_id, field, old_value, 1,
           COALESCE(LAG(changed_at) OVER (PARTITION BY opportunity_id, field
                                          ORDER BY changed_at), {{ START_OF_TIME }}),
           changed_at
    FROM {{ name }}_field_change
    WHERE old_value IS NOT NULL
),
{{ name }}_field AS (
    SELECT moment, opportunity_id,
{% for field in ("status", "amount", "expected_close_date", "owner_id") %}
           COALESCE(MAX(CASE WHEN field = '{{ field }}' AND after_moment = 0 THEN value END),
                    MAX(CASE WHEN field = '{{ field }}' AND after_moment = 1 THEN value END))
               AS {{ field }}{{ "," if not loop.last }}
{% endfor %}
    FROM (SELECT m.moment, h.opportunity_id, h.field, h.value, h.after_moment
          FROM {{ name }}_held AS h
          JOIN {{ moments }} AS m ON h.since < m.moment AND h.until >= m.moment) AS held
    GROUP BY moment, opportunity_id
),
{{ name }}_staged AS (
    SELECT m.moment, d.opportunity_id, d.pipeline, COALESCE(e.stage, d.stage) AS stage,
           s.stage_order, s.probability AS stage_probability,
           COALESCE(
               f.status,
               CASE WHEN d.closed_at < m.moment THEN d.status
                    WHEN s.is_won THEN 'won'
                    WHEN s.is_lost THEN 'lost'
                    ELSE 'open' END) AS status,
           CASE WHEN f.amount IS NULL THEN d.amount ELSE {{ number("f.amount") }} END AS amount,
           CASE WHEN f.expected_close_date IS NULL THEN CAST(d.expected_close_date AS DATE)
                ELSE {{ day("f.expected_close_date") }} END AS expected_close_date,
           COALESCE(f.owner_id, d.owner_id) AS owner_id, d.closed_at
    FROM {{ name }}_deal AS d
    JOIN {{ moments }} AS m ON d.created_at < m.moment
    LEFT JOIN {{ name }}_stage AS e
        ON e.opportunity_id = d.opportunity_id AND e.moment = m.moment
    LEFT JOIN {{ name }}_field AS f
        ON f.opportunity_id = d.opportunity_id AND f.moment = m.moment
    LEFT JOIN {{ stages }} AS s ON s.pipeline = d.pipeline AND s.stage = COALESCE(e.stage, d.stage)
),
{{ name }} AS (
    SELECT moment, opportunity_id, owner_id, pipeline, stage, stage_order, status, amount,
           expected_close_date, probability, amount * probability AS weighted_amount, closed_at
    FROM (SELECT *,
                 CASE status WHEN 'won' THEN 1.0 WHEN 'lost' THEN 0.0
                             ELSE stage_probability END AS probability
          FROM {{ name }}_staged) AS typed
)
{% endmacro %}
