-- 008: hot accounts (SQLite dialect). The twin of
-- migrations/pg/008_hot_accounts.sql, which says why. SQLite has one
-- writer, so no row lock is ever waited for: postings keep updating every
-- balance in place (the triggers of 002) and account_deltas stays empty.
-- The table and the view exist so that the readers' SQL is the same on
-- both backends.
CREATE TABLE account_deltas (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	account_id TEXT NOT NULL REFERENCES accounts(id),
	delta      INTEGER NOT NULL
);
CREATE INDEX account_deltas_account ON account_deltas (account_id);

CREATE VIEW account_balances AS
SELECT a.id, a.balance + coalesce((SELECT sum(d.delta) FROM account_deltas d WHERE d.account_id = a.id), 0)
       AS balance, a.held, a.may_go_negative
FROM accounts a;
