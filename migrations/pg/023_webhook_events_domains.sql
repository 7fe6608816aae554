-- 023: the one-column CHECKs of webhook_events as domains (PostgreSQL
-- dialect), as 021 and 022 did for the ledger's rows and jobs; see
-- docs/internals/ledger.md ("Cheaper guards on PostgreSQL").
--
-- Every stored delivery and every processed or failed mark paid for the
-- table's four CHECKs, each rebuilt from its stored text at the start of
-- the statement (~29k instructions a CHECK). The three that test one
-- column are now domains, checked only where a value is written:
--   webhook_provider  'coinbase' | 'stripe' | 'standard'
--   webhook_event_id  1 to 255 characters
--   webhook_status    'stored' | 'processed' | 'ignored' | 'failed'
-- A refusal is still SQLSTATE 23514. The CHECK that relates status to
-- ledger_tx_id stays a table CHECK; the immutability trigger (004) is
-- unchanged.
--
-- Upgrade cost: no table rewrite (each column first becomes an
-- unconstrained domain over TEXT, binary coercible; the unique index on
-- (provider, event_id) is kept); the partial index webhook_events_failed
-- (its predicate reads status) is built again, the status/ledger_tx_id
-- CHECK is checked again, and ALTER DOMAIN ADD CONSTRAINT scans the rows
-- once per domain.

CREATE DOMAIN webhook_provider AS TEXT;
CREATE DOMAIN webhook_event_id AS TEXT;
CREATE DOMAIN webhook_status AS TEXT;

ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_provider_check,
	DROP CONSTRAINT webhook_events_event_id_check,
	DROP CONSTRAINT webhook_events_status_check,
	ALTER COLUMN provider TYPE webhook_provider,
	ALTER COLUMN event_id TYPE webhook_event_id,
	ALTER COLUMN status TYPE webhook_status;

ALTER DOMAIN webhook_provider ADD CONSTRAINT webhook_provider_known
	CHECK (VALUE = 'coinbase' OR VALUE = 'stripe' OR VALUE = 'standard');
ALTER DOMAIN webhook_event_id ADD CONSTRAINT webhook_event_id_length
	CHECK (length(VALUE) BETWEEN 1 AND 255);
ALTER DOMAIN webhook_status ADD CONSTRAINT webhook_status_known
	CHECK (VALUE = 'stored' OR VALUE = 'processed' OR VALUE = 'ignored' OR VALUE = 'failed');
