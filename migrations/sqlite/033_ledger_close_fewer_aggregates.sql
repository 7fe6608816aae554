-- 033: the PostgreSQL twin computes its closing trigger's balance check
-- from each account's net (two aggregates, not four). SQLite's closing
-- check (030) is unchanged. This file keeps the two migration lists in
-- step.
SELECT 1;
