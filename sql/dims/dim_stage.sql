-- dim_stage: the configured stages of each pipeline, in order: the open stages, then the won
-- and the lost stage (loudou.yaml is their source; transforms.stages.stage_dimension reads it).
{% from "dims/_stages.sql" import stage_rows %}
WITH {{ stage_rows("stage_info", stages) }}
SELECT pipeline, stage, stage_order, probability, stall_days, is_required, is_qualified, is_won,
       is_lost, benchmark_rate
FROM stage_info
