{#- CTEs (no WITH): OpportunityHistory rows of the run's deals as snapshots, each with the
    previous snapshot's stage, amount and close date. A stage is won or lost as the deals
    closed in it are (is_won / is_closed): Salesforce keeps that on the stage, not the row. -#}
closed_stage AS (
    SELECT stage_name, bool_or(is_won) AS is_won
    FROM opportunity
    WHERE is_closed AND is_deleted IS NOT TRUE
    GROUP BY stage_name
),
deal AS (
    SELECT id
    FROM opportunity
    WHERE is_deleted IS NOT TRUE
{% if since %}
      AND (system_modstamp > :since
{% if retry %}
           OR id IN :retry_ids
{% endif %}
      )
{% endif %}
),
labelled AS (
    SELECT h.id,
           h.opportunity_id,
           h.created_date,
           h.created_by_id,
           h.amount,
           h.close_date,
           CASE WHEN c.is_won THEN {{ won_stage | literal }}
                WHEN c.stage_name IS NOT NULL THEN {{ lost_stage | literal }}
                ELSE h.stage_name END AS stage
    FROM opportunity_history h
    LEFT JOIN closed_stage c ON c.stage_name = h.stage_name
    WHERE h.is_deleted IS NOT TRUE
      AND h.opportunity_id IN (SELECT id FROM deal)
),
snapshot AS (
    SELECT *,
           ROW_NUMBER() OVER w AS n,
           LAG(stage) OVER w AS previous_stage,
           LAG(amount) OVER w AS previous_amount,
           LAG(close_date) OVER w AS previous_close_date
    FROM labelled
    WINDOW w AS (PARTITION BY opportunity_id ORDER BY created_date, id)
),
stage_change AS (
    SELECT opportunity_id,
           created_date AS changed_at,
           stage AS to_stage,
           previous_stage AS from_stage,
           created_by_id AS changed_by
    FROM snapshot
    WHERE n = 1 OR stage IS DISTINCT FROM previous_stage
)
