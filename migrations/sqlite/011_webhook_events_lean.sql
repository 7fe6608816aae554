-- 011: a webhook delivery writes less (SQLite dialect). See
-- docs/internals/webhooks.md ("What intake writes").
--
-- Intake inserts one webhook_events row per event; 004 made that row cost
-- three B-tree writes besides the table's own: the UNIQUE (provider,
-- event_id) index, which is the replay protection and stays, the
-- (status, received_at) index, which no query of settled reads, and the
-- sqlite_sequence row that AUTOINCREMENT updates on every insert. Both
-- extra writes go (about a fifth of the row's cost, and their pages in
-- every commit):
--   - ids: events are never deleted (the trigger below), so the highest id
--     is never freed and a plain INTEGER PRIMARY KEY (max + 1) never reuses
--     an id either;
--   - the status index becomes a partial index of failed events, the only
--     ones looked up by status (the webhook-failures runbook: newest failed
--     first). A stored, processed or ignored event is in no index but the
--     unique one.
-- SQLite cannot drop AUTOINCREMENT in place: the table is rebuilt, rows
-- and ids kept. DROP TABLE does not fire the no-delete trigger.
CREATE TABLE webhook_events_new (
	id           INTEGER PRIMARY KEY,
	provider     TEXT NOT NULL CHECK (provider IN ('coinbase', 'stripe', 'standard')),
	event_id     TEXT NOT NULL CHECK (length(event_id) BETWEEN 1 AND 255),
	type         TEXT NOT NULL,
	status       TEXT NOT NULL DEFAULT 'stored'
	             CHECK (status IN ('stored', 'processed', 'ignored', 'failed')),
	body         BLOB NOT NULL,               -- the raw request body, byte for byte
	error        TEXT,                        -- why processing failed (status failed)
	ledger_tx_id TEXT,                        -- the posting, once processed
	request_id   TEXT,                        -- X-Request-Id of the delivery that stored it
	received_at  INTEGER NOT NULL,
	processed_at INTEGER,                     -- processed or failed
	UNIQUE (provider, event_id),
	CHECK ((status = 'processed') = (ledger_tx_id IS NOT NULL))
);
INSERT INTO webhook_events_new (id, provider, event_id, type, status, body, error, ledger_tx_id,
                                request_id, received_at, processed_at)
SELECT id, provider, event_id, type, status, body, error, ledger_tx_id,
       request_id, received_at, processed_at FROM webhook_events;
DROP TABLE webhook_events;
ALTER TABLE webhook_events_new RENAME TO webhook_events;
CREATE INDEX webhook_events_failed ON webhook_events (id) WHERE status = 'failed';

CREATE TRIGGER webhook_events_immutable BEFORE UPDATE OF provider, event_id, type, body, received_at
ON webhook_events
BEGIN
	SELECT RAISE(ABORT, 'webhook_events: the stored event is immutable');
END;
CREATE TRIGGER webhook_events_no_delete BEFORE DELETE ON webhook_events
BEGIN
	SELECT RAISE(ABORT, 'webhook_events: events are kept for audit');
END;
