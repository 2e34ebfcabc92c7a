{% from "salesforce/_live.sql" import live with context %}
-- canonical targets from Salesforce's ForecastingQuota: amount quotas per user, each over its
-- Period (a month or a quarter, as the org forecasts); a month where Period is not synced
SELECT 'user' AS scope_kind,
       q.quota_owner_id AS scope_id,
       q.start_date AS period_start,
{% if has_period == "True" %}
       COALESCE(p.end_date,
                CAST(q.start_date + INTERVAL '1 month' - INTERVAL '1 day' AS DATE)) AS period_end,
{% else %}
       CAST(q.start_date + INTERVAL '1 month' - INTERVAL '1 day' AS DATE) AS period_end,
{% endif %}
       q.quota_amount AS amount
FROM forecasting_quota q
{% if has_period == "True" %}
LEFT JOIN period p ON p.id = q.period_id {{ live("period", "p") }}
{% endif %}
WHERE q.is_quantity IS NOT TRUE {{ live("forecasting_quota", "q") }}
