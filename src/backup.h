/* backup.h — `settled backup PATH` and `settled restore PATH` for the
 * embedded (SQLite) store.
 *
 *   settled backup PATH [--db FILE]           a consistent copy of the store,
 *                                             taken while the server runs
 *   settled restore PATH [--db FILE] [--force] the copy back into the store,
 *                                             with the server stopped
 *
 * The store is found like the server finds it (SETTLED_DB or --db; every
 * other flag and variable is accepted and ignored). With
 * SETTLED_DATABASE_URL set both refuse and point at the PostgreSQL runbook
 * (docs/runbooks/backup-restore.md): pg_dump does that job there.
 *
 * Why the online backup API, in one step: it copies the database's pages
 * inside a single read transaction of its own connection. In WAL mode a
 * reader never blocks the writer (the server's checkpoints are PASSIVE, so
 * they skip the frames the backup still reads rather than wait for it), and
 * the copy is the database as of the moment that transaction began: every
 * write acknowledged before then is in it, none half-written. An
 * incremental backup (many small steps) would restart whenever the server
 * commits between two steps, so under load it might never finish; VACUUM
 * INTO gives the same snapshot but rebuilds every table and index, several
 * times the work for the same result. */
#ifndef SETTLED_BACKUP_H
#define SETTLED_BACKUP_H

/* argv[1] is "backup" or "restore". Returns the process exit code: 0 done,
 * 1 failed (a one-line reason on stderr), 2 bad usage. */
int backup_main(int argc, char **argv, char **envp);

#endif
