-- 032: the PostgreSQL twin makes a posting and a hold cheaper there (the
-- over-commit CHECK as a trigger, the closing checks in one trigger and one
-- scan, the open-transaction check once a statement, partial unique
-- indexes on ledger_tx.ref and hold_id). SQLite's rules already run the
-- way its engine makes cheap (012, 018, 019, 025, 027, 030): nothing to
-- change here. This file keeps the two migration lists in step.
SELECT 1;
