{#- The configured stages (loudou.yaml) as the CTE `name`, with dim_stage's columns: the one
    place SQL reads them from. -#}
{% macro stage_rows(name, stages) %}
{{ name }} (pipeline, stage, stage_order, probability, stall_days, is_required, is_qualified,
            is_won, is_lost, benchmark_rate) AS (
    VALUES
{% for s in stages %}
        ({{ s.pipeline | text }}, {{ s.stage | text }}, {{ s.stage_order | int }},
         {{ s.probability | real }}, {{ s.stall_days | real }}, {{ s.is_required | truth }},
         {{ s.is_qualified | truth }}, {{ s.is_won | truth }}, {{ s.is_lost | truth }},
         {{ s.benchmark_rate | real }}){{ "," if not loop.last }}
{% endfor %}
)
{% endmacro %}
