-- 006: clients and the Ledger API (SQLite dialect). See SPEC section 13,
-- docs/internals/ledger.md ("Client accounts and transfers") and
-- docs/internals/apikeys.md ("Client identity").
--
-- A client is the client_id its API keys share (the first key's id, kept
-- across rotations; api_keys.client_id of 005). What a client creates
-- carries that id, and every read or write of it filters on it in SQL.

-- Client accounts. A client account is a non-wallet account with a
-- client_id; its name column holds "<client_id>/<name>" (the form the
-- admin token names it by), so the UNIQUE on name of 001 makes names
-- unique per client and the same index serves the per-client keyset
-- listing (a range of names under the "<client_id>/" prefix). SQLite
-- cannot change the kind CHECK of 001 without rebuilding accounts and
-- every table that points at it, so a client account keeps kind 'system'
-- (not a wallet); client_id IS NULL is what makes a system account the
-- operator's. may_go_negative is the API's "overdraft".
ALTER TABLE accounts ADD COLUMN client_id TEXT;
ALTER TABLE accounts ADD COLUMN metadata TEXT;    -- JSON object as text, or NULL

-- Intents created through /api/v2/claims belong to the calling client;
-- public claims (/api/claim/*) have none.
ALTER TABLE intents ADD COLUMN client_id TEXT;
CREATE INDEX intents_client ON intents (client_id, id) WHERE client_id IS NOT NULL;

-- Transfers (POST /api/v2/transfers) are ledger transactions of kind
-- 'transfer' with their owner, description and metadata. Columns added to
-- an append-only table: rows keep their values forever (the no-update
-- triggers of 002 still apply).
ALTER TABLE ledger_tx ADD COLUMN client_id TEXT;
ALTER TABLE ledger_tx ADD COLUMN description TEXT;
ALTER TABLE ledger_tx ADD COLUMN metadata TEXT;
