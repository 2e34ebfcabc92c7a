-- What this HubSpot connector's tables look like (fivetran/dbt_hubspot_source:
-- models/src_hubspot.yml, CHANGELOG.md PR #146, macros/get_engagement_*_columns.sql):
-- stage_closed: the stage is closed, won or lost: `is_closed`, or its legacy name `closed_won`
--   (same meaning, despite the name), coalesced where a connector has both;
-- v3_engagements: the typed engagement tables of connectors on HubSpot's v3 API, which carry
--   the owner and the time (`engagement` itself no longer does); empty on v1 connectors.
WITH col AS (
    SELECT table_name, column_name
    FROM information_schema.columns
    WHERE table_schema = current_schema()
)
SELECT CASE
           WHEN EXISTS (SELECT 1 FROM col WHERE table_name = 'deal_pipeline_stage'
                                            AND column_name = 'is_closed')
            AND EXISTS (SELECT 1 FROM col WHERE table_name = 'deal_pipeline_stage'
                                            AND column_name = 'closed_won')
               THEN 'COALESCE(is_closed, closed_won)'
           WHEN EXISTS (SELECT 1 FROM col WHERE table_name = 'deal_pipeline_stage'
                                            AND column_name = 'is_closed')
               THEN 'is_closed'
           ELSE 'closed_won'
       END AS stage_closed,
       COALESCE((SELECT STRING_AGG(SUBSTRING(table_name FROM 12), ',' ORDER BY table_name)
                 FROM col
                 WHERE table_name IN ('engagement_call', 'engagement_email',
                                      'engagement_meeting', 'engagement_note')
                   AND column_name = 'property_hs_timestamp'), '') AS v3_engagements
