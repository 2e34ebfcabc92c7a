-- dim_territory: the territories as the source has them now (the canonical state's stg_territories).
SELECT territory_id, name, parent_id, updated_at
FROM stg_territories
