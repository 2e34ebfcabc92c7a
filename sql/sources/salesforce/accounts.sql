-- canonical accounts from Salesforce's Account: the territory is the owner's
WITH {% include "salesforce/_roles.sql" %}
SELECT a.id AS account_id,
       a.name,
       a.industry,
       t.parent_role_id AS territory_id,
       a.owner_id,
       a.phone,
       CAST(NULL AS VARCHAR) AS email,
       a.website,
       CAST(NULL AS VARCHAR) AS tax_id,
       a.created_date AS created_at,
       a.system_modstamp AS updated_at
FROM account a
LEFT JOIN "user" u ON u.id = a.owner_id
LEFT JOIN team_role t ON t.id = u.user_role_id
WHERE a.is_deleted IS NOT TRUE
{% if since %}
  AND (a.system_modstamp > :since
{% if retry %}
       OR a.id IN :retry_ids
{% endif %}
  )
{% endif %}
