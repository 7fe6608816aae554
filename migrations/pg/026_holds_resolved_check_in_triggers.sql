-- 026: holds' status/resolved_at rule checked by the triggers that already
-- see every written hold row, instead of a table CHECK (PostgreSQL
-- dialect). See docs/internals/ledger.md ("Cheaper guards on PostgreSQL").
--
-- PostgreSQL rebuilds a table CHECK from its stored text at the start of
-- every INSERT or UPDATE statement: holds_check, "pending exactly when
-- resolved_at is NULL", cost every hold and every claim ~25k of their
-- ~600k / ~780k backend instructions (callgrind, the CHECK dropped). The
-- same rule is now refused by
--   INSERT: holds_insert_pending, whose WHEN already ran for every insert
--           (NEW.status <> 'pending'), now also when resolved_at is set;
--   UPDATE: holds_resolve_once (BEFORE UPDATE, every row, no WHEN), which
--           already refuses any change to a resolved hold, now also a row
--           that leaves status and resolved_at out of step.
-- holds_resolve_once is the table's only BEFORE UPDATE trigger and
-- holds_insert_pending its only BEFORE INSERT one, so the row they test is
-- the row stored, as with the CHECK. A refusal is still SQLSTATE 23514.
-- Upgrade cost: none (no rewrite; the dropped CHECK held on every row).

CREATE OR REPLACE FUNCTION holds_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.status <> 'pending' THEN
		RAISE EXCEPTION 'ledger: a hold starts pending' USING ERRCODE = 'check_violation';
	END IF;
	RAISE EXCEPTION 'ledger: a pending hold has no resolved_at' USING ERRCODE = 'check_violation';
END $$;
DROP TRIGGER holds_insert_pending ON holds;
CREATE TRIGGER holds_insert_pending BEFORE INSERT ON holds
	FOR EACH ROW WHEN (NEW.status <> 'pending' OR NEW.resolved_at IS NOT NULL)
	EXECUTE FUNCTION holds_before_insert();

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
	IF (NEW.status = 'pending') <> (NEW.resolved_at IS NULL) THEN
		RAISE EXCEPTION 'ledger: a hold is pending exactly when it has no resolved_at'
			USING ERRCODE = 'check_violation';
	END IF;
	IF NEW.status = 'captured' AND NOT EXISTS (SELECT 1 FROM ledger_tx WHERE hold_id = NEW.id) THEN
		RAISE EXCEPTION 'ledger: a hold is captured only by posting its transaction'
			USING ERRCODE = 'check_violation';
	END IF;
	RETURN NEW;
END $$;

ALTER TABLE holds DROP CONSTRAINT holds_check;
