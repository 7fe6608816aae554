-- 011: a webhook delivery writes less (PostgreSQL dialect). The twin of
-- migrations/sqlite/011_webhook_events_lean.sql: the (status, received_at)
-- index, which no query of settled reads, becomes a partial index of
-- failed events (the webhook-failures runbook's newest-failed-first
-- query), so intake and processing write no index entry but the unique
-- (provider, event_id) one. Ids stay an identity column (PostgreSQL has no
-- sqlite_sequence row to spare).
DROP INDEX webhook_events_status;
CREATE INDEX webhook_events_failed ON webhook_events (id) WHERE status = 'failed';
