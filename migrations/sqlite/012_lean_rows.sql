-- 012: cheaper rows for the webhook job and the ledger (SQLite dialect).
-- See docs/internals/queue.md ("Throughput") and docs/internals/ledger.md.
--
-- 1. CHECK (x IN (<three or more constants>)) is evaluated by building a
--    temporary b-tree of the constants for every row written (010 says
--    more): callgrind put one such b-tree, ~20k instructions, in every
--    webhook job (the event's status UPDATE), two in every intent
--    transition (from_status, to_status) and one in every payout item
--    write. The same tests are spelt with OR below.
-- 2. ledger_entries and intent_transitions lose AUTOINCREMENT: both are
--    append-only (their no-delete triggers), so the highest id is never
--    freed and a plain INTEGER PRIMARY KEY (max + 1) never reuses one
--    either, in the same order (keyset pages stay stable); what goes is the
--    sqlite_sequence row rewritten at every insert (~5k instructions an
--    entry: 2 to 4 of them in every posting).
-- 3. A posting's balance moves: ledger.c moves them itself (one UPDATE of
--    accounts per account, by that account's entry) and says so on the
--    closing row (ledger_tx.balances_moved = 1); the store then checks the
--    moves instead of making them. The trigger that moved them (002's
--    ledger_tx_post) ran an UPDATE of accounts over an IN (subquery), which
--    SQLite materialises in a temporary b-tree, plus a correlated sum per
--    account: ~107k instructions of a two-entry posting's ~250k. It still
--    runs for every closing row without the flag (captures, whose hold must
--    be resolved before the debit lands, and any posting made in plain
--    SQL), so a balanced transaction posted by hand still moves its
--    balances. The checks of 002 and 007 (balanced, capture) and the new
--    one are statements of one BEFORE INSERT trigger (one trigger frame
--    instead of two); their messages are unchanged. See
--    docs/internals/ledger.md ("Who moves the balances").
-- SQLite cannot alter a CHECK or drop AUTOINCREMENT in place: each table is
-- rebuilt with its rows and ids, then its indexes and triggers are made
-- again. Nothing references these four tables by a foreign key. The
-- ledger_tx triggers name ledger_entries in their bodies: the rename runs
-- under legacy_alter_table, which leaves other objects' SQL alone (they
-- resolve against the new table when next used). DROP TABLE fires no
-- trigger, so the no-delete triggers do not stand in the way.

PRAGMA legacy_alter_table = ON;

-- ---- webhook_events (011's table, the two IN lists spelt with OR)
CREATE TABLE webhook_events_new (
	id           INTEGER PRIMARY KEY,
	provider     TEXT NOT NULL
	             CHECK (provider = 'coinbase' OR provider = 'stripe' OR provider = 'standard'),
	event_id     TEXT NOT NULL CHECK (length(event_id) BETWEEN 1 AND 255),
	type         TEXT NOT NULL,
	status       TEXT NOT NULL DEFAULT 'stored'
	             CHECK (status = 'stored' OR status = 'processed' OR status = 'ignored'
	                    OR status = 'failed'),
	body         BLOB NOT NULL,               -- the raw request body, byte for byte
	error        TEXT,                        -- why processing failed (status failed)
	ledger_tx_id TEXT,                        -- the posting, once processed
	request_id   TEXT,                        -- X-Request-Id of the delivery that stored it
	received_at  INTEGER NOT NULL,
	processed_at INTEGER,                     -- processed or failed
	UNIQUE (provider, event_id),
	CHECK ((status = 'processed') = (ledger_tx_id IS NOT NULL))
);
INSERT INTO webhook_events_new (id, provider, event_id, type, status, body, error, ledger_tx_id,
                                request_id, received_at, processed_at)
SELECT id, provider, event_id, type, status, body, error, ledger_tx_id,
       request_id, received_at, processed_at FROM webhook_events;
DROP TABLE webhook_events;
ALTER TABLE webhook_events_new RENAME TO webhook_events;
CREATE INDEX webhook_events_failed ON webhook_events (id) WHERE status = 'failed';
CREATE TRIGGER webhook_events_immutable BEFORE UPDATE OF provider, event_id, type, body, received_at
ON webhook_events
BEGIN
	SELECT RAISE(ABORT, 'webhook_events: the stored event is immutable');
END;
CREATE TRIGGER webhook_events_no_delete BEFORE DELETE ON webhook_events
BEGIN
	SELECT RAISE(ABORT, 'webhook_events: events are kept for audit');
END;

-- ---- ledger_entries (002's table, no AUTOINCREMENT)
CREATE TABLE ledger_entries_new (
	id         INTEGER PRIMARY KEY,           -- keyset pagination order; never reused (append-only)
	tx_id      TEXT NOT NULL REFERENCES ledger_tx(id) DEFERRABLE INITIALLY DEFERRED,
	account_id TEXT NOT NULL REFERENCES accounts(id),
	direction  TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
	amount     INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount > 0),
	created_at INTEGER NOT NULL
);
INSERT INTO ledger_entries_new (id, tx_id, account_id, direction, amount, created_at)
SELECT id, tx_id, account_id, direction, amount, created_at FROM ledger_entries;
DROP TABLE ledger_entries;
ALTER TABLE ledger_entries_new RENAME TO ledger_entries;
CREATE INDEX ledger_entries_tx ON ledger_entries (tx_id);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);
CREATE TRIGGER ledger_entries_open_tx BEFORE INSERT ON ledger_entries
WHEN EXISTS (SELECT 1 FROM ledger_tx WHERE id = NEW.tx_id)
BEGIN
	SELECT RAISE(ABORT, 'ledger: transaction already closed');
END;
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN
	SELECT RAISE(ABORT, 'ledger: entries are append-only');
END;
CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN
	SELECT RAISE(ABORT, 'ledger: entries are append-only');
END;

-- ---- intent_transitions (002's table, OR-spelt statuses, no AUTOINCREMENT)
CREATE TABLE intent_transitions_new (
	id          INTEGER PRIMARY KEY,          -- never reused (append-only)
	intent_id   TEXT NOT NULL REFERENCES intents(id),
	from_status TEXT CHECK (from_status IS NULL OR from_status = 'PENDING'
	            OR from_status = 'LOCKED' OR from_status = 'SUBMITTED'
	            OR from_status = 'CONFIRMED' OR from_status = 'SETTLED' OR from_status = 'FAILED'),
	to_status   TEXT NOT NULL CHECK (to_status = 'PENDING' OR to_status = 'LOCKED'
	            OR to_status = 'SUBMITTED' OR to_status = 'CONFIRMED' OR to_status = 'SETTLED'
	            OR to_status = 'FAILED'),
	at          INTEGER NOT NULL,
	actor       TEXT NOT NULL                 -- "req:<request id>", "job:<job id>", "sweeper"
);
INSERT INTO intent_transitions_new (id, intent_id, from_status, to_status, at, actor)
SELECT id, intent_id, from_status, to_status, at, actor FROM intent_transitions;
DROP TABLE intent_transitions;
ALTER TABLE intent_transitions_new RENAME TO intent_transitions;
CREATE INDEX intent_transitions_intent ON intent_transitions (intent_id, id);
CREATE TRIGGER intent_transitions_no_update BEFORE UPDATE ON intent_transitions
BEGIN
	SELECT RAISE(ABORT, 'intents: transitions are append-only');
END;
CREATE TRIGGER intent_transitions_no_delete BEFORE DELETE ON intent_transitions
BEGIN
	SELECT RAISE(ABORT, 'intents: transitions are append-only');
END;

-- ---- payout_items (005's table, the status list spelt with OR)
CREATE TABLE payout_items_new (
	batch_id   TEXT NOT NULL REFERENCES payout_batches(id),
	idx        INTEGER NOT NULL CHECK (idx >= 0),
	wallet     TEXT NOT NULL,
	amount     INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount > 0),
	status     TEXT NOT NULL DEFAULT 'PENDING'
	           CHECK (status = 'PENDING' OR status = 'QUEUED' OR status = 'SUBMITTED'
	                  OR status = 'SETTLED' OR status = 'FAILED'),
	intent_id  TEXT,
	job_id     INTEGER,
	error      TEXT,
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (batch_id, idx)
);
INSERT INTO payout_items_new (batch_id, idx, wallet, amount, status, intent_id, job_id, error,
                              updated_at)
SELECT batch_id, idx, wallet, amount, status, intent_id, job_id, error, updated_at FROM payout_items;
DROP TABLE payout_items;
ALTER TABLE payout_items_new RENAME TO payout_items;
CREATE INDEX payout_items_status ON payout_items (batch_id, status);
CREATE INDEX payout_items_intent ON payout_items (intent_id) WHERE intent_id IS NOT NULL;

PRAGMA legacy_alter_table = OFF;

-- ---- balance moves made by the writer, checked by the store
-- moved_by/moved_delta: the last posting that moved this account's balance
-- itself, and by how much (NULL until one does). balances_moved: 1 when
-- ledger.c moved every balance of this posting, NULL when the store moves
-- them (the trigger below). Old rows keep NULL: nothing reads them again.
ALTER TABLE accounts ADD COLUMN moved_by TEXT;
ALTER TABLE accounts ADD COLUMN moved_delta INTEGER;
ALTER TABLE ledger_tx ADD COLUMN balances_moved INTEGER;

DROP TRIGGER ledger_tx_balanced;
DROP TRIGGER ledger_tx_capture_check;
DROP TRIGGER ledger_tx_post;

-- A transaction closes only when it balances (>= 2 entries, debits ==
-- credits; the signed sum cannot overflow where each side's sum does not);
-- a capture debits the pending hold's account by 1 .. the hold's amount
-- (net) and credits the hold's destination, when it names one, by exactly
-- that much (007); and a posting whose balances the writer moved had every
-- entry's account moved by this transaction by exactly that entry's signed
-- amount. Amounts are > 0, so an account's net equals one entry's signed
-- amount only when it appears in that one entry alone: the check also
-- proves each account was moved once, by its whole net. A capture's
-- balances are never the writer's to move (its hold is resolved first, by
-- ledger_tx_post).
CREATE TRIGGER ledger_tx_close BEFORE INSERT ON ledger_tx
BEGIN
	SELECT RAISE(ABORT, 'ledger: unbalanced transaction')
	WHERE (SELECT count(*) < 2 OR sum(CASE direction WHEN 'debit' THEN amount ELSE -amount END) != 0
	       FROM ledger_entries WHERE tx_id = NEW.id);
	SELECT RAISE(ABORT, 'ledger: capture does not match a pending hold')
	WHERE NEW.hold_id IS NOT NULL AND NOT EXISTS (
		SELECT 1 FROM holds h
		WHERE h.id = NEW.hold_id AND h.status = 'pending'
		  AND (SELECT coalesce(sum(CASE e.direction WHEN 'debit' THEN e.amount ELSE -e.amount END), 0)
		       FROM ledger_entries e               -- unary +: see ledger_tx_post in 002
		       WHERE e.tx_id = NEW.id AND +e.account_id = h.account_id) BETWEEN 1 AND h.amount
		  AND (h.to_account IS NULL
		       OR (SELECT coalesce(sum(CASE e.direction WHEN 'debit' THEN e.amount ELSE -e.amount END), 0)
		           FROM ledger_entries e WHERE e.tx_id = NEW.id AND +e.account_id = h.account_id)
		        = (SELECT coalesce(sum(CASE e.direction WHEN 'credit' THEN e.amount ELSE -e.amount END), 0)
		           FROM ledger_entries e WHERE e.tx_id = NEW.id AND +e.account_id = h.to_account)));
	SELECT RAISE(ABORT, 'ledger: balances moved other than by the entries')
	WHERE NEW.balances_moved IS NOT NULL
	  AND (NEW.balances_moved IS NOT 1 OR NEW.hold_id IS NOT NULL
	       OR EXISTS (SELECT 1 FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
	                  WHERE e.tx_id = NEW.id
	                    AND (a.moved_by IS NOT NEW.id
	                         OR a.moved_delta IS NOT CASE e.direction WHEN 'credit' THEN e.amount
	                                                 ELSE -e.amount END)));
END;

-- The store's moves (002's ledger_tx_post, for a closing row without the
-- flag): resolve the captured hold first (its reservation is released
-- before the debit lands), then move every balance by its net. A posting
-- the writer half-moved (an account marked with this transaction, the flag
-- missing) would be moved twice: refused.
CREATE TRIGGER ledger_tx_post AFTER INSERT ON ledger_tx
WHEN NEW.balances_moved IS NULL
BEGIN
	SELECT RAISE(ABORT, 'ledger: balances moved other than by the entries')
	WHERE EXISTS (SELECT 1 FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
	              WHERE e.tx_id = NEW.id AND a.moved_by = NEW.id);
	UPDATE holds SET status = 'captured', resolved_at = NEW.created_at
	WHERE NEW.hold_id IS NOT NULL AND id = NEW.hold_id AND status = 'pending';
	UPDATE accounts SET balance = balance + (
		SELECT sum(CASE e.direction WHEN 'credit' THEN e.amount ELSE -e.amount END)
		FROM ledger_entries e WHERE e.tx_id = NEW.id AND +e.account_id = accounts.id)
	WHERE id IN (SELECT account_id FROM ledger_entries WHERE tx_id = NEW.id);
END;
