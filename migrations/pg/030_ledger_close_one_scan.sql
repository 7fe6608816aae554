-- 030: the SQLite twin makes ledger_tx_close read a transaction's entries
-- once (its balance and writer's-moves checks in one aggregate). PostgreSQL
-- has no writer's moves (its AFTER INSERT trigger moves every posting) and
-- its closing checks were made lean by 016 and 020: nothing to change here.
-- This file keeps the two migration lists in step.
SELECT 1;
