-- What this Salesforce replica looks like (Fivetran; fivetran/dbt_salesforce_source:
-- models/salesforce/src_salesforce.yml, macros/get_*_columns.sql, the staging models'
-- `where coalesce(_fivetran_active, true)`, CHANGELOG on history mode):
-- has_deal_currency: multi-currency orgs give each deal a currency_iso_code; others use the
--   reporting currency;
-- active_tables: tables synced in history mode (a version per change; the live one is
--   `_fivetran_active`); deleted_tables: tables whose deleted rows stay, `_fivetran_deleted`;
-- has_opportunity_stage: OpportunityStage (IsClosed, IsWon per stage) is synced;
-- has_period: ForecastingQuota names its Period (a month or a quarter) and Period is synced.
WITH col AS (
    SELECT table_name, column_name
    FROM information_schema.columns
    WHERE table_schema = current_schema()
)
SELECT EXISTS (SELECT 1 FROM col WHERE table_name = 'opportunity'
                                   AND column_name = 'currency_iso_code') AS has_deal_currency,
       COALESCE((SELECT STRING_AGG(table_name, ',') FROM col
                 WHERE column_name = '_fivetran_active'), '') AS active_tables,
       COALESCE((SELECT STRING_AGG(table_name, ',') FROM col
                 WHERE column_name = '_fivetran_deleted'), '') AS deleted_tables,
       EXISTS (SELECT 1 FROM col WHERE table_name = 'opportunity_stage'
                                   AND column_name = 'is_won') AS has_opportunity_stage,
       EXISTS (SELECT 1 FROM col WHERE table_name = 'forecasting_quota'
                                   AND column_name = 'period_id')
       AND EXISTS (SELECT 1 FROM col WHERE table_name = 'period'
                                      AND column_name = 'end_date') AS has_period
