-- 021: the single-column CHECKs of the ledger's hot tables as domains
-- (PostgreSQL dialect). See docs/internals/ledger.md ("Cheaper guards on
-- PostgreSQL").
--
-- PostgreSQL evaluates a table's CHECKs on every row it writes and
-- rebuilds each one from its stored text (parse and plan of the
-- expression) at the start of every statement: ~29k instructions a CHECK,
-- and a claim's three INSERTs paid for seven of them. A domain's CHECK is
-- kept planned in the type cache and runs only where a value is assigned
-- to a column of that type (an INSERT's row, an UPDATE's SET), which is
-- exactly where a column CHECK can fail. So the same rules, as domains:
--   ledger_amount      BIGINT, VALUE > 0: ledger_entries.amount,
--                      holds.amount, intents.amount
--   ledger_direction   'debit' | 'credit': ledger_entries.direction
--   hold_status        'pending' | 'captured' | 'released' | 'expired'
--   intent_kind        'claim' | 'payout'
--   intent_status      the six intent states: intents.status,
--                      intent_transitions.from_status (NULL allowed, as
--                      before) and to_status
-- A refusal is still SQLSTATE 23514 (check_violation). The CHECKs that
-- relate two columns stay table CHECKs (holds: pending exactly while
-- resolved_at IS NULL).
--
-- Upgrade cost: each column first becomes an unconstrained domain over its
-- own type (binary coercible: no table rewrite; the indexes are kept except
-- the two partial ones whose predicate reads holds.status, which are built
-- again), then ALTER DOMAIN ADD CONSTRAINT checks the existing rows with one
-- scan of each table (they all passed the CHECK it replaces). The two holds triggers
-- whose WHEN reads holds.status are dropped and made again around it (a
-- column used in a trigger's WHEN cannot change type).

CREATE DOMAIN ledger_amount AS BIGINT;
CREATE DOMAIN ledger_direction AS TEXT;
CREATE DOMAIN hold_status AS TEXT;
CREATE DOMAIN intent_kind AS TEXT;
CREATE DOMAIN intent_status AS TEXT;

DROP TRIGGER holds_insert_pending ON holds;
DROP TRIGGER holds_unreserve ON holds;

ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_amount_check,
	DROP CONSTRAINT ledger_entries_direction_check,
	ALTER COLUMN amount TYPE ledger_amount,
	ALTER COLUMN direction TYPE ledger_direction;
ALTER TABLE holds DROP CONSTRAINT holds_amount_check,
	DROP CONSTRAINT holds_status_check,
	ALTER COLUMN amount TYPE ledger_amount,
	ALTER COLUMN status TYPE hold_status;
ALTER TABLE intents DROP CONSTRAINT intents_amount_check,
	DROP CONSTRAINT intents_kind_check,
	DROP CONSTRAINT intents_status_check,
	ALTER COLUMN amount TYPE ledger_amount,
	ALTER COLUMN kind TYPE intent_kind,
	ALTER COLUMN status TYPE intent_status;
ALTER TABLE intent_transitions DROP CONSTRAINT intent_transitions_from_status_check,
	DROP CONSTRAINT intent_transitions_to_status_check,
	ALTER COLUMN from_status TYPE intent_status,
	ALTER COLUMN to_status TYPE intent_status;

ALTER DOMAIN ledger_amount ADD CONSTRAINT ledger_amount_positive CHECK (VALUE > 0);
ALTER DOMAIN ledger_direction ADD CONSTRAINT ledger_direction_known
	CHECK (VALUE = 'debit' OR VALUE = 'credit');
ALTER DOMAIN hold_status ADD CONSTRAINT hold_status_known
	CHECK (VALUE = 'pending' OR VALUE = 'captured' OR VALUE = 'released' OR VALUE = 'expired');
ALTER DOMAIN intent_kind ADD CONSTRAINT intent_kind_known CHECK (VALUE = 'claim' OR VALUE = 'payout');
ALTER DOMAIN intent_status ADD CONSTRAINT intent_status_known
	CHECK (VALUE = 'PENDING' OR VALUE = 'LOCKED' OR VALUE = 'SUBMITTED' OR VALUE = 'CONFIRMED'
	       OR VALUE = 'SETTLED' OR VALUE = 'FAILED');

CREATE TRIGGER holds_insert_pending BEFORE INSERT ON holds
	FOR EACH ROW WHEN (NEW.status <> 'pending') EXECUTE FUNCTION holds_before_insert();
CREATE TRIGGER holds_unreserve AFTER UPDATE OF status ON holds
	FOR EACH ROW WHEN (OLD.status = 'pending' AND NEW.status <> 'pending')
	EXECUTE FUNCTION holds_after_update();
