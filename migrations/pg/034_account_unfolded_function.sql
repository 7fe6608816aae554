-- 034: a hot account's unfolded deltas summed by a function that account.c
-- calls only for an account that may go negative (docs/internals/ledger.md,
-- "Fewer steps a posting on PostgreSQL"). See also migrations/sqlite/034
-- (a no-op twin).
--
-- account.c's lookup read the balance as
--   CASE WHEN may_go_negative = 1 THEN balance + coalesce((SELECT sum(...)
--   FROM account_deltas ...), 0) ELSE balance END
-- and PostgreSQL builds every subquery of a plan at each execution, used or
-- not: ~27k instructions of every hold's and transfer's lookup of a client
-- account, whose CASE never runs it. A function call in the CASE costs
-- nothing where it is not called. PL/pgSQL keeps the query's plan for the
-- connection (an index probe of account_deltas_account: migration 024's
-- n_distinct makes the generic plan one). Reads only: the result is what
-- the subquery returned (NUMERIC, 0 when none).
CREATE FUNCTION account_unfolded(p_account TEXT) RETURNS NUMERIC
LANGUAGE plpgsql STABLE AS $$
BEGIN
	RETURN coalesce((SELECT sum(d.delta) FROM account_deltas d WHERE d.account_id = p_account), 0);
END $$;
