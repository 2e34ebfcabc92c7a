-- every opportunity the source still has, to notice hard deletes
SELECT opportunity_id FROM crm_opportunities
