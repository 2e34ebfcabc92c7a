{#- CTE (no WITH): each record's primary e-mail address (SuiteCRM keeps them apart) -#}
primary_email AS (
    SELECT r.bean_id, r.bean_module, MIN(e.email_address) AS email
    FROM email_addr_bean_rel r
    JOIN email_addresses e ON e.id = r.email_address_id AND e.deleted = 0
    WHERE r.deleted = 0 AND r.primary_address = 1
    GROUP BY r.bean_id, r.bean_module
)
