-- 032: a posting and a hold in fewer trigger calls, statements and index
-- writes on PostgreSQL; every rule is kept (docs/internals/ledger.md,
-- "Fewer steps a posting (032)"). See also migrations/sqlite/032 (a no-op
-- twin).
--
-- Where a transfer's backend instructions went (callgrind, a transfer
-- ~1.06M, a hold ~0.48M): a PL/pgSQL trigger call and two or three SPI
-- statements for every entry, a second trigger call and a second scan of
-- the entries at the close, a CHECK and a trigger WHEN rebuilt from their
-- stored text at every statement (~29k each), and index entries for the
-- NULL ref and hold_id of every posting.
--
-- 1. The over-commit rule (may_go_negative = 1 OR balance - held >= 0),
--    a table CHECK whose expression PostgreSQL rebuilds from its text for
--    every statement that writes an account, becomes the BEFORE INSERT OR
--    UPDATE trigger accounts_available: same rule, every row written, same
--    SQLSTATE (23514). It is the table's only BEFORE trigger that can pass
--    a row on (the others only raise), so the row it tests is the row
--    stored.
-- 2. holds_insert_pending's WHEN (a hold starts pending, without
--    resolved_at), also rebuilt from text for every insert of a hold, is
--    tested in holds_reserve (AFTER INSERT, every row, on the row stored)
--    before it reserves anything.
-- 3. ledger_tx.ref and ledger_tx.hold_id stay unique by partial unique
--    indexes (WHERE ... IS NOT NULL): a transfer has neither and wrote two
--    NULL index entries. Lookups by ref and by hold_id use them (an
--    equality implies IS NOT NULL).
-- 4. ledger_tx_balanced (BEFORE INSERT) is folded into ledger_tx_post
--    (AFTER INSERT): one trigger call and one scan of the entries, which
--    both totals the balance check and makes the moves. The check is
--    tested after the moves; a failing check raises and the statement's
--    moves are undone with it (as any error of the INSERT). A capture's
--    check still runs before the hold is resolved and anything moves.
-- 5. ledger_entries_open_tx becomes a statement-level AFTER INSERT trigger
--    reading the statement's entries from a transition table: one call and
--    two statements whatever the number of entries (ledger.c sends a
--    posting's entries two to a statement). It takes the same lock on
--    each transaction id appended to (in id order, so two writers cannot
--    deadlock on it) before it looks for the closing row, then refuses an
--    entry of a closed transaction or naming no account, as before.

-- 1.
CREATE FUNCTION accounts_check_available() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.may_go_negative <> 1 AND NEW.balance - NEW.held < 0 THEN
		RAISE EXCEPTION 'accounts: account % would have less than nothing available', NEW.id
			USING ERRCODE = 'check_violation';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER accounts_available BEFORE INSERT OR UPDATE ON accounts
	FOR EACH ROW EXECUTE FUNCTION accounts_check_available();
ALTER TABLE accounts DROP CONSTRAINT accounts_check1;

-- 2.
CREATE OR REPLACE FUNCTION holds_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.status <> 'pending' THEN
		RAISE EXCEPTION 'ledger: a hold starts pending' USING ERRCODE = 'check_violation';
	END IF;
	IF NEW.resolved_at IS NOT NULL THEN
		RAISE EXCEPTION 'ledger: a pending hold has no resolved_at' USING ERRCODE = 'check_violation';
	END IF;
	-- The reserved account is the row this UPDATE must find (031).
	UPDATE accounts SET held = held + NEW.amount WHERE id = NEW.account_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'ledger: account % does not exist', NEW.account_id
			USING ERRCODE = 'foreign_key_violation';
	END IF;
	IF NEW.to_account IS NOT NULL
	   AND NOT EXISTS (SELECT 1 FROM accounts WHERE id = NEW.to_account) THEN
		RAISE EXCEPTION 'ledger: account % does not exist', NEW.to_account
			USING ERRCODE = 'foreign_key_violation';
	END IF;
	RETURN NULL;
END $$;
DROP TRIGGER holds_insert_pending ON holds;
DROP FUNCTION holds_before_insert();

-- 3.
CREATE UNIQUE INDEX ledger_tx_ref ON ledger_tx (ref) WHERE ref IS NOT NULL;
CREATE UNIQUE INDEX ledger_tx_hold ON ledger_tx (hold_id) WHERE hold_id IS NOT NULL;
ALTER TABLE ledger_tx DROP CONSTRAINT ledger_tx_ref_key;
ALTER TABLE ledger_tx DROP CONSTRAINT ledger_tx_hold_id_key;

-- 4.
DROP TRIGGER ledger_tx_balanced ON ledger_tx;
DROP FUNCTION ledger_tx_before_insert();
CREATE OR REPLACE FUNCTION ledger_tx_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	n BIGINT;
	debits NUMERIC;
	credits NUMERIC;
	h RECORD;
	from_net NUMERIC;
	to_net NUMERIC;
BEGIN
	-- A capture debits the pending hold's account by 1 .. the hold's
	-- amount and credits the hold's destination, when it names one, by
	-- exactly that much (007); checked before the hold is resolved.
	IF NEW.hold_id IS NOT NULL THEN
		SELECT account_id, to_account, amount, status INTO h FROM holds
		WHERE id = NEW.hold_id;
		IF NOT FOUND OR h.status <> 'pending' THEN
			RAISE EXCEPTION 'ledger: capture does not match a pending hold'
				USING ERRCODE = 'check_violation';
		END IF;
		SELECT coalesce(sum(CASE direction WHEN 'debit' THEN amount ELSE -amount END)
		                FILTER (WHERE account_id = h.account_id), 0),
		       coalesce(sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END)
		                FILTER (WHERE account_id = h.to_account), 0)
		INTO from_net, to_net
		FROM ledger_entries WHERE tx_id = NEW.id;
		IF from_net < 1 OR from_net > h.amount
		   OR (h.to_account IS NOT NULL AND from_net <> to_net) THEN
			RAISE EXCEPTION 'ledger: capture does not match a pending hold'
				USING ERRCODE = 'check_violation';
		END IF;
		UPDATE holds SET status = 'captured', resolved_at = NEW.created_at
		WHERE id = NEW.hold_id;
		GET DIAGNOSTICS n = ROW_COUNT;
		IF n <> 1 THEN
			RAISE EXCEPTION 'ledger: hold % is no longer pending', NEW.hold_id
				USING ERRCODE = 'check_violation';
		END IF;
	END IF;
	-- One scan of the entries: each account's net, and the totals of the
	-- balance check. Checked accounts: in place, under the row lock and
	-- accounts_available. Every other account of the posting (a hot one):
	-- its net appended, folded later (008). An account is moved by exactly
	-- one of the two. sum() over BIGINT is NUMERIC: no overflow inside the
	-- check.
	WITH d AS (
		SELECT account_id, sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END) AS net,
		       count(*) AS n, sum(amount) FILTER (WHERE direction = 'debit') AS debits,
		       sum(amount) FILTER (WHERE direction = 'credit') AS credits
		FROM ledger_entries WHERE tx_id = NEW.id GROUP BY account_id
	), moved AS (
		UPDATE accounts a SET balance = a.balance + d.net
		FROM d WHERE a.id = d.account_id AND a.may_go_negative = 0
		RETURNING a.id
	), deltas AS (
		INSERT INTO account_deltas (account_id, delta)
		SELECT d.account_id, d.net FROM d
		WHERE d.net <> 0 AND NOT EXISTS (SELECT 1 FROM moved m WHERE m.id = d.account_id)
	)
	SELECT coalesce(sum(d.n), 0), coalesce(sum(d.debits), 0), coalesce(sum(d.credits), 0)
	INTO n, debits, credits FROM d;
	-- Raising here undoes the moves above with the closing row.
	IF n < 2 OR debits <> credits THEN
		RAISE EXCEPTION 'ledger: unbalanced transaction %', NEW.id USING ERRCODE = 'check_violation';
	END IF;
	RETURN NULL;
END $$;

-- 5.
DROP TRIGGER ledger_entries_open_tx ON ledger_entries;
DROP FUNCTION ledger_entries_before_insert();
CREATE FUNCTION ledger_entries_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	closed TEXT;
	missing TEXT;
BEGIN
	-- 1701080436: any constant; the key of "a ledger transaction's entries".
	-- Held until the appender's COMMIT: whoever appends to a transaction
	-- another is closing waits here, then (a new snapshot: the next
	-- statement) finds it closed.
	PERFORM pg_advisory_xact_lock(1701080436, hashtext(t.tx_id))
	FROM (SELECT DISTINCT tx_id FROM new_entries ORDER BY tx_id) t;
	SELECT (SELECT e.tx_id FROM new_entries e
	        WHERE EXISTS (SELECT 1 FROM ledger_tx x WHERE x.id = e.tx_id) LIMIT 1),
	       -- The account, by existence alone (031: accounts are permanent).
	       (SELECT e.account_id FROM new_entries e
	        WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = e.account_id) LIMIT 1)
	INTO closed, missing;
	IF closed IS NOT NULL THEN
		RAISE EXCEPTION 'ledger: transaction % already closed', closed
			USING ERRCODE = 'check_violation';
	END IF;
	IF missing IS NOT NULL THEN
		RAISE EXCEPTION 'ledger: account % does not exist', missing
			USING ERRCODE = 'foreign_key_violation';
	END IF;
	RETURN NULL;
END $$;
CREATE TRIGGER ledger_entries_open_tx AFTER INSERT ON ledger_entries
	REFERENCING NEW TABLE AS new_entries
	FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_after_insert();
