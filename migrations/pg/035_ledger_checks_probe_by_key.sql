-- 035: the open-transaction trigger's checks (032) look each entry's
-- transaction and account up by primary key, whatever plan the connection
-- cached for them (docs/internals/ledger.md, "Fewer steps a posting on
-- PostgreSQL"). See also migrations/sqlite/035 (a no-op twin).
--
-- 032 checks a statement's entries with one statement over the transition
-- table: EXISTS (closed transaction) and NOT EXISTS (missing account)
-- subqueries, which the planner turns into joins. PL/pgSQL plans that
-- statement once per connection, and with no parameter the plan is
-- generic, kept until the tables' statistics change. Planned against a
-- young accounts table (a fresh database's first posting: the treasury's
-- funding, five accounts, never analyzed), the NOT EXISTS became a hash
-- anti-join over a sequential scan of accounts, and every later posting
-- on that connection read every account: ~50k after the bench's register
-- rows, 11-15 ms an entries statement instead of ~0.05 ms, batches holding
-- their row locks for up to a second, and the units that waited on them
-- past the batch lock_timeout ran again alone behind them: transfers into
-- revenue on PostgreSQL at half the rate, p99 ~1 s. The closed-transaction
-- half was as exposed on ledger_tx (a hash semi-join over a sequential scan
-- of every posting, seen on some connections).
--
-- OFFSET 0 keeps each subquery a subplan run once per entry with the
-- entry's ids as parameters (PostgreSQL does not flatten a sublink with an
-- OFFSET into a join), so each is a probe of the primary key, as 031's
-- row trigger's were: the plan no longer depends on the table's size when
-- it was made. Same rules, messages and SQLSTATEs; the lock statement is
-- unchanged.
CREATE OR REPLACE FUNCTION ledger_entries_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	closed TEXT;
	missing TEXT;
BEGIN
	-- 1701080436: any constant; the key of "a ledger transaction's entries".
	-- Held until the appender's COMMIT: whoever appends to a transaction
	-- another is closing waits here, then (a new snapshot: the next
	-- statement) finds it closed.
	PERFORM pg_advisory_xact_lock(1701080436, hashtext(t.tx_id))
	FROM (SELECT DISTINCT tx_id FROM new_entries ORDER BY tx_id) t;
	-- OFFSET 0: a probe by primary key per entry, never a join (above).
	SELECT (SELECT e.tx_id FROM new_entries e
	        WHERE EXISTS (SELECT 1 FROM ledger_tx x WHERE x.id = e.tx_id OFFSET 0) LIMIT 1),
	       -- The account, by existence alone (031: accounts are permanent).
	       (SELECT e.account_id FROM new_entries e
	        WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = e.account_id OFFSET 0) LIMIT 1)
	INTO closed, missing;
	IF closed IS NOT NULL THEN
		RAISE EXCEPTION 'ledger: transaction % already closed', closed
			USING ERRCODE = 'check_violation';
	END IF;
	IF missing IS NOT NULL THEN
		RAISE EXCEPTION 'ledger: account % does not exist', missing
			USING ERRCODE = 'foreign_key_violation';
	END IF;
	RETURN NULL;
END $$;
