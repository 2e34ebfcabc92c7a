-- multi-currency orgs give each deal a currency_iso_code; others use the reporting currency
SELECT COUNT(*) > 0 AS has_deal_currency
FROM information_schema.columns
WHERE table_schema = current_schema()
  AND table_name = 'opportunity' AND column_name = 'currency_iso_code'
