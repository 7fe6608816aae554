"""Backups that are proven to restore, and `settled --version`.

The main test writes under load (many concurrent registrations and
webhook-funded credits), takes a backup in the middle of it (`settled
backup` on SQLite, `pg_dump` on PostgreSQL), restores it into a fresh store
(`settled restore` / `pg_restore` into a new database), starts a server on
it and runs reconciliation: it must balance, and every write acknowledged
before the backup began must be there. It prints its figures (rows written,
what overlapped the backup, rows restored, the reconciliation result).

The rest are the commands' refusals: an existing backup path, a restore over
an existing store without --force or while the server has it open, and
PostgreSQL mode pointing at the runbook."""

import json
import os
import re
import sqlite3
import subprocess
import threading
import time
import urllib.parse

import pytest

from conftest import (ADMIN_TOKEN, BIN, ROOT, backend_name, new_wallet, pg_admin_url, pg_drop_database,
                      pg_empty_database, pg_url_with_db, psql, run_settled, wait_until)
from test_webhooks import ENV as WEBHOOK_ENV, stripe

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SQLITE_ONLY = pytest.mark.skipif(backend_name() != "sqlite", reason="the embedded store's commands")

LOAD_THREADS = 8
LOAD_BEFORE = 2.0    # seconds of writes before the backup starts
LOAD_AFTER = 1.0     # seconds of writes after it ends
CREDIT = 500         # cents per webhook (stripe amount)


class Load:
    """LOAD_THREADS writers, each registering new wallets and crediting its
    own through signed Stripe webhooks, until stopped. Each acknowledged
    write is recorded with the monotonic times it was sent and answered."""

    def __init__(self, server):
        self.server = server
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acks = []        # (kind, id, sent, answered)
        self.failures = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(LOAD_THREADS)]

    def _record(self, kind, ident, sent, resp, want):
        answered = time.monotonic()
        with self.lock:
            if resp.status in want:
                self.acks.append((kind, ident, sent, answered))
            else:
                self.failures.append((kind, ident, resp.status, resp.body[:200]))

    def _run(self, i):
        mine = []
        n = 0
        while not self.stop.is_set():
            n += 1
            if n % 2 or not mine:
                wallet = new_wallet()
                sent = time.monotonic()
                r = self.server.register(wallet, key=f"load-{i}-{n}")
                self._record("register", wallet, sent, r, (201,))
                if r.status == 201:
                    mine.append(wallet)
            else:
                d = stripe(mine[n % len(mine)], amount=CREDIT)
                sent = time.monotonic()
                r = d.send(self.server)
                self._record("webhook", d.event_id, sent, r, (200, 202))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def reconcile(server):
    r = server.post("/api/admin/reconciliation", headers=ADMIN)
    assert r.status == 200, r
    return r.json


def jobs_idle(server):
    jobs = reconcile(server)["counts"]["jobs"]
    return jobs["available"] == 0 and jobs["running"] == 0


# ---- what a restored store holds, per backend

def sqlite_rows(path):
    con = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True)
    try:
        wallets = {r[0] for r in con.execute("SELECT wallet FROM accounts WHERE wallet IS NOT NULL")}
        events = {r[0] for r in con.execute("SELECT event_id FROM webhook_events")}
        return wallets, events
    finally:
        con.close()


def pg_rows(url):
    wallets = set(psql(url, "SELECT wallet FROM accounts WHERE wallet IS NOT NULL").split())
    events = set(psql(url, "SELECT event_id FROM webhook_events").split())
    return wallets, events


def take_backup_sqlite(server, tmp_path):
    """settled backup of the running server's store; the restore target is
    a new file. Returns (restore-target args for the server, rows reader)."""
    backup = tmp_path / "backup.db"
    rc, out, err = run_settled(["backup", str(backup), "--db", str(server.backend.path)],
                               timeout=120)
    assert rc == 0, err
    assert re.match(r"settled: backup of .* written to .*: \d+ pages, \d+ bytes", out), out
    return backup, out.strip()


def restore_sqlite(backup, tmp_path):
    target = tmp_path / "restored" / "settled.db"
    target.parent.mkdir()
    rc, out, err = run_settled(["restore", str(backup), "--db", str(target)], timeout=120)
    assert rc == 0, err
    return {"args": ["--db", str(target)]}, lambda: sqlite_rows(target), out.strip(), None


def take_backup_pg(server, tmp_path):
    """pg_dump (custom format) of the server's database: one REPEATABLE READ
    snapshot, taken while the load runs."""
    dump = tmp_path / "settled.dump"
    p = subprocess.run(["pg_dump", "-Fc", "--no-owner", "--no-privileges", "-f", str(dump),
                        "-d", server.backend.url], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return dump, f"pg_dump -Fc: {dump.stat().st_size} bytes"


def restore_pg(dump, tmp_path):
    db = pg_empty_database()
    url = pg_url_with_db(pg_admin_url(), db)
    p = subprocess.run(["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error",
                        "-d", url, str(dump)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return ({"env": {"SETTLED_DATABASE_URL": url}}, lambda: pg_rows(url),
            f"pg_restore into database {db}", db)


def test_backup_under_load_restores_and_reconciles(start_server, tmp_path):
    pg = backend_name() == "pg"
    server = start_server(env=WEBHOOK_ENV)
    with Load(server) as load:
        time.sleep(LOAD_BEFORE)
        # A write acknowledged before the backup begins (asserted below):
        # waited for, not assumed from the sleep; under ASan beside the
        # other suites one synced write took 1.9 s.
        wait_until(lambda: load.acks or load.failures, timeout=60,
                   what="a write acknowledged before the backup")
        backup_start = time.monotonic()
        backup, how = (take_backup_pg if pg else take_backup_sqlite)(server, tmp_path)
        backup_end = time.monotonic()
        time.sleep(LOAD_AFTER)
    assert not load.failures, load.failures[:5]
    acks = load.acks
    before = [a for a in acks if a[3] < backup_start]
    overlapping = [a for a in acks if a[2] < backup_end and a[3] > backup_start]
    assert before, "no write was acknowledged before the backup"
    assert overlapping, "no write was in flight while the backup ran: it was not under load"

    restored_server_cfg, rows, restored_how, pg_db = (restore_pg if pg else restore_sqlite)(
        backup, tmp_path)
    restored = None
    try:
        restored = start_server(env={**WEBHOOK_ENV, **restored_server_cfg.get("env", {})},
                                args=restored_server_cfg.get("args"))
        wallets, events = rows()
        acked_wallets = {a[1] for a in acks if a[0] == "register"}
        acked_events = {a[1] for a in acks if a[0] == "webhook"}
        missing_w = {a[1] for a in before if a[0] == "register"} - wallets
        missing_e = {a[1] for a in before if a[0] == "webhook"} - events
        assert not missing_w, f"{len(missing_w)} acknowledged registrations missing"
        assert not missing_e, f"{len(missing_e)} acknowledged webhook events missing"
        # Nothing in the copy that the server never acknowledged.
        assert wallets <= acked_wallets and events <= acked_events

        first = reconcile(restored)
        assert first["ok"] is True and first["problems"] == 0, first
        # The webhooks stored before the backup but not yet credited are
        # jobs in the copy: the restored server runs them, and still balances.
        wait_until(lambda: jobs_idle(restored), timeout=60, what="the restored jobs to finish")
        final = reconcile(restored)
        assert final["ok"] is True and final["imbalance"] == "0", final
        assert final["counts"]["jobs"]["dead"] == 0, final["counts"]

        print(f"\n[{backend_name()}] written under load: {len(acks)} acknowledged writes "
              f"({len(acked_wallets)} registrations, {len(acked_events)} webhook credits) by "
              f"{LOAD_THREADS} threads; {len(before)} acknowledged before the backup began, "
              f"{len(overlapping)} in flight while it ran "
              f"({(backup_end - backup_start) * 1000:.0f} ms); {how}\n"
              f"[{backend_name()}] restored: {restored_how}; {len(wallets)} registrations and "
              f"{len(events)} webhook events in the copy (all {len(before)} acknowledged before "
              f"the backup present); reconciliation: ok={final['ok']} problems={final['problems']} "
              f"imbalance={final['imbalance']} transactions={final['counts']['transactions']} "
              f"accounts={final['counts']['accounts']}")
    finally:
        if pg_db:
            # Its server first: dropping the database would cut it off.
            if restored is not None and restored.running:
                assert restored.stop() == 0
            pg_drop_database(pg_admin_url(), pg_db)


# ---- the commands' refusals (embedded store)

@SQLITE_ONLY
def test_backup_refuses_an_existing_path(server, tmp_path):
    existing = tmp_path / "taken.db"
    existing.write_bytes(b"not mine")
    rc, out, err = run_settled(["backup", str(existing), "--db", str(server.backend.path)])
    assert rc == 1 and "exists" in err, err
    assert existing.read_bytes() == b"not mine"


@SQLITE_ONLY
def test_restore_refuses_a_running_store_and_an_existing_one(server, tmp_path):
    backup = tmp_path / "b.db"
    assert run_settled(["backup", str(backup), "--db", str(server.backend.path)])[0] == 0
    server.register()
    with server.unchanged():
        rc, _, err = run_settled(["restore", str(backup), "--db", str(server.backend.path)])
        assert rc == 1 and "--force" in err, err
        rc, _, err = run_settled(["restore", str(backup), "--db", str(server.backend.path),
                                  "--force"])
        assert rc == 1 and "in use" in err, err
    # Stopped, --force replaces it: the registration after the backup is gone.
    before = server.count("accounts")
    assert server.stop() == 0
    # The old store's job crash guard (src/jobguard.h) goes with it: what
    # it names says nothing about the restored rows.
    inflight = server.backend.path.parent / (server.backend.path.name + "-inflight")
    inflight.write_bytes(b"the old store's")
    rc, out, err = run_settled(["restore", str(backup), "--db", str(server.backend.path), "--force"])
    assert rc == 0 and "replaced the previous store" in out, err
    assert not inflight.exists()
    server.start()
    assert server.count("accounts") == before - 1
    assert reconcile(server)["ok"] is True


@SQLITE_ONLY
def test_restore_refuses_what_is_not_a_backup(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"SQLite format 3\0" + b"x" * 5000)
    target = tmp_path / "new.db"
    rc, _, err = run_settled(["restore", str(junk), "--db", str(target)])
    assert rc == 1 and err.startswith("settled restore:"), err
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE t (x)").connection.close()
    rc, _, err = run_settled(["restore", str(empty), "--db", str(target)])
    assert rc == 1 and "not a settled store" in err, err
    assert not target.exists()


def test_backup_commands_in_postgres_mode_point_at_the_runbook(tmp_path):
    env = {"SETTLED_DATABASE_URL": "postgres://nobody@127.0.0.1:1/none"}
    for cmd in ("backup", "restore"):
        rc, _, err = run_settled([cmd, str(tmp_path / "x")], env=env)
        assert rc == 2 and "pg_dump" in err and "backup-restore.md" in err, err
    rc, _, err = run_settled(["backup"])
    assert rc == 2 and "usage: settled backup PATH" in err, err


def test_version_prints_version_and_commit():
    rc, out, err = run_settled(["--version"])
    assert rc == 0, err
    assert re.fullmatch(r"settled \d+\.\d+\.\d+\S* \(commit ([0-9a-f]{7,40}(-dirty)?|unknown)\)\n",
                        out), out
    assert os.access(BIN, os.X_OK)


# ---- settled migrate (both stores)

def applied_migrations(text):
    return [json.loads(ln)["msg"].removeprefix("applied migration ")
            for ln in text.splitlines() if '"applied migration ' in ln]


def test_migrate_applies_each_migration_once_and_a_server_starts_on_it(start_server, tmp_path):
    """`settled migrate` brings an empty store to the binary's schema and
    exits; run again it applies nothing; a server started on the migrated
    store applies nothing either and serves. On PostgreSQL a server started
    on a second empty database migrates it itself (the test suite's servers
    start on copies of a migrated database, so this is where migrating at
    start is covered there)."""
    pg = backend_name() == "pg"
    names = sorted(f.removesuffix(".sql")
                   for f in os.listdir(ROOT / "migrations" / backend_name()) if f.endswith(".sql"))
    assert len(names) >= 8
    if pg:
        dbs = [pg_empty_database(), pg_empty_database()]
        urls = [pg_url_with_db(pg_admin_url(), db) for db in dbs]
        where = [({"SETTLED_DATABASE_URL": u}, []) for u in urls]
        versions = [lambda u=u: int(psql(u, "SELECT count(*) FROM schema_version")) for u in urls]
    else:
        paths = [tmp_path / "a.db", tmp_path / "b.db"]
        where = [({}, ["--db", str(p)]) for p in paths]
        versions = [lambda p=p: sqlite3.connect(p).execute(
            "SELECT count(*) FROM schema_version").fetchone()[0] for p in paths]
    servers = []
    try:
        env, args = where[0]
        rc, out, err = run_settled(["migrate", *args], env=env)
        assert rc == 0, err
        assert applied_migrations(out) == names, out
        assert versions[0]() == len(names)
        rc, out, err = run_settled(["migrate", *args], env=env)
        assert rc == 0 and applied_migrations(out) == [], out + err

        for (env, args), migrated in zip(where, (False, True)):
            srv = start_server(env=env, args=args)
            servers.append(srv)
            assert srv.get("/health/ready").status == 200
            assert srv.register(new_wallet()).status == 201
            log = srv.stdout_path.read_text()
            assert applied_migrations(log) == (names if migrated else []), log[-2000:]
        assert versions[1]() == len(names)
    finally:
        if pg:
            for srv in servers:
                if srv.running:
                    assert srv.stop() == 0
            for db in dbs:
                pg_drop_database(pg_admin_url(), db)


def test_migrate_refuses_a_bad_flag_and_an_unreachable_store(tmp_path):
    rc, out, _ = run_settled(["--help"])
    assert rc == 0 and "  migrate [--db FILE]" in out, out
    rc, _, err = run_settled(["migrate", "--no-such-flag"])
    assert rc == 2 and err.startswith("settled migrate:"), err
    if backend_name() == "pg":
        env = {"SETTLED_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
        rc, _, err = run_settled(["migrate"], env=env)
    else:
        rc, _, err = run_settled(["migrate", "--db", str(tmp_path / "no" / "such" / "dir.db")])
    assert rc == 1 and err.startswith("settled migrate:"), err
