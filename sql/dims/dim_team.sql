-- dim_team: the teams as the source has them now (the canonical state's stg_teams).
SELECT team_id, name, manager_id, updated_at
FROM stg_teams
