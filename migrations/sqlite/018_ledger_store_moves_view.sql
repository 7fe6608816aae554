-- 018: a posting the writer moved no longer pays for the store's moving
-- trigger (SQLite dialect).
--
-- ledger_tx_post (012) moves the balances of a closing row without
-- balances_moved (captures, plain SQL); its WHEN skips the rest. But SQLite
-- tests a trigger's WHEN inside the trigger's sub-program, and starting a
-- sub-program allocates and initialises a frame for every register and
-- cursor its whole body uses: for this body (a check, the hold's UPDATE,
-- the accounts UPDATE with its subqueries) ~8k instructions of every
-- posting, ~12 % of its closing row, even when nothing runs (callgrind:
-- the closing row of a two-entry posting 69.0k -> 61.0k, a webhook job's
-- posting alike; a posting the store moves +1.4k).
--
-- So ledger_tx_post keeps the WHEN and one small statement, and the body
-- moves, unchanged, into an INSTEAD OF trigger (ledger_tx_store_moves_run)
-- on a view that holds no rows: ledger_tx_post inserts the closing row's
-- id, hold and time into the view, and the view's trigger does what
-- ledger_tx_post did, in the same order and with the same messages, still
-- after the closing row is in (holds_capture_posts needs it). Inserting
-- into the view anywhere else moves balances the way a plain UPDATE of
-- accounts does (and is found the same way: reconciliation's
-- balances_match_entries); it grants nothing that plain SQL on this file
-- could not do already.

DROP TRIGGER ledger_tx_post;

CREATE VIEW ledger_tx_store_moves (id, hold_id, created_at) AS
SELECT NULL, NULL, NULL WHERE 0;

-- 012's ledger_tx_post body: resolve the captured hold first (its
-- reservation is released before the debit lands), then move every
-- balance by its net. A posting the writer half-moved (an account marked
-- with this transaction, the flag missing) would be moved twice: refused.
CREATE TRIGGER ledger_tx_store_moves_run INSTEAD OF INSERT ON ledger_tx_store_moves
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

CREATE TRIGGER ledger_tx_post AFTER INSERT ON ledger_tx
WHEN NEW.balances_moved IS NULL
BEGIN
	INSERT INTO ledger_tx_store_moves (id, hold_id, created_at)
	VALUES (NEW.id, NEW.hold_id, NEW.created_at);
END;
