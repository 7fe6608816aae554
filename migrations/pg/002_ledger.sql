-- 002: the double-entry ledger, holds and intents (PostgreSQL dialect).
-- Same tables, columns and rules as migrations/sqlite/002_ledger.sql; see
-- docs/internals/ledger.md. Money is BIGINT base units (overflow raises).
--
-- The store refuses an unbalanced transaction by itself:
--   1. entries are inserted first, the ledger_tx row last; a BEFORE INSERT
--      trigger on ledger_tx refuses it unless the tx has >= 2 entries and
--      sum(debits) == sum(credits);
--   2. no entry may join a closed tx; entries and transactions are
--      append-only (UPDATE, DELETE and TRUNCATE raise);
--   3. ledger_entries.tx_id is a DEFERRED foreign key to ledger_tx, and a
--      DEFERRABLE INITIALLY DEFERRED constraint trigger re-checks each
--      entry's tx at COMMIT: entries of a tx never closed fail the commit.
-- Balances move only when a tx closes, by the net of its entries; held is
-- kept equal to the sum of pending holds; the accounts CHECK of 001
-- (may_go_negative OR balance - held >= 0) refuses any over-commit.
-- Raised errors use SQLSTATE 23514 (check_violation): the store maps it to
-- ST_CONFLICT, like a SQLite trigger RAISE(ABORT).

CREATE TABLE holds (
	id          TEXT PRIMARY KEY,
	account_id  TEXT NOT NULL REFERENCES accounts(id),
	amount      BIGINT NOT NULL CHECK (amount > 0),
	status      TEXT NOT NULL DEFAULT 'pending'
	            CHECK (status IN ('pending', 'captured', 'released', 'expired')),
	expires_at  BIGINT,
	intent_id   TEXT,
	created_at  BIGINT NOT NULL,
	resolved_at BIGINT,
	CHECK ((status = 'pending') = (resolved_at IS NULL))
);
CREATE INDEX holds_pending_expiry ON holds (expires_at) WHERE status = 'pending';
CREATE INDEX holds_pending_account ON holds (account_id) WHERE status = 'pending';

CREATE TABLE ledger_tx (
	id         TEXT PRIMARY KEY,
	kind       TEXT NOT NULL,
	ref        TEXT UNIQUE,
	intent_id  TEXT,
	hold_id    TEXT UNIQUE REFERENCES holds(id),
	created_at BIGINT NOT NULL
);

CREATE TABLE ledger_entries (
	id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	tx_id      TEXT NOT NULL REFERENCES ledger_tx(id) DEFERRABLE INITIALLY DEFERRED,
	account_id TEXT NOT NULL REFERENCES accounts(id),
	direction  TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
	amount     BIGINT NOT NULL CHECK (amount > 0),
	created_at BIGINT NOT NULL
);
CREATE INDEX ledger_entries_tx ON ledger_entries (tx_id);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);

-- sum() over BIGINT is NUMERIC in PostgreSQL: no overflow inside the check.
CREATE FUNCTION ledger_tx_unbalanced(p_tx TEXT) RETURNS BOOLEAN
LANGUAGE sql STABLE AS $$
	SELECT count(*) < 2
	    OR coalesce(sum(amount) FILTER (WHERE direction = 'debit'), 0)
	    <> coalesce(sum(amount) FILTER (WHERE direction = 'credit'), 0)
	FROM ledger_entries WHERE tx_id = p_tx
$$;

-- 1. A transaction closes only when it balances; a capture must debit the
-- pending hold's account by its amount.
CREATE FUNCTION ledger_tx_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF ledger_tx_unbalanced(NEW.id) THEN
		RAISE EXCEPTION 'ledger: unbalanced transaction %', NEW.id USING ERRCODE = 'check_violation';
	END IF;
	IF NEW.hold_id IS NOT NULL AND NOT EXISTS (
		SELECT 1 FROM holds h
		WHERE h.id = NEW.hold_id AND h.status = 'pending'
		  AND EXISTS (SELECT 1 FROM ledger_entries e
		              WHERE e.tx_id = NEW.id AND e.account_id = h.account_id
		                AND e.direction = 'debit' AND e.amount = h.amount)) THEN
		RAISE EXCEPTION 'ledger: capture does not match a pending hold'
			USING ERRCODE = 'check_violation';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER ledger_tx_balanced BEFORE INSERT ON ledger_tx
	FOR EACH ROW EXECUTE FUNCTION ledger_tx_before_insert();

-- Posting: resolve the captured hold first, then move balances by their net.
CREATE FUNCTION ledger_tx_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	n BIGINT;
BEGIN
	IF NEW.hold_id IS NOT NULL THEN
		UPDATE holds SET status = 'captured', resolved_at = NEW.created_at
		WHERE id = NEW.hold_id AND status = 'pending';
		GET DIAGNOSTICS n = ROW_COUNT;
		IF n <> 1 THEN
			RAISE EXCEPTION 'ledger: hold % is no longer pending', NEW.hold_id
				USING ERRCODE = 'check_violation';
		END IF;
	END IF;
	UPDATE accounts a SET balance = a.balance + d.net
	FROM (SELECT account_id,
	             sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END) AS net
	      FROM ledger_entries WHERE tx_id = NEW.id GROUP BY account_id) d
	WHERE a.id = d.account_id;
	RETURN NULL;
END $$;
CREATE TRIGGER ledger_tx_post AFTER INSERT ON ledger_tx
	FOR EACH ROW EXECUTE FUNCTION ledger_tx_after_insert();

-- 2. No entry joins a closed transaction.
CREATE FUNCTION ledger_entries_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF EXISTS (SELECT 1 FROM ledger_tx WHERE id = NEW.tx_id) THEN
		RAISE EXCEPTION 'ledger: transaction % already closed', NEW.tx_id
			USING ERRCODE = 'check_violation';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER ledger_entries_open_tx BEFORE INSERT ON ledger_entries
	FOR EACH ROW EXECUTE FUNCTION ledger_entries_before_insert();

-- 3. At COMMIT every entry belongs to a closed, balanced transaction.
CREATE FUNCTION ledger_entries_at_commit() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM ledger_tx WHERE id = NEW.tx_id) OR ledger_tx_unbalanced(NEW.tx_id) THEN
		RAISE EXCEPTION 'ledger: transaction % is not closed and balanced', NEW.tx_id
			USING ERRCODE = 'check_violation';
	END IF;
	RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries
	DEFERRABLE INITIALLY DEFERRED
	FOR EACH ROW EXECUTE FUNCTION ledger_entries_at_commit();

-- Append-only tables.
CREATE FUNCTION ledger_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'ledger: % is append-only', TG_TABLE_NAME USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE OR DELETE ON ledger_entries
	FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
	FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_tx_no_update BEFORE UPDATE OR DELETE ON ledger_tx
	FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_tx_no_truncate BEFORE TRUNCATE ON ledger_tx
	FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- Holds: held == sum of pending holds; a hold is resolved exactly once, and
-- captured only by posting its transaction.
CREATE FUNCTION holds_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.status <> 'pending' THEN
		RAISE EXCEPTION 'ledger: a hold starts pending' USING ERRCODE = 'check_violation';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER holds_insert_pending BEFORE INSERT ON holds
	FOR EACH ROW EXECUTE FUNCTION holds_before_insert();

CREATE FUNCTION holds_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	UPDATE accounts SET held = held + NEW.amount WHERE id = NEW.account_id;
	RETURN NULL;
END $$;
CREATE TRIGGER holds_reserve AFTER INSERT ON holds
	FOR EACH ROW EXECUTE FUNCTION holds_after_insert();

CREATE FUNCTION holds_before_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF OLD.status <> 'pending' OR NEW.id IS DISTINCT FROM OLD.id
	   OR NEW.account_id IS DISTINCT FROM OLD.account_id OR NEW.amount IS DISTINCT FROM OLD.amount
	   OR NEW.created_at IS DISTINCT FROM OLD.created_at
	   OR NEW.intent_id IS DISTINCT FROM OLD.intent_id THEN
		RAISE EXCEPTION 'ledger: a hold is resolved exactly once' USING ERRCODE = 'check_violation';
	END IF;
	IF NEW.status = 'captured' AND NOT EXISTS (SELECT 1 FROM ledger_tx WHERE hold_id = NEW.id) THEN
		RAISE EXCEPTION 'ledger: a hold is captured only by posting its transaction'
			USING ERRCODE = 'check_violation';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER holds_resolve_once BEFORE UPDATE ON holds
	FOR EACH ROW EXECUTE FUNCTION holds_before_update();

CREATE FUNCTION holds_after_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF OLD.status = 'pending' AND NEW.status <> 'pending' THEN
		UPDATE accounts SET held = held - OLD.amount WHERE id = OLD.account_id;
	END IF;
	RETURN NULL;
END $$;
CREATE TRIGGER holds_unreserve AFTER UPDATE OF status ON holds
	FOR EACH ROW EXECUTE FUNCTION holds_after_update();

CREATE FUNCTION holds_no_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'ledger: holds are never deleted' USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER holds_no_delete BEFORE DELETE ON holds
	FOR EACH ROW EXECUTE FUNCTION holds_no_delete();
CREATE TRIGGER holds_no_truncate BEFORE TRUNCATE ON holds
	FOR EACH STATEMENT EXECUTE FUNCTION holds_no_delete();

-- Intents (SPEC section 7); transition rules live in src/intent.c.
CREATE TABLE intents (
	id             TEXT PRIMARY KEY,
	kind           TEXT NOT NULL CHECK (kind IN ('claim', 'payout')),
	wallet         TEXT NOT NULL REFERENCES accounts(wallet),
	amount         BIGINT NOT NULL CHECK (amount > 0),
	status         TEXT NOT NULL
	               CHECK (status IN ('PENDING', 'LOCKED', 'SUBMITTED', 'CONFIRMED', 'SETTLED', 'FAILED')),
	tx_hash        TEXT UNIQUE,
	hold_id        TEXT NOT NULL UNIQUE REFERENCES holds(id),
	ledger_tx_id   TEXT REFERENCES ledger_tx(id),
	failure_reason TEXT,
	created_at     BIGINT NOT NULL,
	updated_at     BIGINT NOT NULL
);
CREATE INDEX intents_status ON intents (status, updated_at);

CREATE TABLE intent_transitions (
	id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	intent_id   TEXT NOT NULL REFERENCES intents(id),
	from_status TEXT CHECK (from_status IS NULL OR from_status IN
	            ('PENDING', 'LOCKED', 'SUBMITTED', 'CONFIRMED', 'SETTLED', 'FAILED')),
	to_status   TEXT NOT NULL CHECK (to_status IN
	            ('PENDING', 'LOCKED', 'SUBMITTED', 'CONFIRMED', 'SETTLED', 'FAILED')),
	at          BIGINT NOT NULL,
	actor       TEXT NOT NULL
);
CREATE INDEX intent_transitions_intent ON intent_transitions (intent_id, id);
CREATE TRIGGER intent_transitions_no_update BEFORE UPDATE OR DELETE ON intent_transitions
	FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER intent_transitions_no_truncate BEFORE TRUNCATE ON intent_transitions
	FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
