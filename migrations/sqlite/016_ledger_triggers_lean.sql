-- 016: the PostgreSQL twin makes its ledger triggers cheaper (SQL
-- functions inlined into the PL/pgSQL, one pass over a posting's entries,
-- WHEN clauses on the holds triggers). SQLite's were reshaped in 012 and 015;
-- nothing more to change here; this file keeps the two migration lists in step.
SELECT 1;
