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
    is_lost BOOLEAN, benchmark_rate DOUBLE PRECISION, PRIMARY KEY (pipeline, stage));

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

-- marts: one slice per as_of_date; scope_kind company / team / territory / user

CREATE TABLE IF NOT EXISTS mart_funnel (
    as_of_date DATE, scope_kind VARCHAR, scope_id VARCHAR, pipeline VARCHAR, stage VARCHAR,
    stage_order INTEGER, open_count BIGINT, open_amount DOUBLE PRECISION,
    weighted_amount DOUBLE PRECISION);

CREATE TABLE IF NOT EXISTS mart_stage_conversion (
    as_of_date DATE, period_kind VARCHAR, period_start DATE, scope_kind VARCHAR,
    scope_id VARCHAR, dimension VARCHAR, dimension_value VARCHAR, funnel VARCHAR,
    pipeline VARCHAR, stage VARCHAR, stage_order INTEGER, entered BIGINT, advanced BIGINT,
    won BIGINT, lost BIGINT, still_open BIGINT, conversion_rate DOUBLE PRECISION,
    amount_entered DOUBLE PRECISION, amount_advanced DOUBLE PRECISION,
    amount_lost DOUBLE PRECISION, amount_conversion_rate DOUBLE PRECISION,
    median_days DOUBLE PRECISION, p75_days DOUBLE PRECISION, p90_days DOUBLE PRECISION,
    benchmark_rate DOUBLE PRECISION, p_value DOUBLE PRECISION, is_bottleneck BOOLEAN,
    change_vs_previous DOUBLE PRECISION, is_anomaly BOOLEAN);

-- the conversion flags managers are alerted to (sql/marts/mart_conversion_alert.sql)
CREATE TABLE IF NOT EXISTS mart_conversion_alert (
    as_of_date DATE, scope_kind VARCHAR, scope_id VARCHAR, pipeline VARCHAR, stage VARCHAR,
    kind VARCHAR, period_start DATE, entered BIGINT, advanced BIGINT, lost BIGINT,
    conversion_rate DOUBLE PRECISION, previous_rate DOUBLE PRECISION,
    benchmark_rate DOUBLE PRECISION, p_value DOUBLE PRECISION, raised BOOLEAN);

CREATE TABLE IF NOT EXISTS mart_sales_metrics (
    as_of_date DATE, period_kind VARCHAR, period_start DATE, scope_kind VARCHAR,
    scope_id VARCHAR, metric VARCHAR, value DOUBLE PRECISION, numerator DOUBLE PRECISION,
    denominator DOUBLE PRECISION);

CREATE TABLE IF NOT EXISTS mart_win_loss (
    as_of_date DATE, period_kind VARCHAR, period_start DATE, scope_kind VARCHAR,
    scope_id VARCHAR, dimension VARCHAR, dimension_value VARCHAR, won BIGINT, lost BIGINT,
    win_rate DOUBLE PRECISION, won_amount DOUBLE PRECISION, lost_amount DOUBLE PRECISION);

CREATE TABLE IF NOT EXISTS mart_hygiene (
    as_of_date DATE, kind VARCHAR, subject_id VARCHAR, group_id VARCHAR, owner_ids VARCHAR,
    detail VARCHAR);

CREATE TABLE IF NOT EXISTS mart_stalled_deals (
    as_of_date DATE, opportunity_id VARCHAR, owner_id VARCHAR, team_id VARCHAR,
    territory_id VARCHAR, stage VARCHAR, days_in_stage INTEGER, stage_limit_days DOUBLE PRECISION,
    days_since_activity INTEGER, expected_close_date DATE, close_date_push_count INTEGER,
    reasons VARCHAR, funnel_position VARCHAR, hint VARCHAR, amount DOUBLE PRECISION,
    probability DOUBLE PRECISION);

CREATE TABLE IF NOT EXISTS mart_territory_load (
    as_of_date DATE, territory_id VARCHAR, owner_id VARCHAR, team_id VARCHAR, open_count BIGINT,
    open_amount DOUBLE PRECISION, weighted_amount DOUBLE PRECISION, account_count BIGINT,
    activity_count_30d BIGINT, target DOUBLE PRECISION, load_index DOUBLE PRECISION,
    status VARCHAR, suggested_quota DOUBLE PRECISION);

CREATE TABLE IF NOT EXISTS mart_territory_balance (
    as_of_date DATE, territory_id VARCHAR, cv DOUBLE PRECISION, gini DOUBLE PRECISION,
    max_min_ratio DOUBLE PRECISION, cv_after_rebalancing DOUBLE PRECISION, rep_count BIGINT);

CREATE TABLE IF NOT EXISTS mart_rebalancing (
    as_of_date DATE, territory_id VARCHAR, account_id VARCHAR, from_owner_id VARCHAR,
    to_owner_id VARCHAR, weighted_amount_moved DOUBLE PRECISION);

CREATE TABLE IF NOT EXISTS mart_handover (
    as_of_date DATE, departing_owner_id VARCHAR, opportunity_id VARCHAR, stage VARCHAR,
    probability DOUBLE PRECISION, amount DOUBLE PRECISION, action VARCHAR, priority INTEGER,
    suggested_owner_id VARCHAR);

-- the accounts a public-pool (公海) rule would return: owner idle for the configured days
CREATE TABLE IF NOT EXISTS mart_public_pool (
    as_of_date DATE, account_id VARCHAR, account_name VARCHAR, owner_id VARCHAR, team_id VARCHAR,
    territory_id VARCHAR, last_activity_at TIMESTAMP, days_idle INTEGER, open_deal_count BIGINT,
    open_amount DOUBLE PRECISION, open_weighted_amount DOUBLE PRECISION);

-- each active rep's open deals to act on today, by what is at stake (priority 1 first)
CREATE TABLE IF NOT EXISTS mart_follow_up (
    as_of_date DATE, owner_id VARCHAR, team_id VARCHAR, priority INTEGER,
    opportunity_id VARCHAR, name VARCHAR, account_id VARCHAR, stage VARCHAR,
    amount DOUBLE PRECISION, weighted_amount DOUBLE PRECISION, expected_close_date DATE,
    days_since_activity INTEGER, reasons VARCHAR, focus VARCHAR, question VARCHAR);

-- forecasts kept every night; p10/p50/p90/p_hit_target for monte_carlo only
CREATE TABLE IF NOT EXISTS mart_forecast (
    as_of_date DATE, period_kind VARCHAR, period_start DATE, period_end DATE,
    scope_kind VARCHAR, scope_id VARCHAR, method VARCHAR, expected DOUBLE PRECISION,
    p10 DOUBLE PRECISION, p50 DOUBLE PRECISION, p90 DOUBLE PRECISION, target DOUBLE PRECISION,
    won_to_date DOUBLE PRECISION, open_pipeline DOUBLE PRECISION, coverage DOUBLE PRECISION,
    gap DOUBLE PRECISION, p_hit_target DOUBLE PRECISION);

-- every kept forecast of a closed period against what was booked (rebuilt each night)
-- the forecasts each method would have made on the first days of the months that closed before
-- the forecast was live, replayed from history when the month closes and kept: mart_forecast's
-- columns, as_of_date the day it was made as of
CREATE TABLE IF NOT EXISTS mart_forecast_backtest (
    as_of_date DATE, period_kind VARCHAR, period_start DATE, period_end DATE,
    scope_kind VARCHAR, scope_id VARCHAR, method VARCHAR, expected DOUBLE PRECISION,
    p10 DOUBLE PRECISION, p50 DOUBLE PRECISION, p90 DOUBLE PRECISION, target DOUBLE PRECISION,
    won_to_date DOUBLE PRECISION, open_pipeline DOUBLE PRECISION, coverage DOUBLE PRECISION,
    gap DOUBLE PRECISION, p_hit_target DOUBLE PRECISION);

CREATE TABLE IF NOT EXISTS mart_forecast_accuracy (
    forecast_as_of DATE, period_kind VARCHAR, period_start DATE, scope_kind VARCHAR,
    scope_id VARCHAR, method VARCHAR, forecast DOUBLE PRECISION, actual DOUBLE PRECISION,
    accuracy DOUBLE PRECISION, bias DOUBLE PRECISION, lead_days INTEGER,
    p10 DOUBLE PRECISION, p90 DOUBLE PRECISION);

CREATE TABLE IF NOT EXISTS mart_pipeline_movement (
    as_of_date DATE, week_start DATE, week_end DATE, scope_kind VARCHAR, scope_id VARCHAR,
    bucket VARCHAR, deal_count BIGINT, amount DOUBLE PRECISION);

-- one row per recipient and week: a re-run never mails twice
CREATE TABLE IF NOT EXISTS digest_outbox (
    week_start DATE, recipient VARCHAR, language VARCHAR, status VARCHAR, attempts INTEGER,
    last_error VARCHAR, sent_at TIMESTAMP, message_id VARCHAR, PRIMARY KEY (week_start, recipient));

-- the conversion alerts: one mail per manager (or the webhook) and day the alerts were raised
CREATE TABLE IF NOT EXISTS alert_outbox (
    as_of_date DATE, recipient VARCHAR, language VARCHAR, status VARCHAR, attempts INTEGER,
    last_error VARCHAR, sent_at TIMESTAMP, message_id VARCHAR, PRIMARY KEY (as_of_date, recipient));

-- the morning follow-up mails: one per rep and day the lists were built for
CREATE TABLE IF NOT EXISTS follow_up_outbox (
    as_of_date DATE, recipient VARCHAR, language VARCHAR, status VARCHAR, attempts INTEGER,
    last_error VARCHAR, sent_at TIMESTAMP, message_id VARCHAR, PRIMARY KEY (as_of_date, recipient));

-- what each table of a nightly run cost to make (seconds from the table before it was handed
-- on to this one's hand-off) and how many rows it had
CREATE TABLE IF NOT EXISTS etl_table_build (
    run_id VARCHAR, as_of_date DATE, table_name VARCHAR, rows_built BIGINT, seconds DOUBLE PRECISION,
    PRIMARY KEY (run_id, table_name));

-- data quality: one row per expectation per run, and the rows held back (one per table and
-- key; released_at is set when a later run loads the row)
CREATE TABLE IF NOT EXISTS dq_result (
    run_id VARCHAR, table_name VARCHAR, expectation VARCHAR, severity VARCHAR, success BOOLEAN,
    unexpected_count BIGINT, observed VARCHAR, checked_at TIMESTAMP);

CREATE TABLE IF NOT EXISTS dq_quarantine (
    run_id VARCHAR, table_name VARCHAR, record_key VARCHAR, retry_key VARCHAR, reasons VARCHAR,
    record VARCHAR, quarantined_at TIMESTAMP, released_at TIMESTAMP,
    PRIMARY KEY (table_name, record_key));

-- added after the first release: warehouses made before get the columns on their next run
-- the process (host:pid) of a run, so a later run can tell a killed one (abandoned)
ALTER TABLE etl_run ADD COLUMN IF NOT EXISTS process VARCHAR;
-- what a run really did: incremental or full refresh (the parameters say what was asked)
ALTER TABLE etl_run ADD COLUMN IF NOT EXISTS mode VARCHAR;
-- live: a forecast a run kept (mart_forecast); backtest: one replayed (mart_forecast_backtest)
ALTER TABLE mart_forecast_accuracy ADD COLUMN IF NOT EXISTS origin VARCHAR;
