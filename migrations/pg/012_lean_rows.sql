-- 012: cheaper rows (PostgreSQL dialect). The SQLite twin rebuilds
-- webhook_events, ledger_entries, intent_transitions and payout_items to
-- spell their CHECK (x IN (...)) lists with OR (SQLite builds a temporary
-- b-tree for such a list on every row written) and to drop AUTOINCREMENT
-- (a sqlite_sequence write per row). PostgreSQL tests an IN list in place
-- and its identity columns cost no extra row, so there is nothing to
-- change here; this file keeps the two migration lists in step.
SELECT 1;
