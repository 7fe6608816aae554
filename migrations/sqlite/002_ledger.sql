-- 002: the double-entry ledger, holds and intents (SQLite dialect).
-- See docs/internals/ledger.md. Money columns are 64-bit integers of base
-- units; the typeof() checks keep SQLite from storing a REAL or TEXT there.
--
-- How the store itself refuses an unbalanced transaction (SQLite has no
-- deferred CHECK, so the rule is split over three constraints):
--   1. entries are inserted first, the ledger_tx row last; the BEFORE INSERT
--      trigger on ledger_tx refuses it unless the tx has >= 2 entries and
--      sum(debits) == sum(credits);
--   2. an entry may not join a tx whose ledger_tx row exists (closed), and
--      entries and transactions are append-only, so a checked tx stays so;
--   3. ledger_entries.tx_id is a DEFERRED foreign key to ledger_tx: entries
--      whose tx was never closed make the COMMIT itself fail.
-- Balances move only when a tx closes (the AFTER INSERT trigger on
-- ledger_tx), by the net of its entries per account, so accounts.balance is
-- always the sum of the account's entries; accounts.held is kept equal to
-- the sum of its pending holds by the triggers on holds. The CHECK of 001
-- (may_go_negative = 1 OR balance - held >= 0) then refuses any
-- over-commit.

CREATE TABLE holds (
	id          TEXT PRIMARY KEY,
	account_id  TEXT NOT NULL REFERENCES accounts(id),
	amount      INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount > 0),
	status      TEXT NOT NULL DEFAULT 'pending'
	            CHECK (status IN ('pending', 'captured', 'released', 'expired')),
	expires_at  INTEGER,                      -- ms since epoch; NULL = no timeout
	intent_id   TEXT,                         -- what the hold is for (no FK: intents point here)
	created_at  INTEGER NOT NULL,
	resolved_at INTEGER,
	CHECK ((status = 'pending') = (resolved_at IS NULL))
);
CREATE INDEX holds_pending_expiry ON holds (expires_at) WHERE status = 'pending';
CREATE INDEX holds_pending_account ON holds (account_id) WHERE status = 'pending';

CREATE TABLE ledger_tx (
	id         TEXT PRIMARY KEY,
	kind       TEXT NOT NULL,                 -- treasury_funding, claim, ...
	ref        TEXT UNIQUE,                   -- external reference; unique makes a posting idempotent
	intent_id  TEXT,
	hold_id    TEXT UNIQUE REFERENCES holds(id),  -- set when the tx captures a hold: once per hold
	created_at INTEGER NOT NULL
);

CREATE TABLE ledger_entries (
	id         INTEGER PRIMARY KEY AUTOINCREMENT, -- keyset pagination order
	tx_id      TEXT NOT NULL REFERENCES ledger_tx(id) DEFERRABLE INITIALLY DEFERRED,
	account_id TEXT NOT NULL REFERENCES accounts(id),
	direction  TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
	amount     INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount > 0),
	created_at INTEGER NOT NULL
);
CREATE INDEX ledger_entries_tx ON ledger_entries (tx_id);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);

-- 1. A transaction closes only when it balances.
CREATE TRIGGER ledger_tx_balanced BEFORE INSERT ON ledger_tx
WHEN (SELECT count(*) FROM ledger_entries WHERE tx_id = NEW.id) < 2
  OR (SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE tx_id = NEW.id AND direction = 'debit')
  != (SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE tx_id = NEW.id AND direction = 'credit')
BEGIN
	SELECT RAISE(ABORT, 'ledger: unbalanced transaction');
END;

-- A capture must debit the hold's account by the hold's amount while the
-- hold is pending; ledger_tx.hold_id is unique, so it happens once.
CREATE TRIGGER ledger_tx_capture_check BEFORE INSERT ON ledger_tx
WHEN NEW.hold_id IS NOT NULL AND NOT EXISTS (
	SELECT 1 FROM holds h
	WHERE h.id = NEW.hold_id AND h.status = 'pending'
	  AND EXISTS (SELECT 1 FROM ledger_entries e       -- unary +: see ledger_tx_post
	              WHERE e.tx_id = NEW.id AND +e.account_id = h.account_id
	                AND e.direction = 'debit' AND e.amount = h.amount))
BEGIN
	SELECT RAISE(ABORT, 'ledger: capture does not match a pending hold');
END;

-- Posting: resolve the captured hold first (so its reservation is released
-- before the debit lands), then move every balance by its net.
-- The unary + keeps the planner on ledger_entries_tx (a handful of rows per
-- tx): on the account index it would scan every entry of a busy account
-- (treasury, external, payouts_clearing) at each posting.
CREATE TRIGGER ledger_tx_post AFTER INSERT ON ledger_tx
BEGIN
	UPDATE holds SET status = 'captured', resolved_at = NEW.created_at
	WHERE NEW.hold_id IS NOT NULL AND id = NEW.hold_id AND status = 'pending';
	UPDATE accounts SET balance = balance + (
		SELECT sum(CASE e.direction WHEN 'credit' THEN e.amount ELSE -e.amount END)
		FROM ledger_entries e WHERE e.tx_id = NEW.id AND +e.account_id = accounts.id)
	WHERE id IN (SELECT account_id FROM ledger_entries WHERE tx_id = NEW.id);
END;

-- 2. No entry joins a closed transaction; nothing is ever rewritten.
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
CREATE TRIGGER ledger_tx_no_update BEFORE UPDATE ON ledger_tx
BEGIN
	SELECT RAISE(ABORT, 'ledger: transactions are append-only');
END;
CREATE TRIGGER ledger_tx_no_delete BEFORE DELETE ON ledger_tx
BEGIN
	SELECT RAISE(ABORT, 'ledger: transactions are append-only');
END;

-- SQLite turns an overflowing integer sum into a REAL: refuse it.
CREATE TRIGGER accounts_money_integer AFTER UPDATE OF balance, held ON accounts
WHEN typeof(NEW.balance) != 'integer' OR typeof(NEW.held) != 'integer'
BEGIN
	SELECT RAISE(ABORT, 'ledger: balance overflow');
END;

-- Holds: held == sum of pending holds; a hold is resolved exactly once.
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
  OR NEW.intent_id IS NOT OLD.intent_id
BEGIN
	SELECT RAISE(ABORT, 'ledger: a hold is resolved exactly once');
END;
-- Only posting a transaction with its hold_id captures a hold.
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

-- Intents (SPEC section 7). The transition rules live in one table in
-- src/intent.c; the store keeps statuses inside the machine.
CREATE TABLE intents (
	id             TEXT PRIMARY KEY,
	kind           TEXT NOT NULL CHECK (kind IN ('claim', 'payout')),
	wallet         TEXT NOT NULL REFERENCES accounts(wallet),
	amount         INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount > 0),
	status         TEXT NOT NULL
	               CHECK (status IN ('PENDING', 'LOCKED', 'SUBMITTED', 'CONFIRMED', 'SETTLED', 'FAILED')),
	tx_hash        TEXT UNIQUE,               -- one on-chain transaction settles one intent
	hold_id        TEXT NOT NULL UNIQUE REFERENCES holds(id),
	ledger_tx_id   TEXT REFERENCES ledger_tx(id),
	failure_reason TEXT,
	created_at     INTEGER NOT NULL,
	updated_at     INTEGER NOT NULL
);
CREATE INDEX intents_status ON intents (status, updated_at);

CREATE TABLE intent_transitions (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	intent_id   TEXT NOT NULL REFERENCES intents(id),
	from_status TEXT CHECK (from_status IS NULL OR from_status IN
	            ('PENDING', 'LOCKED', 'SUBMITTED', 'CONFIRMED', 'SETTLED', 'FAILED')),
	to_status   TEXT NOT NULL CHECK (to_status IN
	            ('PENDING', 'LOCKED', 'SUBMITTED', 'CONFIRMED', 'SETTLED', 'FAILED')),
	at          INTEGER NOT NULL,
	actor       TEXT NOT NULL                 -- "req:<request id>", "job:<job id>", "sweeper"
);
CREATE INDEX intent_transitions_intent ON intent_transitions (intent_id, id);
CREATE TRIGGER intent_transitions_no_update BEFORE UPDATE ON intent_transitions
BEGIN
	SELECT RAISE(ABORT, 'intents: transitions are append-only');
END;
CREATE TRIGGER intent_transitions_no_delete BEFORE DELETE ON intent_transitions
BEGIN
	SELECT RAISE(ABORT, 'intents: transitions are append-only');
END;
