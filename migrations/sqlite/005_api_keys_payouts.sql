-- 005: API keys and payout batches (SQLite dialect). See
-- docs/internals/apikeys.md and docs/internals/payouts.md.
-- Times are ms since the epoch; money is 64-bit integers of base units.

-- A key is "sk_live_<prefix>_<secret>"; only its SHA-256 is stored. The
-- prefix is public (shown in listings and metrics) and finds the row; the
-- digest is then compared in constant time. Rotation keeps the old row
-- with expires_at = rotation time + grace and replaced_by = the new key.
CREATE TABLE api_keys (
	id          TEXT PRIMARY KEY,             -- "key_" + 24 hex
	client_id   TEXT NOT NULL,                -- the first key's id of a rotation chain: the client's
	                                          -- identity (idempotency scope, rate-limit key, batch owner)
	prefix      TEXT NOT NULL UNIQUE,         -- 8 base62 characters, public
	secret_hash TEXT NOT NULL,                -- hex SHA-256 of the whole key
	name        TEXT NOT NULL,
	created_at  INTEGER NOT NULL,
	expires_at  INTEGER,                      -- NULL: never (set by rotation)
	revoked_at  INTEGER,                      -- NULL: not revoked
	replaced_by TEXT REFERENCES api_keys(id),
	CHECK (length(secret_hash) = 64)
);

-- A batch belongs to the client that created it (an API key id, or
-- "admin"); its reference is unique per client.
CREATE TABLE payout_batches (
	id           TEXT PRIMARY KEY,            -- "pb_" + 24 hex
	client_id    TEXT NOT NULL,
	reference    TEXT NOT NULL,
	status       TEXT NOT NULL CHECK (status IN ('PENDING_APPROVAL', 'APPROVED', 'COMPLETED')),
	item_count   INTEGER NOT NULL CHECK (item_count > 0),
	total_amount INTEGER NOT NULL CHECK (typeof(total_amount) = 'integer' AND total_amount > 0),
	remaining    INTEGER NOT NULL,            -- items not yet SETTLED or FAILED
	created_at   INTEGER NOT NULL,
	approved_at  INTEGER,
	approved_by  TEXT,
	completed_at INTEGER,
	UNIQUE (client_id, reference),
	CHECK (remaining >= 0 AND remaining <= item_count),
	CHECK ((status = 'PENDING_APPROVAL') = (approved_at IS NULL)),
	CHECK ((status = 'COMPLETED') = (completed_at IS NOT NULL))
);

-- One row per item. PENDING until approval, QUEUED with its payout.execute
-- job, SUBMITTED with its intent (funds in payouts_clearing), then SETTLED
-- or FAILED (error says why).
CREATE TABLE payout_items (
	batch_id   TEXT NOT NULL REFERENCES payout_batches(id),
	idx        INTEGER NOT NULL CHECK (idx >= 0),
	wallet     TEXT NOT NULL,
	amount     INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount > 0),
	status     TEXT NOT NULL DEFAULT 'PENDING'
	           CHECK (status IN ('PENDING', 'QUEUED', 'SUBMITTED', 'SETTLED', 'FAILED')),
	intent_id  TEXT,
	job_id     INTEGER,
	error      TEXT,
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (batch_id, idx)
);
CREATE INDEX payout_items_status ON payout_items (batch_id, status);
CREATE INDEX payout_items_intent ON payout_items (intent_id) WHERE intent_id IS NOT NULL;
