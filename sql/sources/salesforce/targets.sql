-- canonical targets from Salesforce's ForecastingQuota: monthly amount quotas per user
SELECT 'user' AS scope_kind,
       quota_owner_id AS scope_id,
       start_date AS period_start,
       CAST(start_date + INTERVAL '1 month' - INTERVAL '1 day' AS DATE) AS period_end,
       quota_amount AS amount
FROM forecasting_quota
WHERE is_quantity IS NOT TRUE
