-- 005: API keys and payout batches (PostgreSQL dialect). The twin of
-- migrations/sqlite/005_api_keys_payouts.sql; see docs/internals/apikeys.md
-- and docs/internals/payouts.md.

CREATE TABLE api_keys (
	id          TEXT PRIMARY KEY,
	client_id   TEXT NOT NULL,
	prefix      TEXT NOT NULL UNIQUE,
	secret_hash TEXT NOT NULL,
	name        TEXT NOT NULL,
	created_at  BIGINT NOT NULL,
	expires_at  BIGINT,
	revoked_at  BIGINT,
	replaced_by TEXT REFERENCES api_keys(id),
	CHECK (length(secret_hash) = 64)
);

CREATE TABLE payout_batches (
	id           TEXT PRIMARY KEY,
	client_id    TEXT NOT NULL,
	reference    TEXT NOT NULL,
	status       TEXT NOT NULL CHECK (status IN ('PENDING_APPROVAL', 'APPROVED', 'COMPLETED')),
	item_count   BIGINT NOT NULL CHECK (item_count > 0),
	total_amount BIGINT NOT NULL CHECK (total_amount > 0),
	remaining    BIGINT NOT NULL,
	created_at   BIGINT NOT NULL,
	approved_at  BIGINT,
	approved_by  TEXT,
	completed_at BIGINT,
	UNIQUE (client_id, reference),
	CHECK (remaining >= 0 AND remaining <= item_count),
	CHECK ((status = 'PENDING_APPROVAL') = (approved_at IS NULL)),
	CHECK ((status = 'COMPLETED') = (completed_at IS NOT NULL))
);

CREATE TABLE payout_items (
	batch_id   TEXT NOT NULL REFERENCES payout_batches(id),
	idx        BIGINT NOT NULL CHECK (idx >= 0),
	wallet     TEXT NOT NULL,
	amount     BIGINT NOT NULL CHECK (amount > 0),
	status     TEXT NOT NULL DEFAULT 'PENDING'
	           CHECK (status IN ('PENDING', 'QUEUED', 'SUBMITTED', 'SETTLED', 'FAILED')),
	intent_id  TEXT,
	job_id     BIGINT,
	error      TEXT,
	updated_at BIGINT NOT NULL,
	PRIMARY KEY (batch_id, idx)
);
CREATE INDEX payout_items_status ON payout_items (batch_id, status);
CREATE INDEX payout_items_intent ON payout_items (intent_id) WHERE intent_id IS NOT NULL;
