-- 022: the one-column CHECKs of jobs as domains (PostgreSQL dialect), as
-- 021 did for the ledger's rows; see docs/internals/ledger.md ("Cheaper
-- guards on PostgreSQL") and docs/internals/queue.md.
--
-- Every statement that writes a job (enqueue, claim, complete, fail, the
-- lease sweep) paid for the four CHECKs of the jobs table, each rebuilt from
-- its stored text at the start of the statement (~29k instructions a CHECK).
-- The three that test one column are now domains, whose checks stay planned
-- in the type cache and run only where a value is written to that column:
--   job_state         'available' | 'running' | 'completed' | 'dead'
--   job_attempts      >= 0   (attempts)
--   job_max_attempts  >= 1   (max_attempts)
-- A refusal is still SQLSTATE 23514. The CHECK that relates state to the
-- lease columns stays a table CHECK.
--
-- Upgrade cost: no table rewrite (each column first becomes an
-- unconstrained domain over its own type, binary coercible); the four
-- partial indexes whose predicate reads state (009) are built again, the
-- state/lease CHECK is checked again, and ALTER DOMAIN ADD CONSTRAINT scans
-- the rows once per domain.

CREATE DOMAIN job_state AS TEXT;
CREATE DOMAIN job_attempts AS INTEGER;
CREATE DOMAIN job_max_attempts AS INTEGER;

ALTER TABLE jobs DROP CONSTRAINT jobs_state_check,
	DROP CONSTRAINT jobs_attempts_check,
	DROP CONSTRAINT jobs_max_attempts_check,
	ALTER COLUMN state TYPE job_state,
	ALTER COLUMN attempts TYPE job_attempts,
	ALTER COLUMN max_attempts TYPE job_max_attempts;

ALTER DOMAIN job_state ADD CONSTRAINT job_state_known
	CHECK (VALUE = 'available' OR VALUE = 'running' OR VALUE = 'completed' OR VALUE = 'dead');
ALTER DOMAIN job_attempts ADD CONSTRAINT job_attempts_not_negative CHECK (VALUE >= 0);
ALTER DOMAIN job_max_attempts ADD CONSTRAINT job_max_attempts_positive CHECK (VALUE >= 1);
