-- 004: signed webhook events (SQLite dialect). See docs/internals/webhooks.md.
--
-- One row per (provider, event id): the unique constraint is the replay
-- protection. Intake inserts with ON CONFLICT DO NOTHING, so a redelivery
-- (or any number of concurrent ones) changes nothing and is answered
-- "duplicate". The raw body is kept exactly as received, for audit and for
-- the processing job, and can never be rewritten (trigger below); only the
-- processing state moves:
--   stored    -> processed   a paying event, credited by its job
--   stored    -> failed      its job failed for good (the job is in the DLQ);
--                            an operator retry may still process it
--   ignored                  a type that does not pay: stored, acknowledged
-- Times are ms since the epoch.

CREATE TABLE webhook_events (
	id           INTEGER PRIMARY KEY AUTOINCREMENT,
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
CREATE INDEX webhook_events_status ON webhook_events (status, received_at);

CREATE TRIGGER webhook_events_immutable BEFORE UPDATE OF provider, event_id, type, body, received_at
ON webhook_events
BEGIN
	SELECT RAISE(ABORT, 'webhook_events: the stored event is immutable');
END;
CREATE TRIGGER webhook_events_no_delete BEFORE DELETE ON webhook_events
BEGIN
	SELECT RAISE(ABORT, 'webhook_events: events are kept for audit');
END;
