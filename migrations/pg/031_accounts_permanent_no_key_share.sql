-- 031: the references to accounts that every hold and every posting make
-- are checked without locking the account row (docs/internals/ledger.md,
-- "Hot accounts"). See also migrations/sqlite/031 (a no-op twin).
--
-- A foreign key's check takes a KEY SHARE lock on the referenced row,
-- held until COMMIT. On revenue (every hold's to_account, every transfer's
-- credit) those locks come from many open transactions at once, and every
-- locker after the first makes PostgreSQL build a new MultiXact holding
-- all of them (written to pg_multixact and the WAL, the row's page dirtied
-- again): -c32 holds into revenue made ~0.35 MultiXacts a hold, transfers
-- ~0.4 (more with -c64). Each RI check is also a C trigger queued per row
-- and an SPI query at the end of the statement.
--
-- The lock is what lets a foreign key stay true while its parent row may
-- be deleted or re-keyed. An account never is: postings name it forever,
-- and nothing in settled deletes one. So accounts are made permanent
-- (DELETE, TRUNCATE and any change of id refused) and the three
-- references a hot account meets are checked by existence alone, in
-- triggers that run for every such row anyway:
--   ledger_entries.account_id  in ledger_entries_open_tx (BEFORE INSERT)
--   holds.account_id           by holds_reserve's UPDATE of held (AFTER
--   holds.to_account           INSERT): the row it must find, and a probe
--   account_deltas.account_id  written only by the posting trigger, from
--                              the entries' accounts checked above
-- A committed account stays, so a reference found once stays true; an
-- account not yet committed by another transaction is invisible to the
-- check and refused, as the foreign key refused it. Rows written by hand
-- are checked the same way (23503 foreign_key_violation, as before). UPDATE
-- of these columns: entries are append-only (ledger_entries_no_update),
-- deltas are only deleted by the fold, and holds_resolve_once refuses any
-- change of account_id or to_account.

CREATE FUNCTION accounts_refuse_removal() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'ledger: accounts are never deleted nor renumbered'
		USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER accounts_permanent BEFORE DELETE ON accounts
	FOR EACH ROW EXECUTE FUNCTION accounts_refuse_removal();
CREATE TRIGGER accounts_permanent_id BEFORE UPDATE OF id ON accounts
	FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION accounts_refuse_removal();
CREATE TRIGGER accounts_no_truncate BEFORE TRUNCATE ON accounts
	FOR EACH STATEMENT EXECUTE FUNCTION accounts_refuse_removal();

CREATE OR REPLACE FUNCTION ledger_entries_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	-- 1701080436: any constant; the key of "a ledger transaction's entries".
	PERFORM pg_advisory_xact_lock(1701080436, hashtext(NEW.tx_id));
	IF EXISTS (SELECT 1 FROM ledger_tx WHERE id = NEW.tx_id) THEN
		RAISE EXCEPTION 'ledger: transaction % already closed', NEW.tx_id
			USING ERRCODE = 'check_violation';
	END IF;
	-- The account, by existence alone (031: accounts are permanent).
	IF NOT EXISTS (SELECT 1 FROM accounts WHERE id = NEW.account_id) THEN
		RAISE EXCEPTION 'ledger: account % does not exist', NEW.account_id
			USING ERRCODE = 'foreign_key_violation';
	END IF;
	RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION holds_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
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

ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_account_id_fkey;
ALTER TABLE holds DROP CONSTRAINT holds_account_id_fkey;
ALTER TABLE holds DROP CONSTRAINT holds_to_account_fkey;
ALTER TABLE account_deltas DROP CONSTRAINT account_deltas_account_id_fkey;
