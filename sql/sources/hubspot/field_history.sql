-- canonical field_history from HubSpot's deal_property_history (amount, closedate: each
-- value the property took, compared with the one before) and the status changes the stage
-- changes imply
WITH {% include "hubspot/_stays.sql" %},
{% include "_status_changes.sql" %},
property_value AS (
    SELECT deal_id,
           CASE name WHEN 'amount' THEN 'amount' ELSE 'expected_close_date' END AS field,
           timestamp AS changed_at,
           CASE WHEN name = 'amount'
                THEN CAST(CAST(NULLIF(value, '') AS NUMERIC(18, 2)) AS VARCHAR)
                -- HubSpot's API gives a date property's value as epoch milliseconds, some
                -- syncs as ISO text: either is the portal's midnight of the day
                WHEN value ~ '^[0-9]+$'
                THEN CAST(CAST(TO_TIMESTAMP(CAST(value AS BIGINT) / 1000.0)
                               AT TIME ZONE {{ reporting_timezone | literal }} AS DATE) AS VARCHAR)
                ELSE CAST(CAST(CAST(NULLIF(value, '') AS TIMESTAMPTZ)
                               AT TIME ZONE {{ reporting_timezone | literal }} AS DATE) AS VARCHAR)
           END AS value
    FROM deal_property_history
    WHERE name IN ('amount', 'closedate')
      AND deal_id IN (SELECT deal_id FROM deal_read)
),
property_change AS (
    SELECT deal_id,
           field,
           changed_at,
           LAG(value) OVER (PARTITION BY deal_id, field ORDER BY changed_at) AS old_value,
           value AS new_value,
           ROW_NUMBER() OVER (PARTITION BY deal_id, field ORDER BY changed_at) AS n
    FROM property_value
)
SELECT opportunity_id, field, changed_at, old_value, new_value
FROM status_change
UNION ALL
SELECT CAST(deal_id AS VARCHAR), field, changed_at, old_value, new_value
FROM property_change
WHERE n > 1 AND old_value IS DISTINCT FROM new_value
