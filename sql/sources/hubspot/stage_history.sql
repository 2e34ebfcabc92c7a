-- canonical stage_history from HubSpot's deal_stage (one row per stay in a stage). HubSpot
-- does not say who moved the deal: the deal's owner is named.
WITH {% include "hubspot/_stays.sql" %}
SELECT opportunity_id, changed_at, to_stage, from_stage, changed_by
FROM stage_change
