-- 010: the jobs table's state CHECK without IN (PostgreSQL dialect).
--
-- The SQLite twin rebuilds its jobs table because SQLite evaluates a
-- CHECK (x IN (...)) of three or more constants through a temporary b-tree
-- for every row written. PostgreSQL tests such a list in place, so here
-- there is nothing to change; this file keeps the two migration lists in
-- step.
SELECT 1;
