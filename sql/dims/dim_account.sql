-- dim_account: the accounts as the source has them now (the canonical state's stg_accounts).
SELECT account_id, name, industry, territory_id, owner_id, phone, email, website, tax_id,
       created_at, updated_at
FROM stg_accounts
