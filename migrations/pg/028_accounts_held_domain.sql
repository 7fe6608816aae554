-- 028: accounts.held >= 0 as a domain (PostgreSQL dialect), as 021 did for
-- the ledger's one-column CHECKs; see docs/internals/ledger.md ("Cheaper
-- guards on PostgreSQL").
--
-- Every hold (its reservation trigger's UPDATE of held), every release and
-- every balance move of a checked account paid for rebuilding the CHECK
-- (held >= 0) from its stored text at the start of the statement. The
-- domain account_held keeps its check planned in the type cache and runs it
-- where a value is written to held. A refusal is still SQLSTATE 23514. The
-- over-commit CHECK (may_go_negative = 1 OR balance - held >= 0) relates
-- three columns and stays a table CHECK.
--
-- Upgrade cost: no table rewrite (held first becomes an unconstrained
-- domain over BIGINT, binary coercible; ALTER DOMAIN ADD CONSTRAINT then
-- scans the rows once, and the over-commit CHECK, which reads held, is
-- checked again). The account_balances view reads held, so it is dropped
-- and made again exactly as 008 made it.

CREATE DOMAIN account_held AS BIGINT;

DROP VIEW account_balances;
ALTER TABLE accounts DROP CONSTRAINT accounts_held_check,
	ALTER COLUMN held TYPE account_held;
ALTER DOMAIN account_held ADD CONSTRAINT account_held_not_negative CHECK (VALUE >= 0);
CREATE VIEW account_balances AS
SELECT a.id, a.balance + coalesce((SELECT sum(d.delta) FROM account_deltas d WHERE d.account_id = a.id), 0)
       AS balance, a.held, a.may_go_negative
FROM accounts a;
