-- 037: the PostgreSQL twin makes jobs.unique_key's uniqueness a partial
-- unique index, because there every claim and completion (non-HOT
-- updates) wrote a new entry into it, NULL keys included. SQLite updates
-- only the indexes whose columns an UPDATE changes, and no claim or
-- completion changes unique_key: its column UNIQUE costs one entry at
-- insert, not worth rebuilding the jobs table for. queue.c's
-- ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL matches the
-- column's UNIQUE here as it did without the WHERE. This file keeps the
-- two migration lists in step.
SELECT 1;
