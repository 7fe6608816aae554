-- 037: a hot account's posting can no longer take its balance out of
-- BIGINT (docs/internals/ledger.md, "Hot accounts"). See also
-- migrations/sqlite/037 (a no-op twin).
--
-- Since 008 an account that may go negative takes deltas, folded into its
-- row each second, and nothing range-checked them: a transfer taking an
-- overdraft account below -2^63 was 201 (SQLite: 422 balance_overflow), and
-- the fold, whose UPDATE then left BIGINT, failed and rolled back whole
-- every tick, leaving every hot account's deltas unfolded.
--
-- Exact without the hot row lock the deltas exist to avoid. Each hot
-- account of a posting (in account order, so two postings never deadlock
-- on them) takes a transaction advisory lock on the account:
-- - SHARED, when the net is at most 2^43 in magnitude, the folded balance
--   (read after the lock) at most 2^61 and fewer than 2^17 deltas pending
--   (max(id) - min(id) of account_deltas: two ends of its primary key).
--   The delta is appended, as before. Bound: a set of deltas the fold can
--   take holds, besides deltas folded when it was read, at most the 2^17
--   pending and 2^18 in flight (PostgreSQL has fewer than 2^18 backends),
--   each at most 2^43: |balance| <= 2^61 + (2^17 + 2^18 + 1) * 2^43 < 2^63.
-- - EXCLUSIVE otherwise (a shared lock held is upgraded; two upgrading at
--   once is a deadlock PostgreSQL breaks, the store runs the unit again).
--   No other posting of the account is in flight then: its balance plus
--   its pending deltas plus the net is checked exactly (22003, as BIGINT
--   arithmetic raised it on a checked account: 422 balance_overflow), and
--   the account is moved in place with its pending deltas folded in, so
--   every delta left pending is a small one the bound above counts.
-- Only an account beyond 2^61 in magnitude, a net beyond 2^43 or a fold
-- 2^17 deltas behind takes the exclusive lock. An older binary runs
-- against this function unchanged (an overflow it maps as before).

CREATE OR REPLACE FUNCTION ledger_tx_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	n BIGINT;
	total NUMERIC;
	h RECORD;
	from_net NUMERIC;
	to_net NUMERIC;
	r RECORD;
	hot TEXT[];
	small BOOLEAN;
	fits BOOLEAN;
	pending BIGINT;
	unfolded NUMERIC;
	s NUMERIC;
	inplace TEXT[] := '{}';
BEGIN
	-- A capture debits the pending hold's account by 1 .. the hold's
	-- amount and credits the hold's destination, when it names one, by
	-- exactly that much (007); checked before the hold is resolved.
	IF NEW.hold_id IS NOT NULL THEN
		SELECT account_id, to_account, amount, status INTO h FROM holds
		WHERE id = NEW.hold_id;
		IF NOT FOUND OR h.status <> 'pending' THEN
			RAISE EXCEPTION 'ledger: capture does not match a pending hold'
				USING ERRCODE = 'check_violation';
		END IF;
		SELECT coalesce(sum(CASE direction WHEN 'debit' THEN amount ELSE -amount END)
		                FILTER (WHERE account_id = h.account_id), 0),
		       coalesce(sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END)
		                FILTER (WHERE account_id = h.to_account), 0)
		INTO from_net, to_net
		FROM ledger_entries WHERE tx_id = NEW.id;
		IF from_net < 1 OR from_net > h.amount
		   OR (h.to_account IS NOT NULL AND from_net <> to_net) THEN
			RAISE EXCEPTION 'ledger: capture does not match a pending hold'
				USING ERRCODE = 'check_violation';
		END IF;
		UPDATE holds SET status = 'captured', resolved_at = NEW.created_at
		WHERE id = NEW.hold_id;
		GET DIAGNOSTICS n = ROW_COUNT;
		IF n <> 1 THEN
			RAISE EXCEPTION 'ledger: hold % is no longer pending', NEW.hold_id
				USING ERRCODE = 'check_violation';
		END IF;
	END IF;
	-- Hot accounts: range-checked before a delta is appended (037). The
	-- common case in two statements: every hot account's shared lock (in
	-- account order), then, in a statement of its own so that its snapshot
	-- sees whatever an exclusive holder committed, the folded balances and
	-- the pending count.
	SELECT array_agg(k.account_id), bool_and(k.small), count(k.locked)
	INTO hot, small, n
	FROM (SELECT d.account_id, abs(d.net) <= 8796093022208 AS small,
	             pg_advisory_xact_lock_shared(1936028012, hashtext(d.account_id)) AS locked
	      FROM (SELECT account_id, sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END) AS net
	            FROM ledger_entries WHERE tx_id = NEW.id GROUP BY account_id) d
	      JOIN accounts a ON a.id = d.account_id
	      WHERE a.may_go_negative = 1 AND d.net <> 0
	      ORDER BY d.account_id) k;
	IF hot IS NOT NULL THEN
		SELECT bool_and(abs(a.balance) <= 2305843009213693952),
		       (SELECT coalesce(max(x.id) - min(x.id), 0) FROM account_deltas x)
		INTO fits, pending
		FROM accounts a WHERE a.id = ANY (hot);
		IF NOT (small AND fits AND pending < 131072) THEN
			FOR r IN
				SELECT d.account_id, d.net FROM (
					SELECT account_id, sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END) AS net
					FROM ledger_entries WHERE tx_id = NEW.id GROUP BY account_id) d
				WHERE d.account_id = ANY (hot)
				ORDER BY d.account_id
			LOOP
				-- Upgraded from the shared lock: waits for every other
				-- posting of the account in flight.
				PERFORM pg_advisory_xact_lock(1936028012, hashtext(r.account_id));
				SELECT a.balance + account_unfolded(a.id) + r.net INTO s FROM accounts a WHERE a.id = r.account_id;
				IF s < -9223372036854775808 OR s > 9223372036854775807 THEN
					RAISE EXCEPTION 'ledger: balance of account % would leave bigint', r.account_id
						USING ERRCODE = 'numeric_value_out_of_range';
				END IF;
				-- In place, its pending deltas with it: the total just checked.
				WITH gone AS (DELETE FROM account_deltas WHERE account_id = r.account_id RETURNING delta)
				SELECT coalesce(sum(delta), 0) INTO unfolded FROM gone;
				UPDATE accounts SET balance = balance + unfolded + r.net WHERE id = r.account_id;
				inplace := inplace || r.account_id;
			END LOOP;
		END IF;
	END IF;
	-- One scan of the entries: each account's net and entry count. Checked
	-- accounts: in place, under the row lock and accounts_available.
	-- Every other account of the posting (a hot one): its net appended,
	-- folded later (008). An account is moved by exactly one of the two.
	-- The balance check: at least two entries, and the nets sum to zero
	-- (a net is credits - debits, so that is debits = credits). sum()
	-- over BIGINT is NUMERIC: no overflow inside the check.
	WITH d AS (
		SELECT account_id, sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END) AS net,
		       count(*) AS n
		FROM ledger_entries WHERE tx_id = NEW.id GROUP BY account_id
	), moved AS (
		UPDATE accounts a SET balance = a.balance + d.net
		FROM d WHERE a.id = d.account_id AND a.may_go_negative = 0
		RETURNING a.id
	), deltas AS (
		INSERT INTO account_deltas (account_id, delta)
		SELECT d.account_id, d.net FROM d
		WHERE d.net <> 0 AND NOT EXISTS (SELECT 1 FROM moved m WHERE m.id = d.account_id)
		  AND NOT d.account_id = ANY (inplace)
	)
	SELECT coalesce(sum(d.n), 0), coalesce(sum(d.net), 0) INTO n, total FROM d;
	-- Raising here undoes the moves above with the closing row.
	IF n < 2 OR total <> 0 THEN
		RAISE EXCEPTION 'ledger: unbalanced transaction %', NEW.id USING ERRCODE = 'check_violation';
	END IF;
	RETURN NULL;
END $$;

-- 036's setting, kept: every statement here reads by key.
ALTER FUNCTION ledger_tx_after_insert() SET enable_seqscan = off;
