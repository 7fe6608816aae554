-- 035: the PostgreSQL twin makes the open-transaction trigger's checks
-- probe each entry's transaction and account by primary key whatever plan
-- a connection cached (a plan made against a young table scanned all of
-- accounts for every posting). SQLite checks each entry in a row trigger
-- by key already. This file keeps the two migration lists in step.
SELECT 1;
