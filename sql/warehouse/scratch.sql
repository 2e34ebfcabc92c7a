-- Tables a run writes for its SQL-made tables to read and drops before it commits: what pandas
-- still makes for one as-of day. Not part of the warehouse contract; see loudou/catalog.py.

-- the deals as they were at the as-of day's end, with fct_opportunity's columns as of that day
CREATE TEMPORARY TABLE day_opportunity AS SELECT * FROM fct_opportunity WHERE 1 = 0;

-- the days a deal may stay in each open stage: configured, or learned from finished stays
CREATE TEMPORARY TABLE day_stage_limit (
    pipeline VARCHAR, stage VARCHAR, limit_days DOUBLE PRECISION);

-- the deals that reached a qualified stage by the day's end (any-stage: a later stage counts)
CREATE TEMPORARY TABLE day_qualified_deal (opportunity_id VARCHAR);
