-- 019: the capture check out of the closing trigger's frame (SQLite
-- dialect).
--
-- As 018 found for ledger_tx_post, SQLite starts a trigger by allocating
-- and initialising a frame for every register and cursor of its whole
-- body, whatever part of it then runs. ledger_tx_close's largest statement
-- is the capture check (the pending hold and three sums over the entries),
-- which refuses nothing unless the closing row names a hold; every posting
-- paid for its registers. It moves, unchanged (same test, same message),
-- into an INSTEAD OF trigger on a row-less view, reached through a BEFORE
-- INSERT trigger that runs only for a closing row with a hold (its WHEN,
-- and one INSERT into the view: a small frame). ledger_tx_close keeps the
-- balance and the writer's-moves checks. The closing row of a two-entry
-- writer-moved posting 61.0k -> 56.6k instructions (callgrind).
--
-- The checks are now statements of two BEFORE INSERT triggers, whose
-- order SQLite leaves unspecified: a closing row that breaks both (an
-- unbalanced capture) is refused either way, its message may be either's.

DROP TRIGGER ledger_tx_close;

CREATE VIEW ledger_tx_capture_check (id, hold_id) AS
SELECT NULL, NULL WHERE 0;

-- 007's capture rule: the pending hold's account is debited by 1 .. the
-- hold's amount (net), and its destination, when it names one, credited by
-- exactly that much.
CREATE TRIGGER ledger_tx_capture_check_run INSTEAD OF INSERT ON ledger_tx_capture_check
BEGIN
	SELECT RAISE(ABORT, 'ledger: capture does not match a pending hold')
	WHERE NOT EXISTS (
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
END;

CREATE TRIGGER ledger_tx_close_capture BEFORE INSERT ON ledger_tx
WHEN NEW.hold_id IS NOT NULL
BEGIN
	INSERT INTO ledger_tx_capture_check (id, hold_id) VALUES (NEW.id, NEW.hold_id);
END;

-- 012's closing checks without the capture: the transaction balances (>= 2
-- entries, debits == credits), and a posting whose balances the writer
-- moved had every entry's account moved by this transaction by exactly
-- that entry's signed amount (012 says why that proves each account moved
-- once, by its whole net). A capture's balances are never the writer's.
CREATE TRIGGER ledger_tx_close BEFORE INSERT ON ledger_tx
BEGIN
	SELECT RAISE(ABORT, 'ledger: unbalanced transaction')
	WHERE (SELECT count(*) < 2 OR sum(CASE direction WHEN 'debit' THEN amount ELSE -amount END) != 0
	       FROM ledger_entries WHERE tx_id = NEW.id);
	SELECT RAISE(ABORT, 'ledger: balances moved other than by the entries')
	WHERE NEW.balances_moved IS NOT NULL
	  AND (NEW.balances_moved IS NOT 1 OR NEW.hold_id IS NOT NULL
	       OR EXISTS (SELECT 1 FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
	                  WHERE e.tx_id = NEW.id
	                    AND (a.moved_by IS NOT NEW.id
	                         OR a.moved_delta IS NOT CASE e.direction WHEN 'credit' THEN e.amount
	                                                 ELSE -e.amount END)));
END;
