-- The warehouse contract (../shared/DESIGN.md). Portable between DuckDB and PostgreSQL.
-- All timestamps are UTC; dates are days in the configured reporting time zone.

CREATE TABLE IF NOT EXISTS dim_territory (
    territory_id VARCHAR PRIMARY KEY, name VARCHAR, parent_id VARCHAR, updated_at TIMESTAMP);

CREATE TABLE IF NOT EXISTS dim_team (
    team_id VARCHAR PRIMARY KEY, name VARCHAR, manager_id VARCHAR, updated_at TIMESTAMP);

CREATE TABLE IF NOT EXISTS dim_user (
    user_id VARCHAR PRIMARY KEY, name VARCHAR, email VARCHAR, manager_id VARCHAR,
    team_id VARCHAR, territory_id VARCHAR, is_active BOOLEAN, hired_at TIMESTAMP,
    left_at TIMESTAMP, updated_at TIMESTAMP);

CREATE TABLE IF NOT EXISTS dim_account (
    account_id VARCHAR PRIMARY KEY, name VARCHAR, industry VARCHAR, territory_id VARCHAR,
    owner_id VARCHAR, phone VARCHAR, email VARCHAR, website VARCHAR, tax_id VARCHAR,
    created_at TIMESTAMP, updated_at TIMESTAMP);

CREATE TABLE IF NOT EXISTS dim_stage (
    pipeline VARCHAR, stage VARCHAR, stage_order INTEGER, probability DOUBLE PRECISION,
    stall_days DOUBLE PRECISION, is_required BOOLEAN, is_qualified BOOLEAN, is_won BOOLEAN,
    is_lost BOOLEAN, PRIMARY KEY (pipeline, stage));

-- one row per (not deleted) opportunity: its current state plus derived columns
CREATE TABLE IF NOT EXISTS fct_opportunity (
    opportunity_id VARCHAR PRIMARY KEY, name VARCHAR, account_id VARCHAR, owner_id VARCHAR,
    team_id VARCHAR, territory_id VARCHAR, pipeline VARCHAR, stage VARCHAR, stage_order INTEGER,
    status VARCHAR, amount DOUBLE PRECISION, currency VARCHAR, probability DOUBLE PRECISION,
    weighted_amount DOUBLE PRECISION, expected_close_date DATE, created_at TIMESTAMP,
    closed_at TIMESTAMP, stage_entered_at TIMESTAMP, days_in_stage INTEGER,
    last_activity_at TIMESTAMP, days_since_activity INTEGER, close_date_push_count INTEGER,
    skipped_stages VARCHAR, stall_reasons VARCHAR, is_stalled BOOLEAN, lead_source VARCHAR,
    competitor VARCHAR, lost_reason VARCHAR, as_of_date DATE);

-- one row per stay in an open stage; exit_kind advanced / regressed / won / lost / open
CREATE TABLE IF NOT EXISTS fct_stage_interval (
    opportunity_id VARCHAR, pipeline VARCHAR, stage VARCHAR, stage_order INTEGER,
    entered_at TIMESTAMP,
    exited_at TIMESTAMP, duration_days DOUBLE PRECISION, next_stage VARCHAR, exit_kind VARCHAR,
    visit_number INTEGER, PRIMARY KEY (opportunity_id, entered_at, stage));

-- as_of_date x opportunity: deals open at the end of that day, and deals closed on it
CREATE TABLE IF NOT EXISTS fct_pipeline_snapshot (
    as_of_date DATE, opportunity_id VARCHAR, owner_id VARCHAR, pipeline VARCHAR, stage VARCHAR,
    status VARCHAR, amount DOUBLE PRECISION, expected_close_date DATE,
    probability DOUBLE PRECISION, weighted_amount DOUBLE PRECISION,
    PRIMARY KEY (as_of_date, opportunity_id));

CREATE TABLE IF NOT EXISTS etl_run (
    run_id VARCHAR PRIMARY KEY, flow VARCHAR, parameters VARCHAR, status VARCHAR,
    as_of_date DATE, started_at TIMESTAMP, finished_at TIMESTAMP, rows_extracted BIGINT,
    rows_quarantined BIGINT, rows_loaded BIGINT, error VARCHAR);

CREATE TABLE IF NOT EXISTS etl_watermark (
    source VARCHAR, table_name VARCHAR, watermark TIMESTAMP, updated_at TIMESTAMP,
    PRIMARY KEY (source, table_name));
