-- every opportunity SuiteCRM still has (soft-deleted ones too: they say so themselves)
SELECT id AS opportunity_id FROM opportunities
