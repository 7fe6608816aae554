-- 033: the closing trigger's balance check from two aggregates, not four
-- (docs/internals/ledger.md, "Fewer steps a posting on PostgreSQL"). See
-- also migrations/sqlite/033 (a no-op twin).
--
-- 032 totalled debits and credits with two FILTERed sums beside each
-- account's net and count, then summed all three again: every aggregate is
-- built at each executor start of the statement (PostgreSQL initialises a
-- plan's aggregates for every execution, ~10k instructions each here).
-- Debits equal credits exactly when the accounts' nets (credits - debits)
-- sum to zero, so the check reads the nets it already has: same rule, same
-- message, same SQLSTATE.

CREATE OR REPLACE FUNCTION ledger_tx_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	n BIGINT;
	total NUMERIC;
	h RECORD;
	from_net NUMERIC;
	to_net NUMERIC;
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
	)
	SELECT coalesce(sum(d.n), 0), coalesce(sum(d.net), 0) INTO n, total FROM d;
	-- Raising here undoes the moves above with the closing row.
	IF n < 2 OR total <> 0 THEN
		RAISE EXCEPTION 'ledger: unbalanced transaction %', NEW.id USING ERRCODE = 'check_violation';
	END IF;
	RETURN NULL;
END $$;
