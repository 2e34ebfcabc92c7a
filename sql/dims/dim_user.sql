-- dim_user: the users as the source has them now (the canonical state's stg_users).
SELECT user_id, name, email, manager_id, team_id, territory_id, is_active, hired_at, left_at,
       updated_at
FROM stg_users
