-- 014: accounts.name unique only where it is set (SQLite dialect).
--
-- name is NULL for every wallet (system and client accounts have one), yet
-- the UNIQUE of 001 gave each wallet an entry in its index: one more b-tree
-- insert in every registration (~3k instructions on the writer) and a page
-- of the WAL more for every ~8 registrations of a group commit. A partial
-- unique index holds the named accounts alone and refuses the same
-- duplicates (NULLs never clashed). See docs/internals/idempotency.md
-- ("The finished check in the unit", figures).
--
-- SQLite cannot drop a UNIQUE in place: accounts is rebuilt with its rows
-- (every column as it stands after 012), then its trigger (002) is made
-- again. Other tables point at accounts by foreign keys: the migration
-- runner turns them off around a migration and checks them before its
-- COMMIT (store_sqlite.c, migrate_begin), as SQLite's own procedure asks.
-- Triggers and the account_balances view name accounts in their bodies:
-- the rename runs under legacy_alter_table, which leaves their SQL alone
-- (they resolve against the new table when next used).

PRAGMA legacy_alter_table = ON;

CREATE TABLE accounts_new (
	id         TEXT PRIMARY KEY,              -- "acct_..." for wallets, the name for system accounts
	wallet     TEXT UNIQUE,                   -- lower-case 0x + 40 hex; NULL for system accounts
	name       TEXT,                          -- system account name; NULL for wallets (unique: below)
	kind       TEXT NOT NULL CHECK (kind IN ('wallet', 'system')),
	referrer   TEXT REFERENCES accounts(wallet),
	asset      TEXT NOT NULL DEFAULT 'USD',
	balance    INTEGER NOT NULL DEFAULT 0,
	held       INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0),
	may_go_negative INTEGER NOT NULL DEFAULT 0 CHECK (may_go_negative IN (0, 1)),
	created_at INTEGER NOT NULL,              -- ms since epoch
	client_id  TEXT,                          -- 006
	metadata   TEXT,                          -- 006
	moved_by   TEXT,                          -- 012
	moved_delta INTEGER,                      -- 012
	CHECK ((kind = 'wallet') = (wallet IS NOT NULL)),
	CHECK (may_go_negative = 1 OR balance - held >= 0)
);
INSERT INTO accounts_new (id, wallet, name, kind, referrer, asset, balance, held, may_go_negative,
                          created_at, client_id, metadata, moved_by, moved_delta)
SELECT id, wallet, name, kind, referrer, asset, balance, held, may_go_negative,
       created_at, client_id, metadata, moved_by, moved_delta
FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts_new RENAME TO accounts;
CREATE UNIQUE INDEX accounts_name ON accounts (name) WHERE name IS NOT NULL;

CREATE TRIGGER accounts_money_integer AFTER UPDATE OF balance, held ON accounts
WHEN typeof(NEW.balance) != 'integer' OR typeof(NEW.held) != 'integer'
BEGIN
	SELECT RAISE(ABORT, 'ledger: balance overflow');
END;

PRAGMA legacy_alter_table = OFF;
