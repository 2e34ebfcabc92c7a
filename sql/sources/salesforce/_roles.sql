{% from "salesforce/_live.sql" import live with context %}
{#- CTEs (no WITH RECURSIVE): a team is a role with a forecast manager; a user's team is the
    nearest such role at or above the user's own (reps usually sit in a role below their
    manager's: director > manager > rep); a territory is the role above a team -#}
live_role AS (
    SELECT * FROM user_role r WHERE TRUE {{ live("user_role", "r") }}
),
team_role AS (
    SELECT * FROM live_role WHERE forecast_user_id IS NOT NULL
),
territory_role AS (
    SELECT * FROM live_role WHERE id IN (SELECT parent_role_id FROM team_role)
),
role_ancestor AS (
    SELECT id AS role_id, id AS ancestor_id, 0 AS depth FROM live_role
    UNION ALL
    SELECT a.role_id, r.parent_role_id, a.depth + 1
    FROM role_ancestor a
    JOIN live_role r ON r.id = a.ancestor_id
    WHERE r.parent_role_id IS NOT NULL AND a.depth < 100
),
role_team AS (
    SELECT DISTINCT ON (a.role_id) a.role_id, t.id AS team_id, t.parent_role_id AS territory_id
    FROM role_ancestor a
    JOIN team_role t ON t.id = a.ancestor_id
    ORDER BY a.role_id, a.depth
)
