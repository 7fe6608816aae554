-- 015: the status CHECKs of holds, intents and payout_batches without IN
-- (PostgreSQL dialect). The SQLite twin rebuilds the three tables because
-- SQLite builds a temporary b-tree for such a list on every row written;
-- PostgreSQL tests an IN list in place: nothing to change here. This file
-- keeps the two migration lists in step.
SELECT 1;
