-- 016: the same ledger rules for less CPU a posting (PostgreSQL dialect).
-- See docs/internals/ledger.md ("What a posting costs PostgreSQL"). No
-- rule changes; every check stays in the store.
--
-- 1. The closing checks (ledger_tx_before_insert, ledger_entries_at_commit)
--    called the SQL functions ledger_tx_unbalanced and ledger_tx_net_debit
--    from PL/pgSQL. Such a call is not inlined: the function's body is
--    parsed and planned again in every transaction (a capture called
--    ledger_tx_net_debit three times). Their queries are now written in
--    the trigger functions, whose plans PL/pgSQL keeps for the session;
--    the capture's two nets come from one pass over its entries.
-- 2. ledger_tx_after_insert read the transaction's entries twice (checked
--    accounts moved in place, hot accounts appended to account_deltas);
--    now once, in one statement: the in-place UPDATE (still under the row
--    lock and the accounts CHECK, may_go_negative re-tested on the locked
--    row) and, for every other account of the posting, its delta.
-- 3. holds_insert_pending and holds_unreserve test their condition in the
--    trigger's WHEN: a pending insert no longer calls PL/pgSQL at all, and
--    an update that resolves nothing queues no AFTER event.
-- The two SQL functions stay (nothing in the store calls them now; a
-- reader may).

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
		SELECT account_id, to_account, amount INTO h FROM holds
		WHERE id = NEW.hold_id AND status = 'pending';
		IF NOT FOUND THEN
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

CREATE OR REPLACE FUNCTION ledger_entries_at_commit() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM ledger_tx WHERE id = NEW.tx_id) OR (
		SELECT count(*) < 2
		    OR coalesce(sum(amount) FILTER (WHERE direction = 'debit'), 0)
		    <> coalesce(sum(amount) FILTER (WHERE direction = 'credit'), 0)
		FROM ledger_entries WHERE tx_id = NEW.tx_id) THEN
		RAISE EXCEPTION 'ledger: transaction % is not closed and balanced', NEW.tx_id
			USING ERRCODE = 'check_violation';
	END IF;
	RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION ledger_tx_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	n BIGINT;
BEGIN
	IF NEW.hold_id IS NOT NULL THEN
		UPDATE holds SET status = 'captured', resolved_at = NEW.created_at
		WHERE id = NEW.hold_id AND status = 'pending';
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

DROP TRIGGER holds_insert_pending ON holds;
CREATE TRIGGER holds_insert_pending BEFORE INSERT ON holds
	FOR EACH ROW WHEN (NEW.status <> 'pending') EXECUTE FUNCTION holds_before_insert();
DROP TRIGGER holds_unreserve ON holds;
CREATE TRIGGER holds_unreserve AFTER UPDATE OF status ON holds
	FOR EACH ROW WHEN (OLD.status = 'pending' AND NEW.status <> 'pending')
	EXECUTE FUNCTION holds_after_update();
