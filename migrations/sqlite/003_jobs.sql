-- 003: the durable job queue and reconciliation reports (SQLite dialect).
-- See docs/internals/queue.md. Times are ms since the epoch (INTEGER).
--
-- A job is enqueued in the same transaction as the state change that causes
-- it. Life cycle: available -> running (claimed under a lease) -> completed,
-- or back to available with attempts + 1 and a later run_at (failure, with
-- backoff), or dead after max_attempts (the dead-letter queue). A running
-- job always has a lease owner and expiry; nothing else has one.

CREATE TABLE jobs (
	id               INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: keyset pages and DLQ ids stay stable
	queue            TEXT NOT NULL,
	kind             TEXT NOT NULL,
	payload          TEXT NOT NULL DEFAULT '{}',          -- JSON text
	state            TEXT NOT NULL DEFAULT 'available'
	                 CHECK (state IN ('available', 'running', 'completed', 'dead')),
	attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
	max_attempts     INTEGER NOT NULL DEFAULT 8 CHECK (max_attempts >= 1),
	run_at           INTEGER NOT NULL,
	lease_owner      TEXT,
	lease_expires_at INTEGER,
	last_error       TEXT,
	unique_key       TEXT UNIQUE,                         -- NULL: no de-duplication
	traceparent      TEXT,                                -- W3C trace context of the cause (issue 12)
	created_at       INTEGER NOT NULL,
	updated_at       INTEGER NOT NULL,
	finished_at      INTEGER,                             -- completed or dead
	CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);
-- Claiming: available jobs of a queue in run_at order; also the counts by
-- (state, queue) and the DLQ listing.
CREATE INDEX jobs_claim ON jobs (state, queue, run_at);
-- The lease sweeper: running jobs by lease expiry.
CREATE INDEX jobs_lease ON jobs (state, lease_expires_at);
-- Retention of finished jobs.
CREATE INDEX jobs_finished ON jobs (state, finished_at);
-- The DLQ pages: keyset on id within a state.
CREATE INDEX jobs_state_id ON jobs (state, id);

-- The last reconciliation reports, newest first by id; the ticker keeps a
-- few and GET /api/admin/reconciliation returns the newest.
CREATE TABLE reconciliation_reports (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	ran_at     INTEGER NOT NULL,
	ok         INTEGER NOT NULL CHECK (ok IN (0, 1)),
	report     TEXT NOT NULL                               -- JSON object
);
