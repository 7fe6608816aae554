-- 008: hot accounts (PostgreSQL dialect). See docs/internals/ledger.md
-- ("Hot accounts").
--
-- Every capture to revenue, every shop's spending and every claim's
-- settlement to external touched one accounts row each: the UPDATE of the
-- posting trigger held that row's lock until COMMIT, so every writer
-- waited in line for it (-c64 transfers into revenue: half the rate of the
-- same transfers spread over accounts). An account that may go negative
-- needs no balance check, so its balance need not be updated in place:
-- the posting appends its net change to account_deltas (no lock on the
-- account row beyond the KEY SHARE its foreign keys take, which never
-- conflict with one another), and the ticker folds the deltas into
-- accounts.balance in one short statement (ledger_fold_deltas). The
-- balance an account has is accounts.balance + its unfolded deltas: every
-- reader goes through the account_balances view (or adds them itself).
-- Accounts that may not go negative keep the in-place update, whose CHECK
-- (balance - held >= 0) is what refuses an over-commit.
CREATE TABLE account_deltas (
	id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	account_id TEXT NOT NULL REFERENCES accounts(id),
	delta      BIGINT NOT NULL
);
CREATE INDEX account_deltas_account ON account_deltas (account_id);

CREATE VIEW account_balances AS
SELECT a.id, a.balance + coalesce((SELECT sum(d.delta) FROM account_deltas d WHERE d.account_id = a.id), 0)
       AS balance, a.held, a.may_go_negative
FROM accounts a;

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
	-- Checked accounts: in place, under the row lock and the CHECK.
	UPDATE accounts a SET balance = a.balance + d.net
	FROM (SELECT account_id,
	             sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END) AS net
	      FROM ledger_entries WHERE tx_id = NEW.id GROUP BY account_id) d
	WHERE a.id = d.account_id AND a.may_go_negative = 0;
	-- Hot accounts: appended, folded later.
	INSERT INTO account_deltas (account_id, delta)
	SELECT d.account_id, d.net
	FROM (SELECT account_id,
	             sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END) AS net
	      FROM ledger_entries WHERE tx_id = NEW.id GROUP BY account_id) d
	JOIN accounts a ON a.id = d.account_id
	WHERE a.may_go_negative = 1 AND d.net <> 0;
	RETURN NULL;
END $$;
