{% from "salesforce/_live.sql" import live with context %}
-- canonical accounts from Salesforce's Account: the territory is the owner's
WITH RECURSIVE {% include "salesforce/_roles.sql" %}
SELECT a.id AS account_id,
       a.name,
       a.industry,
       t.territory_id,
       a.owner_id,
       a.phone,
       CAST(NULL AS VARCHAR) AS email,
       a.website,
       CAST(NULL AS VARCHAR) AS tax_id,
       a.created_date AS created_at,
       a.system_modstamp AS updated_at
FROM account a
LEFT JOIN "user" u ON u.id = a.owner_id {{ live("user", "u") }}
LEFT JOIN role_team t ON t.role_id = u.user_role_id
WHERE a.is_deleted IS NOT TRUE {{ live("account", "a") }}
{% if since %}
  AND (a.system_modstamp > :since
{% if retry %}
       OR a.id IN :retry_ids
{% endif %}
  )
{% endif %}
