-- 007: holds as the Ledger API exposes them (PostgreSQL dialect; same
-- columns and rules as migrations/sqlite/007_holds.sql, see there and
-- docs/internals/ledger.md "Holds").
--
-- to_account (where a capture goes), client_id (the owner; NULL for the
-- operator's holds and the holds of intents), metadata (JSON text). A
-- capture may take part of the hold; the whole reservation is released as
-- it posts. The amount captured is the net debit of the hold's account in
-- the one ledger transaction carrying the hold's id (ledger_tx.hold_id is
-- unique). Old rows stay valid; 'released' is what the API calls VOIDED.

ALTER TABLE holds ADD COLUMN to_account TEXT REFERENCES accounts(id);
ALTER TABLE holds ADD COLUMN client_id TEXT;
ALTER TABLE holds ADD COLUMN metadata TEXT;

CREATE INDEX holds_client ON holds (client_id, id) WHERE client_id IS NOT NULL;

-- The net debit (credit: negated) of one account in one transaction.
CREATE FUNCTION ledger_tx_net_debit(p_tx TEXT, p_account TEXT) RETURNS NUMERIC
LANGUAGE sql STABLE AS $$
	SELECT coalesce(sum(CASE direction WHEN 'debit' THEN amount ELSE -amount END), 0)
	FROM ledger_entries WHERE tx_id = p_tx AND account_id = p_account
$$;

-- 1. A transaction closes only when it balances; a capture debits the
-- pending hold's account by 1 .. the hold's amount and credits the hold's
-- destination, when it names one, by exactly that much.
CREATE OR REPLACE FUNCTION ledger_tx_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF ledger_tx_unbalanced(NEW.id) THEN
		RAISE EXCEPTION 'ledger: unbalanced transaction %', NEW.id USING ERRCODE = 'check_violation';
	END IF;
	IF NEW.hold_id IS NOT NULL AND NOT EXISTS (
		SELECT 1 FROM holds h
		WHERE h.id = NEW.hold_id AND h.status = 'pending'
		  AND ledger_tx_net_debit(NEW.id, h.account_id) BETWEEN 1 AND h.amount
		  AND (h.to_account IS NULL
		       OR ledger_tx_net_debit(NEW.id, h.account_id) = -ledger_tx_net_debit(NEW.id, h.to_account))) THEN
		RAISE EXCEPTION 'ledger: capture does not match a pending hold'
			USING ERRCODE = 'check_violation';
	END IF;
	RETURN NEW;
END $$;

-- What a hold is, whom it belongs to and where it goes never change.
CREATE OR REPLACE FUNCTION holds_before_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF OLD.status <> 'pending' OR NEW.id IS DISTINCT FROM OLD.id
	   OR NEW.account_id IS DISTINCT FROM OLD.account_id OR NEW.amount IS DISTINCT FROM OLD.amount
	   OR NEW.created_at IS DISTINCT FROM OLD.created_at
	   OR NEW.intent_id IS DISTINCT FROM OLD.intent_id
	   OR NEW.to_account IS DISTINCT FROM OLD.to_account
	   OR NEW.client_id IS DISTINCT FROM OLD.client_id
	   OR NEW.metadata IS DISTINCT FROM OLD.metadata THEN
		RAISE EXCEPTION 'ledger: a hold is resolved exactly once' USING ERRCODE = 'check_violation';
	END IF;
	IF NEW.status = 'captured' AND NOT EXISTS (SELECT 1 FROM ledger_tx WHERE hold_id = NEW.id) THEN
		RAISE EXCEPTION 'ledger: a hold is captured only by posting its transaction'
			USING ERRCODE = 'check_violation';
	END IF;
	RETURN NEW;
END $$;
