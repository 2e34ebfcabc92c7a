{% from "salesforce/_live.sql" import live with context %}
{#- CTEs (no WITH): OpportunityHistory rows of the run's deals as snapshots, each with the
    previous snapshot's stage, amount and close date. A stage is won or lost as
    OpportunityStage says (IsClosed, IsWon: Salesforce keeps it on the stage, not the row);
    where OpportunityStage is not synced, as the deals closed in it today are. -#}
closed_stage AS (
{% if has_opportunity_stage == "True" %}
    SELECT api_name AS stage_name, is_won
    FROM opportunity_stage s
    WHERE is_closed {{ live("opportunity_stage", "s") }}
{% else %}
    SELECT stage_name, bool_or(is_won) AS is_won
    FROM opportunity o
    WHERE is_closed AND is_deleted IS NOT TRUE {{ live("opportunity", "o") }}
    GROUP BY stage_name
{% endif %}
),
deal AS (
    SELECT id
    FROM opportunity o
    WHERE is_deleted IS NOT TRUE {{ live("opportunity", "o") }}
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
    WHERE h.is_deleted IS NOT TRUE {{ live("opportunity_history", "h") }}
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
