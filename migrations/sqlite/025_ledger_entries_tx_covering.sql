-- 025: ledger_entries_tx covers what the ledger's triggers read of a
-- transaction's entries (SQLite dialect).
--
-- Every check on a posting finds its entries by tx_id and then read each
-- entry's row by rowid for its account, direction and amount: the balance
-- check and the writer's-moves check (ledger_tx_close), the capture check,
-- the store's moves (ledger_tx_store_moves_run) and ledger_tx_get. With
-- those columns in the index the row is never read. id comes right after
-- tx_id so the index still yields a transaction's entries in id order
-- (ledger_tx_get's ORDER BY id needs no sort, as with the old (tx_id)
-- index, whose entries ended in the rowid). The deferred foreign key's
-- scan of the children when the closing row is inserted uses its tx_id
-- prefix as it used the old index. Nothing is refused differently: only
-- the index changes. Two-entry posting, callgrind: writer-moved
-- 160.7k -> 157.7k instructions, store-moved 218.2k -> 207.3k.

DROP INDEX ledger_entries_tx;
CREATE INDEX ledger_entries_tx ON ledger_entries (tx_id, id, account_id, direction, amount);
