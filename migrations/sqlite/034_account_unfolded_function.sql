-- 034: the PostgreSQL twin adds account_unfolded(), the hot account's
-- unfolded deltas, so that an account lookup there no longer builds the sum
-- as a subquery at every execution. SQLite has no deltas (postings move
-- every account in place) and keeps account.c's subquery. This file keeps
-- the two migration lists in step.
SELECT 1;
