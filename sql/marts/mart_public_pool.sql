-- mart_public_pool (公海): the accounts the CRM's public-pool rule would return to the pool
-- on the as-of day, for others to take: an account with an owner, known for at least
-- `public_pool_days` days, that its owner has not worked (no activity of theirs on the
-- account, or on one of its deals when the activity names no account) for that many days or
-- more, and none of whose open deals entered a stage in that time. loudou only reads the CRM: this is a proposal, the CRM's owner decides.
-- days_idle counts calendar days in the reporting time zone since the owner's last activity
-- on the account (or, never worked, since the account was created).
{% from "marts/_local.sql" import local_day %}
WITH accounts AS (
    SELECT a.account_id, a.name, a.owner_id, a.created_at, u.team_id, u.territory_id
    FROM stg_accounts AS a
    LEFT JOIN stg_users AS u ON u.user_id = a.owner_id
    WHERE a.owner_id IS NOT NULL AND a.created_at < :day_end
),
activity_accounts AS (
    -- an activity's account: the one it names, or else its deal's
    SELECT COALESCE(act.account_id, deal.account_id) AS account_id, act.owner_id,
           act.occurred_at
    FROM stg_activities AS act
    LEFT JOIN day_opportunity AS deal ON deal.opportunity_id = act.opportunity_id
    WHERE act.occurred_at < :day_end
),
worked AS (
    SELECT a.account_id, MAX(x.occurred_at) AS last_activity_at
    FROM accounts AS a
    JOIN activity_accounts AS x ON x.account_id = a.account_id AND x.owner_id = a.owner_id
    GROUP BY a.account_id
),
open_deals AS (
    SELECT account_id, COUNT(*) AS open_deal_count, COALESCE(SUM(amount), 0) AS open_amount,
           COALESCE(SUM(weighted_amount), 0) AS open_weighted_amount,
           MAX(stage_entered_at) AS last_stage_change_at
    FROM day_opportunity
    WHERE status = 'open' AND account_id IS NOT NULL
    GROUP BY account_id
),
idle AS (
    SELECT a.*, w.last_activity_at,
           CAST(:as_of_date AS DATE) - {{ local_day("COALESCE(w.last_activity_at, a.created_at)", timezone) }}
               AS days_idle,
           COALESCE(o.open_deal_count, 0) AS open_deal_count,
           COALESCE(o.open_amount, 0) AS open_amount,
           COALESCE(o.open_weighted_amount, 0) AS open_weighted_amount,
           o.last_stage_change_at
    FROM accounts AS a
    LEFT JOIN worked AS w ON w.account_id = a.account_id
    LEFT JOIN open_deals AS o ON o.account_id = a.account_id
)
SELECT CAST(:as_of_date AS DATE) AS as_of_date, account_id, name AS account_name, owner_id,
       team_id, territory_id, last_activity_at, days_idle, open_deal_count, open_amount,
       open_weighted_amount
FROM idle
WHERE days_idle >= {{ public_pool_days | int }}
  AND (last_stage_change_at IS NULL
       OR {{ local_day("last_stage_change_at", timezone) }} <= CAST(:as_of_date AS DATE) - {{ public_pool_days | int }})
