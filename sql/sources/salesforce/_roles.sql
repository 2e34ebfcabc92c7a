{#- CTEs (no WITH): a team is a role with a forecast manager; a territory is the role above
    a team -#}
team_role AS (
    SELECT * FROM user_role WHERE forecast_user_id IS NOT NULL
),
territory_role AS (
    SELECT * FROM user_role WHERE id IN (SELECT parent_role_id FROM team_role)
)
