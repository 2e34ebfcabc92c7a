-- mart_stalled_deals: the deals open and stalled at the as-of day's end, with their reasons
-- (fct_opportunity.stall_reasons), the stage's limit, where they sit in the funnel (by the
-- stage's probability: top below 30 %, bottom from 70 %) and what the manager should ask.
WITH stalled AS (
    SELECT f.*,
           CASE WHEN f.probability < 0.3 THEN 'top'
                WHEN f.probability >= 0.7 THEN 'bottom'
                ELSE 'middle' END AS funnel_position
    FROM day_opportunity AS f
    WHERE f.is_stalled AND f.status = 'open'
)
SELECT CAST(:as_of_date AS DATE) AS as_of_date, s.opportunity_id, s.owner_id, s.team_id,
       s.territory_id, s.stage, s.days_in_stage, l.limit_days AS stage_limit_days,
       s.days_since_activity, s.expected_close_date, s.close_date_push_count,
       s.stall_reasons AS reasons, s.funnel_position,
       CASE s.funnel_position
           WHEN 'top' THEN 'The customer may be undecided, or the rep has not been in touch: '
               || 'ask when they last spoke and what the agreed next step is.'
           WHEN 'middle' THEN 'The customer may be choosing between vendors, or already lost '
               || 'to a competitor: ask who else is in the deal and how we compare.'
           ELSE 'The customer may have internal blockers (budget, approval, disagreement): '
               || 'ask what still stands between them and signing.'
       END AS hint,
       s.amount, s.probability
FROM stalled AS s
LEFT JOIN day_stage_limit AS l ON l.pipeline = s.pipeline AND l.stage = s.stage
