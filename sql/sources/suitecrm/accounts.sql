{% from "suitecrm/_text.sql" import decoded %}
-- canonical accounts from SuiteCRM's accounts
WITH {% include "suitecrm/_email.sql" %}
SELECT a.id AS account_id,
       {{ decoded("a.name") }} AS name,
       a.industry,
       CAST(NULL AS CHAR) AS territory_id,
       a.assigned_user_id AS owner_id,
       a.phone_office AS phone,
       e.email,
       a.website,
       CAST(NULL AS CHAR) AS tax_id,
       a.date_entered AS created_at,
       a.date_modified AS updated_at
FROM accounts a
LEFT JOIN primary_email e ON e.bean_id = a.id AND e.bean_module = 'Accounts'
WHERE a.deleted = 0
{% if since %}
  AND (a.date_modified > :since
{% if retry %}
       OR a.id IN :retry_ids
{% endif %}
  )
{% endif %}
