-- mart_funnel: the open deals at the as-of day's end by stage and scope: how many, their
-- amount and their weighted amount (amount × the stage's probability, in the snapshot).
-- Every open stage of a scope's pipeline has a row, zero when it is empty, so that charts
-- keep their shape. A deal belongs to its owner's team and territory as dim_user has them now.
{% import "marts/_scopes.sql" as scopes %}
{% from "dims/_stages.sql" import stage_rows %}
WITH {{ stage_rows("stage_info", stages) }},
open_deals AS (
    SELECT s.pipeline, s.stage, s.amount, s.weighted_amount, s.owner_id, u.team_id,
           u.territory_id
    FROM fct_pipeline_snapshot AS s
    LEFT JOIN stg_users AS u ON u.user_id = s.owner_id
    WHERE s.as_of_date = :as_of_date AND s.status = 'open'
),
counted AS (
{{ scopes.per_scope("open_deals", ["pipeline", "stage"],
    "COUNT(*) AS open_count, SUM(amount) AS open_amount, SUM(weighted_amount) AS weighted_amount") }}
),
grid AS (
    SELECT DISTINCT c.scope_kind, c.scope_id, c.pipeline, o.stage, o.stage_order
    FROM counted AS c
    JOIN stage_info AS o ON o.pipeline = c.pipeline AND NOT o.is_won AND NOT o.is_lost
)
SELECT CAST(:as_of_date AS DATE) AS as_of_date, g.scope_kind, g.scope_id, g.pipeline, g.stage,
       g.stage_order, COALESCE(c.open_count, 0) AS open_count,
       COALESCE(c.open_amount, 0) AS open_amount,
       COALESCE(c.weighted_amount, 0) AS weighted_amount
FROM grid AS g
LEFT JOIN counted AS c
    ON c.scope_kind = g.scope_kind AND c.scope_id = g.scope_id AND c.pipeline = g.pipeline
    AND c.stage = g.stage
