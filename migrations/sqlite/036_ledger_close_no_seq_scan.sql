-- 036: the PostgreSQL twin plans the closing trigger's statements without
-- sequential scans (a generic plan made while accounts was young scanned
-- all of accounts for every posting). SQLite moves each account by key in
-- its triggers already. This file keeps the two migration lists in step.
SELECT 1;
