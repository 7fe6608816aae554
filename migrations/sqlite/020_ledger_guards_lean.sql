-- 020: the PostgreSQL twin replaces the per-entry commit-time re-check of
-- ledger_entries by a lock in the open-transaction trigger, and the
-- accounts CHECKs on columns a move never writes (kind, may_go_negative,
-- the wallet pair) by a trigger that tests them only when they are written:
-- PostgreSQL rebuilds every CHECK at each statement. SQLite has a single
-- writer (no entry can race a close) and compiles its CHECKs once per
-- prepared statement: nothing to change here. This file keeps the two
-- migration lists in step.
SELECT 1;
