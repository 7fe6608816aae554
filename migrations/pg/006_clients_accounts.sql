-- 006: clients and the Ledger API (PostgreSQL dialect). The twin of
-- migrations/sqlite/006_clients_accounts.sql (see there for the why):
-- a client account is a non-wallet account with client_id set and name
-- "<client_id>/<name>"; kind stays 'system' as on SQLite, where the
-- CHECK of 001 cannot change without rebuilding the table.
ALTER TABLE accounts ADD COLUMN client_id TEXT;
ALTER TABLE accounts ADD COLUMN metadata TEXT;

ALTER TABLE intents ADD COLUMN client_id TEXT;
CREATE INDEX intents_client ON intents (client_id, id) WHERE client_id IS NOT NULL;

ALTER TABLE ledger_tx ADD COLUMN client_id TEXT;
ALTER TABLE ledger_tx ADD COLUMN description TEXT;
ALTER TABLE ledger_tx ADD COLUMN metadata TEXT;
