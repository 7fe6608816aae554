-- 028: the PostgreSQL twin turns accounts.held >= 0 into a domain
-- (PostgreSQL rebuilds a table CHECK at every statement). SQLite compiles
-- its CHECKs once per prepared statement: nothing to change here. This file
-- keeps the two migration lists in step.
SELECT 1;
