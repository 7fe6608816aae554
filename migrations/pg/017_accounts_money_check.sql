-- 017: the SQLite twin replaces the accounts_money_integer trigger (a
-- REAL balance past int64) by a CHECK on the row. PostgreSQL's BIGINT
-- arithmetic raises on overflow by itself; nothing to change here. This
-- file keeps the two migration lists in step.
SELECT 1;
