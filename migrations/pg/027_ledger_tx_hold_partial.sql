-- 027: the SQLite twin rebuilds ledger_tx so that only captures write a key
-- into the index of its one-capture-a-hold rule (a partial unique index
-- instead of the column's UNIQUE, which indexed a NULL for every other
-- posting). The PostgreSQL ledger was not measured for this: nothing to
-- change here. This file keeps the two migration lists in step.
SELECT 1;
