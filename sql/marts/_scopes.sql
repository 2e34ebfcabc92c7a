{#- The scopes every mart is read at: the company, and each team, territory and rep that
    owns rows. `source` must have owner_id, team_id and territory_id. -#}
{% set SCOPES = [("company", none), ("team", "team_id"), ("territory", "territory_id"), ("user", "owner_id")] %}

{#- `measures` aggregated by `keys` once per scope; rows without the scope's id are left out
    of that scope, as are rows without a key. -#}
{% macro per_scope(source, keys, measures) %}
{% for kind, column in SCOPES %}
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
