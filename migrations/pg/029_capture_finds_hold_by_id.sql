-- 029: a capture finds its hold by id alone (PostgreSQL dialect). See
-- docs/internals/ledger.md ("Cheaper guards on PostgreSQL").
--
-- The posting triggers looked the hold up with
-- `WHERE id = NEW.hold_id AND status = 'pending'`. PL/pgSQL plans that once
-- per connection, and while holds had no statistics yet (a young database,
-- or one not analyzed since it grew) PostgreSQL chose the partial index
-- holds_pending_account, whose predicate the status clause matches, and
-- read every pending hold to find the one id: a hold + capture cost 2.03M
-- backend instructions with few pending holds and 3.26M with ~480 (the plan
-- stays until an ANALYZE invalidates it). Now both statements name the id
-- only, so the primary key is the one index that fits, and the status is
-- tested on the row found:
--   ledger_tx_before_insert: the hold read by id; not found or not pending
--     is refused as before ('capture does not match a pending hold');
--   ledger_tx_after_insert: the hold updated by id; a hold no longer
--     pending by then (another transaction captured or released it while
--     this one waited for its row lock) is refused by holds_resolve_once,
--     which refuses any change to a resolved hold (23514, as before).
-- The rest of both functions is 016's, unchanged.

CREATE OR REPLACE FUNCTION ledger_tx_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	n BIGINT;
	debits NUMERIC;
	credits NUMERIC;
	h RECORD;
	from_net NUMERIC;
	to_net NUMERIC;
BEGIN
	-- sum() over BIGINT is NUMERIC: no overflow inside the check.
	SELECT count(*), coalesce(sum(amount) FILTER (WHERE direction = 'debit'), 0),
	       coalesce(sum(amount) FILTER (WHERE direction = 'credit'), 0)
	INTO n, debits, credits
	FROM ledger_entries WHERE tx_id = NEW.id;
	IF n < 2 OR debits <> credits THEN
		RAISE EXCEPTION 'ledger: unbalanced transaction %', NEW.id USING ERRCODE = 'check_violation';
	END IF;
	-- A capture debits the pending hold's account by 1 .. the hold's
	-- amount and credits the hold's destination, when it names one, by
	-- exactly that much (007).
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
	END IF;
	RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION ledger_tx_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	n BIGINT;
BEGIN
	IF NEW.hold_id IS NOT NULL THEN
		UPDATE holds SET status = 'captured', resolved_at = NEW.created_at
		WHERE id = NEW.hold_id;
		GET DIAGNOSTICS n = ROW_COUNT;
		IF n <> 1 THEN
			RAISE EXCEPTION 'ledger: hold % is no longer pending', NEW.hold_id
				USING ERRCODE = 'check_violation';
		END IF;
	END IF;
	-- Checked accounts: in place, under the row lock and the CHECK. Every
	-- other account of the posting (a hot one): its net appended, folded
	-- later (008). An account is moved by exactly one of the two.
	WITH d AS (
		SELECT account_id, sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END) AS net
		FROM ledger_entries WHERE tx_id = NEW.id GROUP BY account_id
	), moved AS (
		UPDATE accounts a SET balance = a.balance + d.net
		FROM d WHERE a.id = d.account_id AND a.may_go_negative = 0
		RETURNING a.id
	)
	INSERT INTO account_deltas (account_id, delta)
	SELECT d.account_id, d.net FROM d
	WHERE d.net <> 0 AND NOT EXISTS (SELECT 1 FROM moved m WHERE m.id = d.account_id);
	RETURN NULL;
END $$;
