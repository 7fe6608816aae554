-- 018: the SQLite twin moves the body of its ledger_tx_post trigger into
-- an INSTEAD OF trigger on a view, so that a posting whose balances
-- ledger.c moved no longer starts the big trigger's sub-program. The
-- PostgreSQL triggers (016) have no such cost; nothing to change here.
-- This file keeps the two migration lists in step.
SELECT 1;
