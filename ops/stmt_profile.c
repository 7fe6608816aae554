/* ops/stmt_profile.c — a webhook job's SQLite statements, one function each,
 * for callgrind: where the writer's instructions go by statement.
 *
 *   ops/profile_drain --queue-only --dir /tmp/sp            # N queued payments
 *   cc -O2 -g -fno-ipa-icf -fno-inline-small-functions -o build/stmt_profile \
 *       ops/stmt_profile.c -lsqlite3
 *   cp /tmp/sp/settled.db /tmp/sp/run.db
 *   build/stmt_profile /tmp/sp/run.db 0 candidate.sql           # optional: a
 *                                               # schema change, outside the profile
 *   valgrind --tool=callgrind --callgrind-out-file=/tmp/sp/cg \
 *       build/stmt_profile /tmp/sp/run.db 1000
 *   callgrind_annotate --inclusive=yes /tmp/sp/cg | grep -E 'stmt_profile.c:s_'
 *
 * For every queued webhook.process job, in units of 16 (the worker's
 * WORKER_EFFECTS_PER_UNIT, one SAVEPOINT each as the writer's batch gives
 * a unit) it runs what the job's effect and completion send on SQLite: the
 * event's mark, the payee lookup, the two entries, the two balance moves,
 * the closing row and the unleased completion (the text of webhook_job.c,
 * account.c, ledger.c and queue.c at 1f88f7c; keep them in step). Each
 * kind of statement is stepped in its own function (s_mark, s_entry, ...),
 * so a callgrind profile's inclusive cost of that function, over the job
 * count, is what the statement costs a job, its triggers, indexes and
 * constraint checks included; s_txctl is BEGIN, SAVEPOINT, RELEASE and
 * COMMIT (the WAL frames). Compile with -fno-ipa-icf so that the compiler
 * keeps the identical functions apart. Not settled's code path (no
 * statement cache, no row copies: the payee lookup costs ~3.5k less here),
 * and no fsync is counted by callgrind anyway; it is for comparing one
 * schema or statement against another, with the same store. Every result is
 * checked (changes() of each write): a store the program leaves behind
 * passes PRAGMA integrity_check and foreign_key_check, and its balances
 * equal its entries.
 */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))

struct prog {
	sqlite3 *db;
};

static void die(struct prog *p, const char *what)
{
	fprintf(stderr, "stmt_profile: %s: %s\n", what, p->db ? sqlite3_errmsg(p->db) : "");
	exit(1);
}

static sqlite3_stmt *prep(struct prog *p, const char *sql)
{
	sqlite3_stmt *st = NULL;

	if (sqlite3_prepare_v3(p->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK)
		die(p, sql);
	return st;
}

/* Steps st to its end; returns the rows it gave. */
static int run(sqlite3_stmt *st)
{
	int rc, n = 0;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		n++;
	if (rc != SQLITE_DONE) {
		fprintf(stderr, "stmt_profile: %s: %s\n", sqlite3_sql(st),
			sqlite3_errmsg(sqlite3_db_handle(st)));
		exit(1);
	}
	sqlite3_reset(st);
	return n;
}

/* One function a statement kind; each body differs so that none is folded. */
NOINLINE static int s_mark(sqlite3_stmt *st) { return run(st) + 0; }
NOINLINE static int s_payee(sqlite3_stmt *st) { return sqlite3_step(st) == SQLITE_ROW ? 1 : -1; }
NOINLINE static int s_entry(sqlite3_stmt *st) { return run(st) + 2; }
NOINLINE static int s_move(sqlite3_stmt *st) { return run(st) + 3; }
NOINLINE static int s_close(sqlite3_stmt *st) { return run(st) + 4; }
NOINLINE static int s_complete(sqlite3_stmt *st) { return run(st) + 5; }
NOINLINE static int s_txctl(sqlite3_stmt *st) { return run(st) + 6; }

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *b;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
		fclose(f);
		return NULL;
	}
	b = malloc((size_t)n + 1);
	if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
		free(b);
		b = NULL;
	}
	if (b)
		b[n] = '\0';
	fclose(f);
	return b;
}

static void changes1(struct prog *p, const char *what)
{
	if (sqlite3_changes(p->db) != 1)
		die(p, what);
}

struct job {
	int64_t id, attempts, updated_at, amount;
	char event_id[128], wallet[64];
};

int main(int argc, char **argv)
{
	struct prog p = { 0 };
	sqlite3_stmt *begin, *commit, *sp, *rel, *mark, *payee, *entry, *move, *close, *complete, *jobs;
	struct job *j;
	int max, n = 0;
	int64_t now = 4102444800000; /* 2100-01-01: after every job's updated_at */

	if (argc < 3) {
		fprintf(stderr, "usage: stmt_profile STORE.db JOBS [SCHEMA_CHANGE.sql]\n");
		return 2;
	}
	max = (int)strtol(argv[2], NULL, 10);
	/* As the server configures SQLite (store_sqlite.c). */
	sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	sqlite3_config(SQLITE_CONFIG_STMTJRNL_SPILL, 4 << 20);
	if (sqlite3_open_v2(argv[1], &p.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK)
		die(&p, "open");
	if (sqlite3_exec(p.db, "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL",
			 NULL, NULL, NULL) != SQLITE_OK)
		die(&p, "pragmas");
	if (argc > 3) {
		/* As the migration runner: foreign keys off around it. */
		char *sql = slurp(argv[3]);

		if (!sql)
			die(&p, argv[3]);
		if (sqlite3_exec(p.db, "PRAGMA foreign_keys = OFF", NULL, NULL, NULL) ||
		    sqlite3_exec(p.db, sql, NULL, NULL, NULL) ||
		    sqlite3_exec(p.db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL))
			die(&p, "schema change");
		free(sql);
	}
	if (max <= 0)
		return 0;
	j = calloc((size_t)max, sizeof(*j));
	if (!j)
		die(&p, "out of memory");
	jobs = prep(&p, "SELECT id, attempts, updated_at, json_extract(payload, '$.event_id'),"
			" json_extract(payload, '$.wallet'), json_extract(payload, '$.amount') FROM jobs"
			" WHERE state = 'available' AND kind = 'webhook.process'"
			" AND json_extract(payload, '$.provider') = 'standard' ORDER BY id");
	while (n < max && sqlite3_step(jobs) == SQLITE_ROW) {
		j[n].id = sqlite3_column_int64(jobs, 0);
		j[n].attempts = sqlite3_column_int64(jobs, 1);
		j[n].updated_at = sqlite3_column_int64(jobs, 2);
		snprintf(j[n].event_id, sizeof(j[n].event_id), "%s", (const char *)sqlite3_column_text(jobs, 3));
		snprintf(j[n].wallet, sizeof(j[n].wallet), "%s", (const char *)sqlite3_column_text(jobs, 4));
		j[n].amount = sqlite3_column_int64(jobs, 5);
		n++;
	}
	sqlite3_finalize(jobs);

	begin = prep(&p, "BEGIN IMMEDIATE");
	commit = prep(&p, "COMMIT");
	sp = prep(&p, "SAVEPOINT sp1");
	rel = prep(&p, "RELEASE sp1");
	mark = prep(&p, "UPDATE webhook_events SET status = 'processed', ledger_tx_id = ?3, error = NULL,"
			" processed_at = ?4 WHERE provider = ?1 AND event_id = ?2 AND status IN ('stored', 'failed')");
	payee = prep(&p, "SELECT a.id, a.referrer, r.id FROM accounts a"
			 " LEFT JOIN accounts r ON r.wallet = a.referrer WHERE a.wallet = ?1");
	entry = prep(&p, "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES (?1, ?2, ?3, ?4, ?5)");
	move = prep(&p, "UPDATE accounts SET balance = balance + ?2, moved_by = ?3, moved_delta = ?2 WHERE id = ?1");
	close = prep(&p, "INSERT INTO ledger_tx (id, kind, ref, intent_id, hold_id, created_at, client_id,"
			 " description, metadata, balances_moved) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1)");
	complete = prep(&p, "UPDATE jobs SET state = 'completed', finished_at = ?4, updated_at = ?4"
			    " WHERE id = ?1 AND state = 'available' AND attempts = ?2 AND updated_at = ?3");

	for (int i = 0; i < n; i++) {
		char tx[40], ref[200], acct[64];
		const char *acc[2];
		static const char *const dir[2] = { "debit", "credit" };

		if (i % 16 == 0) {
			s_txctl(begin);
			s_txctl(sp);
		}
		snprintf(tx, sizeof(tx), "ltx_sp%018x", (unsigned)i);
		snprintf(ref, sizeof(ref), "webhook:standard:%s", j[i].event_id);
		sqlite3_bind_text(mark, 1, "standard", -1, SQLITE_STATIC);
		sqlite3_bind_text(mark, 2, j[i].event_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(mark, 3, tx, -1, SQLITE_STATIC);
		sqlite3_bind_int64(mark, 4, now);
		s_mark(mark);
		changes1(&p, "the mark changed no row");
		sqlite3_bind_text(payee, 1, j[i].wallet, -1, SQLITE_STATIC);
		if (s_payee(payee) != 1)
			die(&p, "unknown wallet");
		snprintf(acct, sizeof(acct), "%s", (const char *)sqlite3_column_text(payee, 0));
		if (sqlite3_column_type(payee, 1) != SQLITE_NULL)
			die(&p, "a wallet with a referrer (the program posts two entries only)");
		sqlite3_reset(payee);
		acc[0] = "revenue";
		acc[1] = acct;
		for (int k = 0; k < 2; k++) {
			sqlite3_bind_text(entry, 1, tx, -1, SQLITE_STATIC);
			sqlite3_bind_text(entry, 2, acc[k], -1, SQLITE_STATIC);
			sqlite3_bind_text(entry, 3, dir[k], -1, SQLITE_STATIC);
			sqlite3_bind_int64(entry, 4, j[i].amount);
			sqlite3_bind_int64(entry, 5, now);
			s_entry(entry);
		}
		for (int k = 0; k < 2; k++) {
			int64_t delta = k ? j[i].amount : -j[i].amount;

			sqlite3_bind_text(move, 1, acc[k], -1, SQLITE_STATIC);
			sqlite3_bind_int64(move, 2, delta);
			sqlite3_bind_text(move, 3, tx, -1, SQLITE_STATIC);
			s_move(move);
			changes1(&p, "a move changed no row");
		}
		sqlite3_bind_text(close, 1, tx, -1, SQLITE_STATIC);
		sqlite3_bind_text(close, 2, "webhook_payment", -1, SQLITE_STATIC);
		sqlite3_bind_text(close, 3, ref, -1, SQLITE_STATIC);
		for (int k = 4; k <= 9; k++)
			sqlite3_bind_null(close, k);
		sqlite3_bind_int64(close, 6, now);
		s_close(close);
		sqlite3_bind_int64(complete, 1, j[i].id);
		sqlite3_bind_int64(complete, 2, j[i].attempts);
		sqlite3_bind_int64(complete, 3, j[i].updated_at);
		sqlite3_bind_int64(complete, 4, now);
		s_complete(complete);
		changes1(&p, "the completion changed no row");
		if (i % 16 == 15 || i == n - 1) {
			s_txctl(rel);
			s_txctl(commit);
		}
	}
	printf("%d jobs\n", n);
	free(j);
	return 0;
}
