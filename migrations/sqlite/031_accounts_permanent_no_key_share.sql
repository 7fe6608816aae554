-- 031: the PostgreSQL twin checks the references to accounts of entries,
-- holds and deltas without the foreign keys' KEY SHARE lock on the account
-- row, and makes accounts permanent. SQLite takes no row locks (one
-- writer): its foreign keys stay. This file keeps the two migration lists
-- in step.
SELECT 1;
