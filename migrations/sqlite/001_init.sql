-- 001: accounts and idempotency records (SQLite dialect).
-- Money columns are 64-bit integers of base units; never REAL.

CREATE TABLE accounts (
	id         TEXT PRIMARY KEY,              -- "acct_..." for wallets, the name for system accounts
	wallet     TEXT UNIQUE,                   -- lower-case 0x + 40 hex; NULL for system accounts
	name       TEXT UNIQUE,                   -- system account name; NULL for wallets
	kind       TEXT NOT NULL CHECK (kind IN ('wallet', 'system')),
	referrer   TEXT REFERENCES accounts(wallet),
	asset      TEXT NOT NULL DEFAULT 'USD',
	balance    INTEGER NOT NULL DEFAULT 0,
	held       INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0),
	may_go_negative INTEGER NOT NULL DEFAULT 0 CHECK (may_go_negative IN (0, 1)),
	created_at INTEGER NOT NULL,              -- ms since epoch
	CHECK ((kind = 'wallet') = (wallet IS NOT NULL)),
	CHECK (may_go_negative = 1 OR balance - held >= 0)
);

-- One row per (scope, key). The row is inserted in the same transaction as
-- the request's effect, so a committed row always has its response: there
-- is no "claimed but not finished" state to get stuck in (see
-- docs/internals/idempotency.md). owner and created_at say which instance
-- answered and when, for audit and for the chaos checks.
CREATE TABLE idempotency_keys (
	scope       TEXT NOT NULL,                -- client id + method + route template
	idem_key    TEXT NOT NULL,
	fingerprint TEXT NOT NULL,                -- hex SHA-256 of method, route, raw body
	owner       TEXT NOT NULL,
	status      INTEGER NOT NULL,
	location    TEXT,
	body        BLOB NOT NULL,
	created_at  INTEGER NOT NULL,
	expires_at  INTEGER NOT NULL,
	PRIMARY KEY (scope, idem_key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
