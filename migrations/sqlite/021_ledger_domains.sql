-- 021: the PostgreSQL twin turns the one-column CHECKs of ledger_entries,
-- holds, intents and intent_transitions into domains, because PostgreSQL
-- rebuilds every table CHECK at each statement while a domain's check stays
-- planned. SQLite has no domains and compiles its CHECKs once per prepared
-- statement (012 and 015 already spelt its IN lists with OR): nothing to
-- change here. This file keeps the two migration lists in step.
SELECT 1;
