{#- A CTE (no WITH) for an adapter's field_history, after its `stage_change` CTE: the status
    changes that stage changes imply (into or out of the won and lost stages) -#}
status_change AS (
    SELECT opportunity_id, 'status' AS field, changed_at, old_value, new_value
    FROM (
        SELECT opportunity_id,
               changed_at,
               CASE from_stage WHEN {{ won_stage | literal }} THEN 'won'
                               WHEN {{ lost_stage | literal }} THEN 'lost'
                               ELSE 'open' END AS old_value,
               CASE to_stage WHEN {{ won_stage | literal }} THEN 'won'
                             WHEN {{ lost_stage | literal }} THEN 'lost'
                             ELSE 'open' END AS new_value
        FROM stage_change
        WHERE from_stage IS NOT NULL
    ) s
    WHERE old_value <> new_value
)
