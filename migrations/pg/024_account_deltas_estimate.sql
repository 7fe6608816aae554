-- 024: the planner's estimate for one account's unfolded deltas (PostgreSQL
-- dialect). See docs/internals/ledger.md ("Hot accounts").
--
-- Every balance read (account.c's lookups, the account_balances view) sums
-- the account's rows of account_deltas in a correlated subquery. Only the
-- accounts that may go negative have rows there, revenue above all (one a
-- transfer or capture into it between two folds), so ANALYZE sees a single
-- distinct account_id, and for an id known only at run time PostgreSQL
-- then estimates that every row matches: the subquery became a sequential
-- scan of the whole table, dead rows of earlier folds included, for every
-- hold and transfer from a client account that never has a delta (with
-- 2,000 revenue deltas pending: a transfer 1.23M -> 2.86M backend
-- instructions, a hold 0.61M -> 2.32M). Declaring the column's values
-- distinct makes the estimate one row an account, so the lookup probes
-- account_deltas_account whatever the statistics say. Nothing about the
-- rows or their meaning changes; the setting takes effect at the next
-- ANALYZE, run here.

ALTER TABLE account_deltas ALTER COLUMN account_id SET (n_distinct = -1);
ANALYZE account_deltas;
