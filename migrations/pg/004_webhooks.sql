-- 004: signed webhook events (PostgreSQL dialect). The twin of
-- migrations/sqlite/004_webhooks.sql (see it and docs/internals/webhooks.md):
-- unique (provider, event_id) is the replay protection; the raw body is
-- kept as received (TEXT: bodies are JSON, valid UTF-8) and is immutable.
-- Raised errors use SQLSTATE 23514 (check_violation), like 002.

CREATE TABLE webhook_events (
	id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	provider     TEXT NOT NULL CHECK (provider IN ('coinbase', 'stripe', 'standard')),
	event_id     TEXT NOT NULL CHECK (length(event_id) BETWEEN 1 AND 255),
	type         TEXT NOT NULL,
	status       TEXT NOT NULL DEFAULT 'stored'
	             CHECK (status IN ('stored', 'processed', 'ignored', 'failed')),
	body         TEXT NOT NULL,
	error        TEXT,
	ledger_tx_id TEXT,
	request_id   TEXT,
	received_at  BIGINT NOT NULL,
	processed_at BIGINT,
	UNIQUE (provider, event_id),
	CHECK ((status = 'processed') = (ledger_tx_id IS NOT NULL))
);
CREATE INDEX webhook_events_status ON webhook_events (status, received_at);

CREATE FUNCTION webhook_events_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'DELETE' THEN
		RAISE EXCEPTION 'webhook_events: events are kept for audit' USING ERRCODE = '23514';
	END IF;
	IF NEW.provider IS DISTINCT FROM OLD.provider OR NEW.event_id IS DISTINCT FROM OLD.event_id
	   OR NEW.type IS DISTINCT FROM OLD.type OR NEW.body IS DISTINCT FROM OLD.body
	   OR NEW.received_at IS DISTINCT FROM OLD.received_at THEN
		RAISE EXCEPTION 'webhook_events: the stored event is immutable' USING ERRCODE = '23514';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER webhook_events_guard BEFORE UPDATE OR DELETE ON webhook_events
	FOR EACH ROW EXECUTE FUNCTION webhook_events_guard();
