-- canonical stage_history from SuiteCRM's opportunities_audit (field sales_stage)
WITH {% include "suitecrm/_history.sql" %}
SELECT opportunity_id, changed_at, to_stage, from_stage, changed_by
FROM stage_change
