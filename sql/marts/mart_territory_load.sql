-- mart_territory_load: per territory and active seller, the open pipeline they carry on the
-- as-of day. A seller is a user in a territory, active, not gone by the day's end, and not a
-- team's manager. load_index = the seller's weighted amount / the territory's median (of every
-- seller, those with nothing open too); over / under beyond territory.tolerance.
-- suggested_quota shares the territory's target (its sellers' targets for the as-of month, not
-- a quarter's that starts with it) in proportion to weighted pipeline; without targets it is
-- the weighted pipeline. Rounded to the hundred, a half to the even hundred.
{% macro to_even_hundred(amount) %}(CASE WHEN ({{ amount }}) / 100 - FLOOR(({{ amount }}) / 100) = 0.5 THEN 2 * ROUND(({{ amount }}) / 200) ELSE ROUND(({{ amount }}) / 100) END) * 100{% endmacro %}
WITH sellers AS (
    SELECT u.user_id AS owner_id, u.team_id, u.territory_id
    FROM stg_users AS u
    WHERE COALESCE(u.is_active, TRUE)
      AND (u.left_at IS NULL OR u.left_at >= :day_end)
      AND u.territory_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM stg_teams AS t WHERE t.manager_id = u.user_id)
),
open_deals AS (
    SELECT owner_id, COUNT(*) AS open_count, COALESCE(SUM(amount), 0) AS open_amount,
           COALESCE(SUM(weighted_amount), 0) AS weighted_amount
    FROM fct_pipeline_snapshot
    WHERE as_of_date = :as_of_date AND status = 'open'
    GROUP BY owner_id
),
accounts AS (
    SELECT owner_id, COUNT(*) AS account_count FROM stg_accounts GROUP BY owner_id
),
recent_activities AS (
    SELECT owner_id, COUNT(*) AS activity_count
    FROM stg_activities
    WHERE occurred_at < :day_end
      AND occurred_at >= CAST(:day_end AS TIMESTAMP) - INTERVAL '{{ territory.activity_days | int }} days'
    GROUP BY owner_id
),
month_targets AS (
    SELECT scope_id AS owner_id, amount AS target
    FROM stg_targets
    WHERE scope_kind = 'user'
      AND period_start = CAST(date_trunc('month', CAST(:as_of_date AS DATE)) AS DATE)
      AND (period_end IS NULL
           OR period_end < CAST(date_trunc('month', CAST(:as_of_date AS DATE)) + INTERVAL '1 month' AS DATE))
),
load AS (
    SELECT s.*, COALESCE(d.open_count, 0) AS open_count,
           COALESCE(d.open_amount, 0) AS open_amount,
           COALESCE(d.weighted_amount, 0) AS weighted_amount,
           COALESCE(a.account_count, 0) AS account_count,
           COALESCE(r.activity_count, 0) AS activity_count_30d,
           t.target
    FROM sellers AS s
    LEFT JOIN open_deals AS d ON d.owner_id = s.owner_id
    LEFT JOIN accounts AS a ON a.owner_id = s.owner_id
    LEFT JOIN recent_activities AS r ON r.owner_id = s.owner_id
    LEFT JOIN month_targets AS t ON t.owner_id = s.owner_id
),
territories AS (
    SELECT territory_id,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY weighted_amount) AS median_weighted,
           SUM(weighted_amount) AS weighted_amount, SUM(target) AS target
    FROM load
    GROUP BY territory_id
),
indexed AS (
    SELECT l.*,
           CASE WHEN t.median_weighted > 0 THEN l.weighted_amount / t.median_weighted END
               AS load_index,
           CASE WHEN t.target > 0 THEN l.weighted_amount / NULLIF(t.weighted_amount, 0) * t.target
                ELSE l.weighted_amount END AS quota
    FROM load AS l
    JOIN territories AS t ON t.territory_id = l.territory_id
)
SELECT CAST(:as_of_date AS DATE) AS as_of_date, territory_id, owner_id, team_id, open_count,
       open_amount, weighted_amount, account_count, activity_count_30d, target, load_index,
       CASE WHEN load_index > {{ 1 + territory.tolerance }} THEN 'over'
            WHEN load_index < {{ 1 - territory.tolerance }} THEN 'under'
            ELSE 'ok' END AS status,
       {{ to_even_hundred("quota") }} AS suggested_quota
FROM indexed
