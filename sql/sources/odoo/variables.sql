-- which Odoo this is: mail_tracking_value names the tracked field `field` (14-16) or
-- `field_id` (17+); 16 keeps monetary values apart, 17 in the float columns
SELECT CASE WHEN bool_or(column_name = 'field_id') THEN 'field_id' ELSE 'field' END
           AS tracked_field,
       CASE WHEN bool_or(column_name = 'old_value_monetary') THEN 'monetary' ELSE 'float' END
           AS tracked_money
FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = 'mail_tracking_value'
