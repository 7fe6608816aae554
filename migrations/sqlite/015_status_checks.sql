-- 015: the status CHECKs of holds, intents and payout_batches without IN
-- (SQLite dialect); 012 did webhook_events, intent_transitions and
-- payout_items, which nothing references.
--
-- SQLite evaluates CHECK (x IN (<three or more constants>)) by building a
-- temporary b-tree of the constants for every row written (010 and 012
-- say more): one in every hold insert and resolution, one in every intent
-- insert and transition, one in every payout batch write. The same tests
-- are spelt with OR (a hold's insert, its intent's insert and the hold's
-- release, statements alone: 215k -> 117k instructions). These three
-- tables are foreign-key parents (ledger_tx.hold_id, intents.hold_id,
-- intent_transitions.intent_id, payout_items.batch_id): the migration
-- runner turns foreign keys off around a migration and checks them before
-- its COMMIT (store_sqlite.c), as SQLite's procedure for a rebuild asks. Rows are copied as they are;
-- the triggers and indexes are made again; the ledger_tx triggers name
-- holds in their bodies: the renames run under legacy_alter_table.

PRAGMA legacy_alter_table = ON;

-- ---- holds (002 + 007's columns)
CREATE TABLE holds_new (
	id          TEXT PRIMARY KEY,
	account_id  TEXT NOT NULL REFERENCES accounts(id),
	amount      INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount > 0),
	status      TEXT NOT NULL DEFAULT 'pending'
	            CHECK (status = 'pending' OR status = 'captured' OR status = 'released'
	                   OR status = 'expired'),
	expires_at  INTEGER,                      -- ms since epoch; NULL = no timeout
	intent_id   TEXT,                         -- what the hold is for (no FK: intents point here)
	created_at  INTEGER NOT NULL,
	resolved_at INTEGER,
	to_account  TEXT REFERENCES accounts(id), -- 007
	client_id   TEXT,                         -- 007
	metadata    TEXT,                         -- 007
	CHECK ((status = 'pending') = (resolved_at IS NULL))
);
INSERT INTO holds_new (id, account_id, amount, status, expires_at, intent_id, created_at,
                       resolved_at, to_account, client_id, metadata)
SELECT id, account_id, amount, status, expires_at, intent_id, created_at,
       resolved_at, to_account, client_id, metadata FROM holds;
DROP TABLE holds;
ALTER TABLE holds_new RENAME TO holds;
CREATE INDEX holds_pending_expiry ON holds (expires_at) WHERE status = 'pending';
CREATE INDEX holds_pending_account ON holds (account_id) WHERE status = 'pending';
CREATE INDEX holds_client ON holds (client_id, id) WHERE client_id IS NOT NULL;
CREATE TRIGGER holds_insert_pending BEFORE INSERT ON holds
WHEN NEW.status != 'pending'
BEGIN
	SELECT RAISE(ABORT, 'ledger: a hold starts pending');
END;
CREATE TRIGGER holds_reserve AFTER INSERT ON holds
BEGIN
	UPDATE accounts SET held = held + NEW.amount WHERE id = NEW.account_id;
END;
CREATE TRIGGER holds_resolve_once BEFORE UPDATE ON holds
WHEN OLD.status != 'pending' OR NEW.id IS NOT OLD.id OR NEW.account_id IS NOT OLD.account_id
  OR NEW.amount IS NOT OLD.amount OR NEW.created_at IS NOT OLD.created_at
  OR NEW.intent_id IS NOT OLD.intent_id OR NEW.to_account IS NOT OLD.to_account
  OR NEW.client_id IS NOT OLD.client_id OR NEW.metadata IS NOT OLD.metadata
BEGIN
	SELECT RAISE(ABORT, 'ledger: a hold is resolved exactly once');
END;
CREATE TRIGGER holds_capture_posts BEFORE UPDATE OF status ON holds
WHEN NEW.status = 'captured' AND NOT EXISTS (SELECT 1 FROM ledger_tx WHERE hold_id = NEW.id)
BEGIN
	SELECT RAISE(ABORT, 'ledger: a hold is captured only by posting its transaction');
END;
CREATE TRIGGER holds_unreserve AFTER UPDATE OF status ON holds
WHEN OLD.status = 'pending' AND NEW.status != 'pending'
BEGIN
	UPDATE accounts SET held = held - OLD.amount WHERE id = OLD.account_id;
END;
CREATE TRIGGER holds_no_delete BEFORE DELETE ON holds
BEGIN
	SELECT RAISE(ABORT, 'ledger: holds are never deleted');
END;

-- ---- intents (002 + 006's client_id)
CREATE TABLE intents_new (
	id             TEXT PRIMARY KEY,
	kind           TEXT NOT NULL CHECK (kind IN ('claim', 'payout')),
	wallet         TEXT NOT NULL REFERENCES accounts(wallet),
	amount         INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount > 0),
	status         TEXT NOT NULL
	               CHECK (status = 'PENDING' OR status = 'LOCKED' OR status = 'SUBMITTED'
	                      OR status = 'CONFIRMED' OR status = 'SETTLED' OR status = 'FAILED'),
	tx_hash        TEXT UNIQUE,               -- one on-chain transaction settles one intent
	hold_id        TEXT NOT NULL UNIQUE REFERENCES holds(id),
	ledger_tx_id   TEXT REFERENCES ledger_tx(id),
	failure_reason TEXT,
	created_at     INTEGER NOT NULL,
	updated_at     INTEGER NOT NULL,
	client_id      TEXT                       -- 006
);
INSERT INTO intents_new (id, kind, wallet, amount, status, tx_hash, hold_id, ledger_tx_id,
                         failure_reason, created_at, updated_at, client_id)
SELECT id, kind, wallet, amount, status, tx_hash, hold_id, ledger_tx_id,
       failure_reason, created_at, updated_at, client_id FROM intents;
DROP TABLE intents;
ALTER TABLE intents_new RENAME TO intents;
CREATE INDEX intents_status ON intents (status, updated_at);
CREATE INDEX intents_client ON intents (client_id, id) WHERE client_id IS NOT NULL;

-- ---- payout_batches (005)
CREATE TABLE payout_batches_new (
	id           TEXT PRIMARY KEY,            -- "pb_" + 24 hex
	client_id    TEXT NOT NULL,
	reference    TEXT NOT NULL,
	status       TEXT NOT NULL
	             CHECK (status = 'PENDING_APPROVAL' OR status = 'APPROVED' OR status = 'COMPLETED'),
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
INSERT INTO payout_batches_new (id, client_id, reference, status, item_count, total_amount,
                                remaining, created_at, approved_at, approved_by, completed_at)
SELECT id, client_id, reference, status, item_count, total_amount,
       remaining, created_at, approved_at, approved_by, completed_at FROM payout_batches;
DROP TABLE payout_batches;
ALTER TABLE payout_batches_new RENAME TO payout_batches;

PRAGMA legacy_alter_table = OFF;
