-- 014: accounts.name unique only where it is set (PostgreSQL dialect). The
-- twin of migrations/sqlite/014_accounts_name_partial.sql, which says why:
-- every wallet's NULL name had an entry in the UNIQUE's index here too.
ALTER TABLE accounts DROP CONSTRAINT accounts_name_key;
CREATE UNIQUE INDEX accounts_name ON accounts (name) WHERE name IS NOT NULL;
