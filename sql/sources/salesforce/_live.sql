{#- `live(table, alias)`: the conditions that keep a replica's live rows: the active version
    in history mode, not a row Fivetran marks deleted (see variables.sql) -#}
{% macro live(table, alias) -%}
{% if table in active_tables.split(",") %} AND COALESCE({{ alias }}._fivetran_active, TRUE){% endif %}
{% if table in deleted_tables.split(",") %} AND {{ alias }}._fivetran_deleted IS NOT TRUE{% endif %}
{%- endmacro %}
