-- 030: ledger_tx_close reads a transaction's entries once (SQLite dialect).
-- See docs/internals/ledger.md ("Who moves the balances").
--
-- The closing row's two checks were two statements, each its own scan of
-- the transaction's entries (ledger_entries_tx): the balance check, then,
-- for a writer-moved posting, the writer's-moves check joining each entry
-- to its account. They are now one aggregate over one scan, whose CASE
-- raises the same two messages in the same order: an unbalanced
-- transaction first (fewer than two entries, or debits != credits), then
-- moves that do not match the entries (the flag other than 1, a capture
-- flagged, or an entry whose account is not marked with this transaction
-- and that entry's own signed amount). The aggregate is complete before
-- the CASE is tested, so which message a row gets no longer depends on
-- which check happens to run first. The account is joined only for a
-- flagged row (the ON tests the flag first); an entry whose account row
-- is missing counts as not moved (the entry's own foreign key refuses it
-- earlier anyway). A writer-moved two-entry posting's closing row 41.6k ->
-- 38.3k instructions (callgrind, stand-alone program of a webhook job's
-- statements over a store of 1,000 queued payments).
--
-- Only the trigger changes: no table is touched, no row rewritten.

DROP TRIGGER ledger_tx_close;
CREATE TRIGGER ledger_tx_close BEFORE INSERT ON ledger_tx
BEGIN
	SELECT CASE
	       WHEN count(*) < 2 OR sum(CASE e.direction WHEN 'debit' THEN e.amount ELSE -e.amount END) != 0
	       THEN RAISE(ABORT, 'ledger: unbalanced transaction')
	       WHEN NEW.balances_moved IS NOT NULL
	        AND (NEW.balances_moved IS NOT 1 OR NEW.hold_id IS NOT NULL
	             OR max(a.moved_by IS NOT NEW.id
	                    OR a.moved_delta IS NOT CASE e.direction WHEN 'credit' THEN e.amount
	                                            ELSE -e.amount END))
	       THEN RAISE(ABORT, 'ledger: balances moved other than by the entries')
	       END
	FROM ledger_entries e LEFT JOIN accounts a ON NEW.balances_moved IS NOT NULL AND a.id = e.account_id
	WHERE e.tx_id = NEW.id;
END;
