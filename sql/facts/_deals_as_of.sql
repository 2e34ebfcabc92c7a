{#- The deals as they were at a moment, rebuilt from history: what every table of a past day
    starts from. Each macro writes common table expressions for the caller's WITH; `moment`
    is a :parameter holding naive UTC, and the names of what a macro makes start with
    `name`. Written once for DuckDB and PostgreSQL: the same SQL runs in either. -#}

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

{#- `name`_entry: every time a live deal (of `deals`, with opportunity_id, stage, created_at)
    entered a stage. A deal enters its first stage at creation: its first recorded change's
    from_stage, or, with no change recorded, the stage it is in now. Ties on the moment go to
    the entry at creation (`seq` 0), then to the stage changes by stage name. -#}
{% macro stage_entries(name, deals) %}
{{ name }}_change AS (
    SELECT h.opportunity_id, h.changed_at, h.from_stage, h.to_stage,
           ROW_NUMBER() OVER (PARTITION BY h.opportunity_id
                              ORDER BY h.changed_at, h.to_stage, h.from_stage) AS nth
    FROM stg_stage_history AS h
    JOIN {{ deals }} AS d ON d.opportunity_id = h.opportunity_id
),
{{ name }}_entry AS (
    SELECT d.opportunity_id, COALESCE(c.from_stage, d.stage) AS stage,
           d.created_at AS entered_at, 0 AS seq
    FROM {{ deals }} AS d
    LEFT JOIN {{ name }}_change AS c ON c.opportunity_id = d.opportunity_id AND c.nth = 1
    WHERE c.opportunity_id IS NULL OR c.from_stage IS NOT NULL
    UNION ALL
    SELECT opportunity_id, to_stage, changed_at, 1
    FROM {{ name }}_change
    WHERE to_stage IS NOT NULL
)
{% endmacro %}

{#- `name`: every live deal created before `moment` as it was then: opportunity_id,
    owner_id, pipeline, stage, stage_order, status, amount, expected_close_date,
    probability, weighted_amount, closed_at. The stage is the last one entered before the
    moment; status, amount, expected close date and owner come from field history (the last
    change's new value before the moment; if every change came later, the first later
    change's old value; with none, the value now). Without status history a deal counts as
    closed once its closed_at has passed, or once it entered the won or lost stage. `stages`
    names the CTE of dims/_stages.sql's stage_rows. -#}
{% macro deals_as_of(name, moment, stages) %}
{{ name }}_deal AS (
    SELECT opportunity_id, owner_id, pipeline, stage, status, amount, expected_close_date,
           created_at, closed_at
    FROM stg_opportunities
    WHERE created_at < {{ moment }} AND is_deleted IS NOT TRUE
),
{{ stage_entries(name, name ~ "_deal") }},
{{ name }}_stage AS (
    SELECT opportunity_id, stage
    FROM (SELECT opportunity_id, stage,
                 ROW_NUMBER() OVER (PARTITION BY opportunity_id
                                    ORDER BY entered_at DESC, seq DESC, stage DESC) AS latest
          FROM {{ name }}_entry
          WHERE entered_at < {{ moment }} AND stage IS NOT NULL) AS entered
    WHERE latest = 1
),
{{ name }}_field AS (
    SELECT opportunity_id,
           MAX(CASE WHEN field = 'status' THEN value END) AS status,
           MAX(CASE WHEN field = 'amount' THEN value END) AS amount,
           MAX(CASE WHEN field = 'expected_close_date' THEN value END) AS expected_close_date,
           MAX(CASE WHEN field = 'owner_id' THEN value END) AS owner_id
    FROM (SELECT f.opportunity_id, f.field,
                 CASE WHEN f.changed_at < {{ moment }} THEN f.new_value ELSE f.old_value END
                     AS value,
                 ROW_NUMBER() OVER (
                     PARTITION BY f.opportunity_id, f.field
                     ORDER BY CASE WHEN f.changed_at < {{ moment }} THEN 0 ELSE 1 END,
                              CASE WHEN f.changed_at < {{ moment }} THEN f.changed_at END DESC,
                              f.changed_at) AS pick
          FROM stg_field_history AS f
          JOIN {{ name }}_deal AS d ON d.opportunity_id = f.opportunity_id
          WHERE f.field IN ('status', 'amount', 'expected_close_date', 'owner_id')
            AND ((f.changed_at < {{ moment }} AND f.new_value IS NOT NULL)
                 OR (f.changed_at >= {{ moment }} AND f.old_value IS NOT NULL))) AS changed
    WHERE pick = 1
    GROUP BY opportunity_id
),
{{ name }}_staged AS (
    SELECT d.opportunity_id, d.pipeline, COALESCE(e.stage, d.stage) AS stage, s.stage_order,
           s.probability AS stage_probability,
           COALESCE(
               f.status,
               CASE WHEN d.closed_at < {{ moment }} THEN d.status
                    WHEN s.is_won THEN 'won'
                    WHEN s.is_lost THEN 'lost'
                    ELSE 'open' END) AS status,
           CASE WHEN f.amount IS NULL THEN d.amount ELSE {{ number("f.amount") }} END AS amount,
           CASE WHEN f.expected_close_date IS NULL THEN CAST(d.expected_close_date AS DATE)
                ELSE {{ day("f.expected_close_date") }} END AS expected_close_date,
           COALESCE(f.owner_id, d.owner_id) AS owner_id, d.closed_at
    FROM {{ name }}_deal AS d
    LEFT JOIN {{ name }}_stage AS e ON e.opportunity_id = d.opportunity_id
    LEFT JOIN {{ name }}_field AS f ON f.opportunity_id = d.opportunity_id
    LEFT JOIN {{ stages }} AS s ON s.pipeline = d.pipeline AND s.stage = COALESCE(e.stage, d.stage)
),
{{ name }} AS (
    SELECT opportunity_id, owner_id, pipeline, stage, stage_order, status, amount,
           expected_close_date, probability, amount * probability AS weighted_amount, closed_at
    FROM (SELECT *,
                 CASE status WHEN 'won' THEN 1.0 WHEN 'lost' THEN 0.0
                             ELSE stage_probability END AS probability
          FROM {{ name }}_staged) AS typed
)
{% endmacro %}
