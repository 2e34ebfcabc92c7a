{#- A CTE (no WITH) for an adapter's opportunities, after its `stage_change` CTE: each deal's
    last stage change, which for a closed deal is when it closed (CRMs keep only a day, or
    the planned one) -#}
closing AS (
    SELECT opportunity_id, MAX(changed_at) AS closed_at
    FROM stage_change
    GROUP BY opportunity_id
)
