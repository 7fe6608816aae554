-- 020: the same ledger and accounts rules for less CPU a write (PostgreSQL
-- dialect). See docs/internals/ledger.md ("What a posting costs
-- PostgreSQL"). No rule is dropped; two are held by a cheaper guard.
--
-- 1. Entries racing the close of their transaction. ledger_entries_balanced
--    (002, 016) re-checked at COMMIT, once per entry, that the entry's
--    transaction was closed and balanced: a PL/pgSQL call and two queries an
--    entry (~95k instructions each, a third of a posting's trigger work).
--    What it caught that nothing else does is an entry appended by another
--    transaction while this one closes it: ledger_entries_open_tx cannot see
--    the uncommitted closing row, and the deferred foreign key finds it
--    once the closer has committed. It did not catch every such append: two
--    entries that balance each other passed (the transaction stays
--    balanced), and their balances never moved. Now the open-transaction
--    trigger first takes a transaction-level advisory lock on the
--    transaction id (pg_advisory_xact_lock(LEDGER_TX_LOCK, hashtext(tx_id)),
--    the two-key form: it never meets the one-key append lock of ledger.c or
--    the migration lock). Whoever appends to a transaction holds its lock
--    until COMMIT or ROLLBACK, closing row included, so a second writer
--    waits at its first entry and then sees the transaction closed (READ
--    COMMITTED: the trigger's query takes a snapshot after the wait) and is
--    refused; a REPEATABLE READ writer's deferred foreign key cannot see the
--    closing row and fails its COMMIT instead. Entries of a transaction
--    never closed still fail the COMMIT through the deferred foreign key,
--    and a closed one still refuses entries in the same transaction. Two
--    transaction ids with one hash share a lock: one waits for the other's
--    COMMIT, nothing more.
-- 2. The accounts CHECKs on columns a balance or held update never writes:
--    kind IN ('wallet', 'system'), may_go_negative IN (0, 1) and
--    (kind = 'wallet') = (wallet IS NOT NULL). PostgreSQL evaluates every
--    CHECK of a row it writes, and rebuilds each one's expression from its
--    stored text at the start of every statement (~29k instructions a CHECK,
--    three in each UPDATE of a balance or held). They are now the WHEN of a
--    BEFORE INSERT OR UPDATE OF kind, wallet, may_go_negative trigger: the
--    same test, made only when a row is inserted or one of those columns is
--    named in an UPDATE, which is the only way they can change. A refusal
--    is still SQLSTATE 23514, and a NULL passes the WHEN as it passed the
--    CHECKs (kind and may_go_negative are NOT NULL). The two CHECKs every move needs stay:
--    held >= 0 and may_go_negative = 1 OR balance - held >= 0.

CREATE OR REPLACE FUNCTION ledger_entries_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	-- 1701080436: any constant; the key of "a ledger transaction's entries".
	PERFORM pg_advisory_xact_lock(1701080436, hashtext(NEW.tx_id));
	IF EXISTS (SELECT 1 FROM ledger_tx WHERE id = NEW.tx_id) THEN
		RAISE EXCEPTION 'ledger: transaction % already closed', NEW.tx_id
			USING ERRCODE = 'check_violation';
	END IF;
	RETURN NEW;
END $$;

DROP TRIGGER ledger_entries_balanced ON ledger_entries;
DROP FUNCTION ledger_entries_at_commit();

CREATE FUNCTION accounts_refuse_columns() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'accounts: kind must be wallet or system, may_go_negative 0 or 1, and a wallet exactly for kind wallet (account %)', NEW.id
		USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER accounts_fixed_columns BEFORE INSERT OR UPDATE OF kind, wallet, may_go_negative ON accounts
	FOR EACH ROW WHEN (NOT ((NEW.kind = 'wallet' OR NEW.kind = 'system')
	                        AND (NEW.may_go_negative = 0 OR NEW.may_go_negative = 1)
	                        AND (NEW.kind = 'wallet') = (NEW.wallet IS NOT NULL)))
	EXECUTE FUNCTION accounts_refuse_columns();
ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check,
	DROP CONSTRAINT accounts_may_go_negative_check,
	DROP CONSTRAINT accounts_check;
