-- canonical targets from the native schema
SELECT scope_kind,
       scope_id,
       period_start,
       period_end,
       amount
FROM crm_targets
