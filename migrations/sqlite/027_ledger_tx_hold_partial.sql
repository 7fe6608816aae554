-- 027: ledger_tx's one-capture-a-hold rule as a partial unique index
-- (SQLite dialect).
--
-- hold_id was declared UNIQUE in the table, so every closing row wrote a
-- key into its index, NULL for all but captures: one more b-tree insert a
-- posting that nothing ever finds (NULLs are never equal). The partial
-- index below holds the captures alone and refuses a second transaction
-- for a hold exactly as the column's UNIQUE did (same constraint, same
-- "UNIQUE constraint failed: ledger_tx.hold_id"); hold_id = ? lookups
-- (holds_capture_posts, the captured amount) use it, since = implies NOT
-- NULL. A two-entry posting -3.4k instructions (callgrind, stand-alone
-- program), writer-moved or not.
--
-- SQLite cannot drop a column's UNIQUE in place: the table is rebuilt with
-- its rows and rowids (the same columns in the same order, 012's
-- balances_moved last), then its triggers are made again, unchanged. The
-- tables referencing ledger_tx(id) by a foreign key (ledger_entries,
-- intents, payouts) and the triggers naming it resolve against the new
-- table by its name: the rename runs under legacy_alter_table, which leaves
-- their SQL alone, as in 012. The runner turns foreign keys off around a
-- migration and checks them after it. DROP TABLE fires no trigger.

PRAGMA legacy_alter_table = ON;

CREATE TABLE ledger_tx_new (
	id         TEXT PRIMARY KEY,
	kind       TEXT NOT NULL,                 -- treasury_funding, claim, ...
	ref        TEXT UNIQUE,                   -- external reference; unique makes a posting idempotent
	intent_id  TEXT,
	hold_id    TEXT REFERENCES holds(id),     -- set when the tx captures a hold: once per hold (below)
	created_at INTEGER NOT NULL,
	client_id  TEXT,
	description TEXT,
	metadata   TEXT,
	balances_moved INTEGER                    -- 012
);
INSERT INTO ledger_tx_new (rowid, id, kind, ref, intent_id, hold_id, created_at, client_id,
                           description, metadata, balances_moved)
SELECT rowid, id, kind, ref, intent_id, hold_id, created_at, client_id, description, metadata,
       balances_moved
FROM ledger_tx;
DROP TABLE ledger_tx;
ALTER TABLE ledger_tx_new RENAME TO ledger_tx;

CREATE UNIQUE INDEX ledger_tx_hold ON ledger_tx (hold_id) WHERE hold_id IS NOT NULL;

-- The triggers as 002, 012, 018 and 019 left them.
CREATE TRIGGER ledger_tx_no_update BEFORE UPDATE ON ledger_tx
BEGIN
	SELECT RAISE(ABORT, 'ledger: transactions are append-only');
END;
CREATE TRIGGER ledger_tx_no_delete BEFORE DELETE ON ledger_tx
BEGIN
	SELECT RAISE(ABORT, 'ledger: transactions are append-only');
END;
CREATE TRIGGER ledger_tx_post AFTER INSERT ON ledger_tx
WHEN NEW.balances_moved IS NULL
BEGIN
	INSERT INTO ledger_tx_store_moves (id, hold_id, created_at)
	VALUES (NEW.id, NEW.hold_id, NEW.created_at);
END;
CREATE TRIGGER ledger_tx_close_capture BEFORE INSERT ON ledger_tx
WHEN NEW.hold_id IS NOT NULL
BEGIN
	INSERT INTO ledger_tx_capture_check (id, hold_id) VALUES (NEW.id, NEW.hold_id);
END;
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

PRAGMA legacy_alter_table = OFF;
