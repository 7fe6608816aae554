-- 003: the durable job queue and reconciliation reports (PostgreSQL dialect).
-- Same shape as migrations/sqlite/003_jobs.sql; see docs/internals/queue.md.
-- Times are ms since the epoch (BIGINT). Claiming uses
-- UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n).

CREATE TABLE jobs (
	id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	queue            TEXT NOT NULL,
	kind             TEXT NOT NULL,
	payload          TEXT NOT NULL DEFAULT '{}',
	state            TEXT NOT NULL DEFAULT 'available'
	                 CHECK (state IN ('available', 'running', 'completed', 'dead')),
	attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
	max_attempts     INTEGER NOT NULL DEFAULT 8 CHECK (max_attempts >= 1),
	run_at           BIGINT NOT NULL,
	lease_owner      TEXT,
	lease_expires_at BIGINT,
	last_error       TEXT,
	unique_key       TEXT UNIQUE,
	traceparent      TEXT,
	created_at       BIGINT NOT NULL,
	updated_at       BIGINT NOT NULL,
	finished_at      BIGINT,
	CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);
CREATE INDEX jobs_claim ON jobs (state, queue, run_at);
CREATE INDEX jobs_lease ON jobs (state, lease_expires_at);
CREATE INDEX jobs_finished ON jobs (state, finished_at);
CREATE INDEX jobs_state_id ON jobs (state, id);

CREATE TABLE reconciliation_reports (
	id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	ran_at     BIGINT NOT NULL,
	ok         SMALLINT NOT NULL CHECK (ok IN (0, 1)),
	report     TEXT NOT NULL
);
