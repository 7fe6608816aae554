-- 001: accounts and idempotency records (PostgreSQL dialect).
-- The twin of migrations/sqlite/001_init.sql: same tables, columns and
-- constraints; integers are BIGINT, the stored body is TEXT (responses
-- are JSON, valid UTF-8). Money columns are 64-bit integers of base
-- units; never floating point.

CREATE TABLE accounts (
	id         TEXT PRIMARY KEY,              -- "acct_..." for wallets, the name for system accounts
	wallet     TEXT UNIQUE,                   -- lower-case 0x + 40 hex; NULL for system accounts
	name       TEXT UNIQUE,                   -- system account name; NULL for wallets
	kind       TEXT NOT NULL CHECK (kind IN ('wallet', 'system')),
	referrer   TEXT REFERENCES accounts(wallet),
	asset      TEXT NOT NULL DEFAULT 'USD',
	balance    BIGINT NOT NULL DEFAULT 0,
	held       BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0),
	may_go_negative BIGINT NOT NULL DEFAULT 0 CHECK (may_go_negative IN (0, 1)),
	created_at BIGINT NOT NULL,               -- ms since epoch
	CHECK ((kind = 'wallet') = (wallet IS NOT NULL)),
	CHECK (may_go_negative = 1 OR balance - held >= 0)
);

-- One row per (scope, key), inserted in the same transaction as the
-- request's effect (see the SQLite twin and docs/internals/idempotency.md).
CREATE TABLE idempotency_keys (
	scope       TEXT NOT NULL,                -- client id + method + route template
	idem_key    TEXT NOT NULL,
	fingerprint TEXT NOT NULL,                -- hex SHA-256 of method, route, raw body
	owner       TEXT NOT NULL,
	status      BIGINT NOT NULL,
	location    TEXT,
	body        TEXT NOT NULL,
	created_at  BIGINT NOT NULL,
	expires_at  BIGINT NOT NULL,
	PRIMARY KEY (scope, idem_key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
