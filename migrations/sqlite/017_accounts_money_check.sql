-- 017: a balance's overflow refused by a CHECK, not a trigger (SQLite
-- dialect).
--
-- SQLite adds two INTEGERs past int64 as a REAL, so 002 refused a balance
-- or held amount that stopped being an integer with an AFTER UPDATE
-- trigger, accounts_money_integer. A trigger is a sub-program run for
-- every row the UPDATE changes (its WHEN is tested inside it), and any
-- statement that can fire one keeps a statement journal (the original of
-- every page it changes): ~13k instructions of each balance move, two to
-- four of them in every webhook job (callgrind). The same test as a CHECK
-- on the row is evaluated inline, after the column's affinity is applied
-- (as the trigger saw NEW: '12' is still the integer 12), and only when
-- balance or held is written. It refuses the same rows, with the same
-- answer to the caller (a constraint failure: ST_CONFLICT); only SQLite's
-- message differs. Every row already in the table passed the trigger, so
-- the copy below passes the CHECK.
--
-- SQLite cannot add a CHECK in place: accounts is rebuilt with its rows
-- (every column as 014 left it), as 014 did, under the migration runner's
-- foreign-keys-off procedure (store_sqlite.c, migrate_begin). Triggers and
-- the account_balances view name accounts in their bodies: the rename runs
-- under legacy_alter_table, which leaves their SQL alone.

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
	CHECK (may_go_negative = 1 OR balance - held >= 0),
	-- 017: was the accounts_money_integer trigger (002, 014)
	CONSTRAINT accounts_money_integer
	CHECK (typeof(balance) = 'integer' AND typeof(held) = 'integer')
);
INSERT INTO accounts_new (id, wallet, name, kind, referrer, asset, balance, held, may_go_negative,
                          created_at, client_id, metadata, moved_by, moved_delta)
SELECT id, wallet, name, kind, referrer, asset, balance, held, may_go_negative,
       created_at, client_id, metadata, moved_by, moved_delta
FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts_new RENAME TO accounts;
CREATE UNIQUE INDEX accounts_name ON accounts (name) WHERE name IS NOT NULL;

PRAGMA legacy_alter_table = OFF;
