-- No change. This number was reserved for a change that went another way
-- while 014-016 were written; it stays, as a no-op, so that versions are
-- consecutive (scripts/embed-sql refuses a gap: the runner applies only
-- versions above the database's, so a number filled in later would be
-- skipped by every database already past it).
SELECT 1;
