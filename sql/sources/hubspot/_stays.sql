{#- CTEs (no WITH): the run's deals and their stage stays (deal_stage, one row per stay from
    date_entered), labelled: a closed stage (`stage_closed`, see variables.sql) is won at
    probability 1 and lost otherwise, as HubSpot's Closed Won / Closed Lost are -#}
deal_read AS (
    SELECT deal_id, owner_id
    FROM deal
    WHERE is_deleted IS NOT TRUE
{% if since %}
      AND (property_hs_lastmodifieddate > :since
{% if retry %}
           OR CAST(deal_id AS VARCHAR) IN :retry_ids
{% endif %}
      )
{% endif %}
),
stage_label AS (
    SELECT stage_id,
           CASE WHEN {{ stage_closed }} AND probability >= 1 THEN {{ won_stage | literal }}
                WHEN {{ stage_closed }} THEN {{ lost_stage | literal }}
                ELSE label END AS name,
           CASE WHEN {{ stage_closed }} AND probability >= 1 THEN 'won'
                WHEN {{ stage_closed }} THEN 'lost'
                ELSE 'open' END AS status
    FROM deal_pipeline_stage
    WHERE _fivetran_deleted IS NOT TRUE
),
stay AS (
    SELECT s.deal_id,
           s.date_entered,
           l.name AS stage,
           LAG(l.name) OVER (PARTITION BY s.deal_id ORDER BY s.date_entered, s._fivetran_start)
               AS previous_stage,
           d.owner_id
    FROM deal_stage s
    JOIN deal_read d ON d.deal_id = s.deal_id
    LEFT JOIN stage_label l ON l.stage_id = s.value
),
stage_change AS (
    SELECT CAST(deal_id AS VARCHAR) AS opportunity_id,
           date_entered AS changed_at,
           stage AS to_stage,
           previous_stage AS from_stage,
           CAST(owner_id AS VARCHAR) AS changed_by
    FROM stay
    WHERE previous_stage IS NULL OR stage <> previous_stage
)
