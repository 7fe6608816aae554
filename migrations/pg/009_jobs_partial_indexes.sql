-- 009: the jobs indexes become partial, one per state (PostgreSQL dialect).
-- See docs/internals/queue.md ("Storage").
--
-- The four indexes of 003 all led with `state`, so every state change (a
-- claim, a completion) deleted and re-inserted an entry in each of them:
-- eight index writes per transition, most of an embedded drain's time.
-- Each index below holds the rows of one state only, keyed for the one
-- query that reads that state, so a transition removes one entry and adds
-- one. Queries name the state as a literal (state = 'available'), which is
-- what lets SQLite and PostgreSQL prove a partial index usable.
DROP INDEX jobs_claim;
DROP INDEX jobs_lease;
DROP INDEX jobs_finished;
DROP INDEX jobs_state_id;
-- Claiming and the fetcher's peek: available jobs of a queue in run_at order.
CREATE INDEX jobs_ready ON jobs (queue, run_at, id) WHERE state = 'available';
-- The lease sweeper, oldest lease first (queue: counts without the table).
CREATE INDEX jobs_running ON jobs (lease_expires_at, queue) WHERE state = 'running';
-- Retention of completed jobs, oldest first (queue: counts without the table).
CREATE INDEX jobs_done ON jobs (finished_at, queue) WHERE state = 'completed';
-- The DLQ pages: keyset on id.
CREATE INDEX jobs_dead ON jobs (id) WHERE state = 'dead';
