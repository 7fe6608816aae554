-- 022: the PostgreSQL twin turns the one-column CHECKs of jobs into
-- domains (PostgreSQL rebuilds a table CHECK at every statement, a domain's
-- check stays planned). SQLite has no domains and compiles its CHECKs once
-- per prepared statement (010 already spelt the state list without IN):
-- nothing to change here. This file keeps the two migration lists in step.
SELECT 1;
