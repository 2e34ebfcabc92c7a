-- canonical stage_history from OpportunityHistory: the rows where the stage changed
WITH {% include "salesforce/_history.sql" %}
SELECT opportunity_id, changed_at, to_stage, from_stage, changed_by
FROM stage_change
