{#- stage history from the tracking of crm_lead.stage_id: the first stage from the deal's
    creation, each tracked change, and losing (Odoo keeps the stage and archives the deal) -#}
WITH stage_name AS (
    SELECT id,
           CASE WHEN is_won THEN {{ won_stage | literal }} ELSE name ->> 'en_US' END AS name
    FROM crm_stage
),
deal AS (
    {% include "odoo/_deals.sql" %}
),
change AS (
    SELECT m.res_id AS deal_id,
           m.date AS changed_at,
           t.id AS tracking_id,
           t.old_value_integer AS from_id,
           t.new_value_integer AS to_id,
           u.id AS user_id
    FROM mail_tracking_value t
    JOIN mail_message m ON m.id = t.mail_message_id AND m.model = 'crm.lead'
    JOIN ir_model_fields f
      ON f.id = t.{{ tracked_field }} AND f.model = 'crm.lead' AND f.name = 'stage_id'
    LEFT JOIN res_users u ON u.partner_id = m.author_id
    WHERE m.res_id IN (SELECT id FROM deal)
),
first_change AS (
    SELECT DISTINCT ON (deal_id) deal_id, from_id
    FROM change
    ORDER BY deal_id, changed_at, tracking_id
)
SELECT CAST(d.id AS VARCHAR) AS opportunity_id,
       d.created_at AS changed_at,
       s.name AS to_stage,
       CAST(NULL AS VARCHAR) AS from_stage,
       CAST(d.create_uid AS VARCHAR) AS changed_by
FROM deal d
LEFT JOIN first_change f ON f.deal_id = d.id
LEFT JOIN stage_name s ON s.id = COALESCE(f.from_id, d.stage_id)
UNION ALL
SELECT CAST(c.deal_id AS VARCHAR),
       c.changed_at,
       t.name,
       f.name,
       CAST(c.user_id AS VARCHAR)
FROM change c
LEFT JOIN stage_name t ON t.id = c.to_id
LEFT JOIN stage_name f ON f.id = c.from_id
UNION ALL
SELECT CAST(d.id AS VARCHAR),
       d.date_closed,
       {{ lost_stage | literal }},
       s.name,
       CAST(d.user_id AS VARCHAR)
FROM deal d
LEFT JOIN stage_name s ON s.id = d.stage_id
WHERE d.is_lost
