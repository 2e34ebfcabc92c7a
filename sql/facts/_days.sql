{#- `name` (as_of_date, day_start, day_end): the days a table is made for at once, from the
    parameters :as_of_date_0, :day_start_0, :day_end_0 and so on, `days` of them; day_start
    and day_end bound each reporting day in naive UTC. A nightly makes one day, a backfill
    a chunk of days in one pass. -#}
{% macro run_days(name, days) %}
{{ name }} (as_of_date, day_start, day_end) AS (
{% for i in range(days) %}
    SELECT CAST(:as_of_date_{{ i }} AS DATE), CAST(:day_start_{{ i }} AS TIMESTAMP),
           CAST(:day_end_{{ i }} AS TIMESTAMP){{ " UNION ALL" if not loop.last }}
{% endfor %}
)
{% endmacro %}
