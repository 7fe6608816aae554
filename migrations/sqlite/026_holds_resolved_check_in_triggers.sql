-- 026: the PostgreSQL twin checks holds' status/resolved_at rule in the
-- holds triggers instead of a table CHECK (PostgreSQL rebuilds a CHECK at
-- every statement). SQLite compiles its CHECKs once per prepared statement:
-- nothing to change here. This file keeps the two migration lists in step.
SELECT 1;
