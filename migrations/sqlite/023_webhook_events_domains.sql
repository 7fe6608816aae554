-- 023: the PostgreSQL twin turns the one-column CHECKs of webhook_events
-- into domains (PostgreSQL rebuilds a table CHECK at every statement, a
-- domain's check stays planned). SQLite has no domains and compiles its
-- CHECKs once per prepared statement (012 already spelt its IN lists with
-- OR): nothing to change here. This file keeps the two migration lists in
-- step.
SELECT 1;
