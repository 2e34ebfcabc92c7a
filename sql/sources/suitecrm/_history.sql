{#- CTEs (no WITH): the run's deals and their stage history from opportunities_audit, which
    SuiteCRM writes on update only: the first stage is the first change's before value (or
    the current stage) from date_entered. Closed Won / Closed Lost are SuiteCRM's fixed keys. -#}
deal AS (
    SELECT id, sales_stage, date_entered, created_by
    FROM opportunities
{% if since %}
    WHERE date_modified > :since
{% if retry %}
       OR id IN :retry_ids
{% endif %}
{% endif %}
),
stage_audit AS (
    SELECT a.parent_id,
           a.date_created,
           a.created_by,
           a.before_value_string,
           a.after_value_string,
           ROW_NUMBER() OVER (PARTITION BY a.parent_id ORDER BY a.date_created, a.id) AS n
    FROM opportunities_audit a
    WHERE a.field_name = 'sales_stage'
      AND a.parent_id IN (SELECT id FROM deal)
),
raw_change AS (
    SELECT d.id AS opportunity_id,
           d.date_entered AS changed_at,
           COALESCE(a.before_value_string, d.sales_stage) AS to_stage,
           CAST(NULL AS CHAR) AS from_stage,
           d.created_by AS changed_by
    FROM deal d
    LEFT JOIN stage_audit a ON a.parent_id = d.id AND a.n = 1
    UNION ALL
    SELECT parent_id, date_created, after_value_string, before_value_string, created_by
    FROM stage_audit
),
stage_change AS (
    SELECT opportunity_id,
           changed_at,
           CASE to_stage WHEN 'Closed Won' THEN {{ won_stage | literal }}
                         WHEN 'Closed Lost' THEN {{ lost_stage | literal }}
                         ELSE to_stage END AS to_stage,
           CASE from_stage WHEN 'Closed Won' THEN {{ won_stage | literal }}
                           WHEN 'Closed Lost' THEN {{ lost_stage | literal }}
                           ELSE from_stage END AS from_stage,
           changed_by
    FROM raw_change
)
