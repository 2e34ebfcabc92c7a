{#- Naive UTC timestamps as the reporting time zone's wall-clock time, or its calendar day. -#}
{% macro local(column, timezone) %}(({{ column }} AT TIME ZONE 'UTC') AT TIME ZONE {{ timezone | text }}){% endmacro %}
{% macro local_day(column, timezone) %}CAST({{ local(column, timezone) }} AS DATE){% endmacro %}
