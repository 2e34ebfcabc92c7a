-- mart_follow_up: each active rep's deals to act on, as of the day's end: the open deals that
-- are stalled (fct_opportunity.stall_reasons: over the stage's limit, no activity for
-- thresholds.no_activity_days, close date passed, close date pushed repeatedly), that should
-- close within the next seven days (closing_this_week), or that the rep took over in the last
-- seven days (handed_over: the CRM's owner history). Ordered per rep by what is at stake (the
-- weighted amount, then the amount); `focus` is the most pressing reason and `question` what
-- to ask the customer about it. A rep who has left is not listed: mart_handover has their deals.
WITH reps AS (
    SELECT user_id
    FROM stg_users
    WHERE COALESCE(is_active, TRUE) AND (left_at IS NULL OR left_at >= :day_end)
),
handed_over AS (
    SELECT DISTINCT h.opportunity_id, h.new_value AS owner_id
    FROM stg_field_history AS h
    WHERE h.field = 'owner_id'
      AND h.changed_at < :day_end
      AND h.changed_at >= CAST(:day_end AS TIMESTAMP) - INTERVAL '7 days'
),
open_deals AS (
    SELECT d.*,
           d.expected_close_date >= CAST(:as_of_date AS DATE)
               AND d.expected_close_date < CAST(:as_of_date AS DATE) + 7 AS closing_this_week,
           h.opportunity_id IS NOT NULL AS handed_over
    FROM day_opportunity AS d
    JOIN reps AS r ON r.user_id = d.owner_id
    LEFT JOIN handed_over AS h
        ON h.opportunity_id = d.opportunity_id AND h.owner_id = d.owner_id
    WHERE d.status = 'open'
),
to_act AS (
    SELECT o.*,
           CONCAT_WS(',', o.stall_reasons,
                     CASE WHEN o.closing_this_week THEN 'closing_this_week' END,
                     CASE WHEN o.handed_over THEN 'handed_over' END) AS reasons,
           CASE WHEN o.stall_reasons LIKE '%past_close_date%' THEN 'past_close_date'
                WHEN o.closing_this_week THEN 'closing_this_week'
                WHEN o.handed_over THEN 'handed_over'
                WHEN o.stall_reasons LIKE '%no_activity%' THEN 'no_activity'
                WHEN o.stall_reasons LIKE '%over_stage_limit%' THEN 'over_stage_limit'
                ELSE 'pushed_repeatedly' END AS focus
    FROM open_deals AS o
    WHERE o.is_stalled OR o.closing_this_week OR o.handed_over
)
SELECT CAST(:as_of_date AS DATE) AS as_of_date, owner_id, team_id,
       CAST(ROW_NUMBER() OVER (
           PARTITION BY owner_id
           ORDER BY COALESCE(weighted_amount, 0) DESC, COALESCE(amount, 0) DESC, opportunity_id
       ) AS INTEGER) AS priority,
       opportunity_id, name, account_id, stage, amount, weighted_amount, expected_close_date,
       days_since_activity, reasons, focus,
       CASE focus
           WHEN 'past_close_date' THEN 'The close date has passed: ask what the new date is '
               || 'and what changed on their side.'
           WHEN 'closing_this_week' THEN 'It should close this week: ask who signs and whether '
               || 'anything is still missing for the contract.'
           WHEN 'handed_over' THEN 'You took this deal over: introduce yourself and confirm the '
               || 'next step the customer agreed with your colleague.'
           WHEN 'no_activity' THEN 'Nobody has been in touch for weeks: ask whether the need is '
               || 'still there and agree on a next step.'
           WHEN 'over_stage_limit' THEN 'It has sat in this stage longer than deals usually do: '
               || 'ask what stands between them and the next step.'
           ELSE 'The close date keeps moving: ask what the real decision date is and who makes '
               || 'the decision.'
       END AS question
FROM to_act
