-- 025: the SQLite twin makes ledger_entries_tx cover the columns its
-- triggers read of a transaction's entries (account, direction, amount),
-- so they never read the entry's row. PostgreSQL's checks are different
-- code (its own triggers and plans, measured separately): nothing to change
-- here. This file keeps the two migration lists in step.
SELECT 1;
