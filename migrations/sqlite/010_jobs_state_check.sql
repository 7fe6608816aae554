-- 010: the jobs table's state CHECK without IN (SQLite dialect).
-- See docs/internals/queue.md ("Storage").
--
-- SQLite evaluates a CHECK (x IN (<three or more constants>)) by building a
-- temporary b-tree of the constants for every row written: callgrind put
-- it at two such b-trees per job (claim and completion), about a fifth of
-- a no-op job's instructions, and a plain UPDATE of a million rows runs
-- ~4x slower with it than with the same test written with OR. SQLite
-- cannot alter a CHECK, so the table is rebuilt: same columns, same
-- constraints, the state test spelt with OR. AUTOINCREMENT's high-water
-- mark is carried over (ids are never reused, even of purged jobs), and
-- the partial indexes of 009 are made again. Nothing references jobs.
CREATE TABLE jobs_new (
	id               INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: keyset pages and DLQ ids stay stable
	queue            TEXT NOT NULL,
	kind             TEXT NOT NULL,
	payload          TEXT NOT NULL DEFAULT '{}',          -- JSON text
	state            TEXT NOT NULL DEFAULT 'available'
	                 CHECK (state = 'available' OR state = 'running' OR state = 'completed'
	                        OR state = 'dead'),
	attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
	max_attempts     INTEGER NOT NULL DEFAULT 8 CHECK (max_attempts >= 1),
	run_at           INTEGER NOT NULL,
	lease_owner      TEXT,
	lease_expires_at INTEGER,
	last_error       TEXT,
	unique_key       TEXT UNIQUE,                         -- NULL: no de-duplication
	traceparent      TEXT,                                -- W3C trace context of the cause
	created_at       INTEGER NOT NULL,
	updated_at       INTEGER NOT NULL,
	finished_at      INTEGER,                             -- completed or dead
	CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);
INSERT INTO jobs_new (id, queue, kind, payload, state, attempts, max_attempts, run_at,
                      lease_owner, lease_expires_at, last_error, unique_key, traceparent,
                      created_at, updated_at, finished_at)
	SELECT id, queue, kind, payload, state, attempts, max_attempts, run_at,
	       lease_owner, lease_expires_at, last_error, unique_key, traceparent,
	       created_at, updated_at, finished_at
	FROM jobs;
-- The high-water mark: the old table's, if it is above what the copy set.
DELETE FROM sqlite_sequence WHERE name = 'jobs_new';
INSERT INTO sqlite_sequence (name, seq)
	SELECT 'jobs_new', max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'jobs'), 0),
	                       coalesce((SELECT max(id) FROM jobs_new), 0));
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE INDEX jobs_ready ON jobs (queue, run_at, id) WHERE state = 'available';
CREATE INDEX jobs_running ON jobs (lease_expires_at, queue) WHERE state = 'running';
CREATE INDEX jobs_done ON jobs (finished_at, queue) WHERE state = 'completed';
CREATE INDEX jobs_dead ON jobs (id) WHERE state = 'dead';
