{#- The scopes and periods every mart is read at. -#}

{#- The company, and each team, territory and rep that owns rows: a source must have
    owner_id, team_id and territory_id. -#}
{% set SCOPES = [("company", none), ("team", "team_id"), ("territory", "territory_id"), ("user", "owner_id")] %}

{#- `measures` aggregated by `keys` once per scope of `scopes`; rows without the scope's id
    are left out of that scope, as are rows without a key. -#}
{% macro per_scope(source, keys, measures, scopes=SCOPES) %}
{% for kind, column in scopes %}
SELECT '{{ kind }}' AS scope_kind, {{ column if column else "'all'" }} AS scope_id,
       {{ keys | join(", ") }}, {{ measures }}
FROM {{ source }}
WHERE {{ keys | join(" IS NOT NULL AND ") }} IS NOT NULL{% if column %} AND {{ column }} IS NOT NULL{% endif %}

GROUP BY {% if column %}{{ column }}, {% endif %}{{ keys | join(", ") }}
{% if not loop.last %}
UNION ALL
{% endif %}
{% endfor %}
{% endmacro %}

{#- The rows of `source` whose `moment` (local time) falls in one of the recent periods of
    each of `kinds` (`periods[kind]` of them, up to the as-of day), once per period kind, with
    period_kind and period_start (the period's first day). -#}
{% macro in_recent_periods(source, moment, kinds, periods) %}
{% for kind in kinds %}
{% set back = periods[kind] - 1 %}
SELECT *, '{{ kind }}' AS period_kind,
       CAST(date_trunc('{{ kind }}', {{ moment }}) AS DATE) AS period_start
FROM {{ source }}
WHERE {{ moment }} >= date_trunc('{{ kind }}', CAST(:as_of_date AS TIMESTAMP))
          - INTERVAL '{{ back * 7 if kind == "week" else back * (3 if kind == "quarter" else 1) }} {{ "days" if kind == "week" else "months" }}'
  AND {{ moment }} < CAST(:as_of_date AS TIMESTAMP) + INTERVAL '1 day'
{% if not loop.last %}
UNION ALL
{% endif %}
{% endfor %}
{% endmacro %}
