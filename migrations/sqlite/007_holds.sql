-- 007: holds as the Ledger API exposes them (SQLite dialect; SPEC
-- section 13, docs/internals/ledger.md "Holds").
--
-- A hold now may name where its capture goes (to_account), who owns it
-- (client_id: the API key's client; NULL for the operator's holds and for
-- the holds of intents) and the caller's metadata (JSON text). A capture
-- may take PART of the hold: it posts up to the hold's amount and the whole
-- reservation is released in the same statement, so the rest goes back.
-- The amount captured is never stored twice: it is the net debit of the
-- hold's account in the one ledger transaction that carries the hold's id
-- (ledger_tx.hold_id is unique: a hold is captured once).
--
-- Old rows stay valid: the new columns are NULL for them, and a full
-- capture is a partial capture of everything. 'released' is what the API
-- calls VOIDED.

ALTER TABLE holds ADD COLUMN to_account TEXT REFERENCES accounts(id);
ALTER TABLE holds ADD COLUMN client_id TEXT;
ALTER TABLE holds ADD COLUMN metadata TEXT;

-- A client's holds, newest first, for the list route.
CREATE INDEX holds_client ON holds (client_id, id) WHERE client_id IS NOT NULL;

-- A capture debits the pending hold's account by 1 .. the hold's amount
-- (net, so a debit taken back by a credit in the same transaction does not
-- count), and credits the hold's destination, when it names one, by
-- exactly that much.
DROP TRIGGER ledger_tx_capture_check;
CREATE TRIGGER ledger_tx_capture_check BEFORE INSERT ON ledger_tx
WHEN NEW.hold_id IS NOT NULL AND NOT EXISTS (
	SELECT 1 FROM holds h
	WHERE h.id = NEW.hold_id AND h.status = 'pending'
	  AND (SELECT coalesce(sum(CASE e.direction WHEN 'debit' THEN e.amount ELSE -e.amount END), 0)
	       FROM ledger_entries e                    -- unary +: see ledger_tx_post in 002
	       WHERE e.tx_id = NEW.id AND +e.account_id = h.account_id) BETWEEN 1 AND h.amount
	  AND (h.to_account IS NULL
	       OR (SELECT coalesce(sum(CASE e.direction WHEN 'debit' THEN e.amount ELSE -e.amount END), 0)
	           FROM ledger_entries e WHERE e.tx_id = NEW.id AND +e.account_id = h.account_id)
	        = (SELECT coalesce(sum(CASE e.direction WHEN 'credit' THEN e.amount ELSE -e.amount END), 0)
	           FROM ledger_entries e WHERE e.tx_id = NEW.id AND +e.account_id = h.to_account)))
BEGIN
	SELECT RAISE(ABORT, 'ledger: capture does not match a pending hold');
END;

-- What a hold is, whom it belongs to and where it goes never change.
DROP TRIGGER holds_resolve_once;
CREATE TRIGGER holds_resolve_once BEFORE UPDATE ON holds
WHEN OLD.status != 'pending' OR NEW.id IS NOT OLD.id OR NEW.account_id IS NOT OLD.account_id
  OR NEW.amount IS NOT OLD.amount OR NEW.created_at IS NOT OLD.created_at
  OR NEW.intent_id IS NOT OLD.intent_id OR NEW.to_account IS NOT OLD.to_account
  OR NEW.client_id IS NOT OLD.client_id OR NEW.metadata IS NOT OLD.metadata
BEGIN
	SELECT RAISE(ABORT, 'ledger: a hold is resolved exactly once');
END;
