{#- CTEs (no WITH): SuiteCRM's security groups are the teams; the manager is the member the
    other members report to -#}
membership AS (
    SELECT su.securitygroup_id AS team_id, u.id AS user_id, u.reports_to_id
    FROM securitygroups_users su
    JOIN users u ON u.id = su.user_id
    WHERE su.deleted = 0
),
team_manager AS (
    SELECT m.team_id, MIN(m.user_id) AS manager_id
    FROM membership m
    WHERE EXISTS (SELECT 1 FROM membership r
                  WHERE r.team_id = m.team_id AND r.reports_to_id = m.user_id)
    GROUP BY m.team_id
)
