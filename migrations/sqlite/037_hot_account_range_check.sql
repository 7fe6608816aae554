-- 037: the PostgreSQL twin range-checks a hot account's delta before it is
-- appended. SQLite posts in place under its CHECK already. This file keeps
-- the two migration lists in step.
SELECT 1;
