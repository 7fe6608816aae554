"""One process at a time on an embedded store (src/storelock.h).

Embedded mode assumes it is the only process on its SQLite file: at start
it takes every `running` job back as an orphan of a dead process. A second
server started on the same file must therefore refuse before it touches
anything (no migration, no sweep, no listen), with a message naming the
holder and a non-zero exit, while the first keeps running untouched: here
a payout whose rail call is in flight (its job `running`) when the second
one starts is paid exactly once. The lock dies with its process: after a
SIGKILL a new server starts at once, as after a SIGTERM.

`settled migrate` and `settled restore` take the same lock (they must not
run beside a server, and no server may start while they run); `settled
backup` does not (it reads a snapshot beside the live server). That part
holds the lock file from this test process, as any other holder would.
PostgreSQL mode takes no lock (several instances share one database:
test_multi_instance.py)."""

import fcntl
import os
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import (BAD_OUTPUT, BIN, TIME_FACTOR, backend_name, new_wallet, run_settled, server_environment,
                      store_rows as rows, valgrind_problems, wait_until, wrapped)
from test_payout_http import SECRET, PayoutService
from test_payouts import (approve, assert_ledger_balanced, create_batch, fund, get_batch,
                          new_api_key, start, wait_completed)

pytestmark = pytest.mark.skipif(backend_name() != "sqlite", reason="the embedded store's lock")

IN_USE = "is in use by another process"


def lock_path(db):
    return db.parent / (db.name + "-lock")


def run_second_server(db, workdir, env):
    """A second `settled` on db, in workdir (its own port file). Returns
    (exit code, stdout, stderr, started): started is True when it wrote its
    port file instead of refusing; it is then killed after a moment, long
    enough for its workers to run what its start-up sweep took back."""
    workdir.mkdir(exist_ok=True)
    port_file = workdir / "port"
    with tempfile.TemporaryDirectory(prefix="settled-run-") as log_dir:
        p = subprocess.Popen(
            wrapped([BIN, "--listen", "127.0.0.1:0", "--port-file", str(port_file),
                     "--db", str(db)], log_dir),
            env=server_environment(env), cwd=workdir, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started = False
        deadline = time.monotonic() + 30 * TIME_FACTOR
        while p.poll() is None and time.monotonic() < deadline:
            if port_file.exists():
                started = True
                time.sleep(3)
                break
            time.sleep(0.02)
        if p.poll() is None:
            p.kill()
        out, err = p.communicate()
        assert not valgrind_problems(log_dir)
    out, err = out.decode(errors="replace"), err.decode(errors="replace")
    for marker in BAD_OUTPUT:   # a sanitizer's report
        assert marker not in out and marker not in err, f"{marker!r} in output:\n{err}\n{out}"
    return p.returncode, out, err, started


@pytest.fixture
def service():
    s = PayoutService()
    yield s
    s.close()


def test_a_second_server_on_the_store_refuses_and_the_first_pays_once(start_server, service,
                                                                       tmp_path):
    # The payout service holds the first call until the test lets it go:
    # meanwhile the payout.confirm job is `running` under the first
    # server's lease, which a second server's start-up sweep would take
    # back and run again (a second rail call).
    gate = threading.Event()
    orig = service.server.RequestHandlerClass.do_POST

    def held(handler):
        gate.wait(120)
        return orig(handler)

    service.server.RequestHandlerClass.do_POST = held
    env = {"SETTLED_SIM_CONFIRM_MS": "0", "SETTLED_PAYOUT_RAIL": "http",
           "SETTLED_PAYOUT_URL": service.url, "SETTLED_PAYOUT_SECRET": SECRET,
           "SETTLED_PAYOUT_TIMEOUT": "60s"}
    first = start(start_server, **env)
    db = first.backend.path
    key = new_api_key(first)
    wallet = new_wallet()
    fund(first, [wallet], 1000)
    r = create_batch(first, key, [(wallet, 250)])
    assert r.status == 201, r
    bid = r.json["id"]
    assert approve(first, bid).status == 200
    wait_until(lambda: rows(first, "SELECT state FROM jobs WHERE kind = 'payout.confirm'")
               == [("running",)], timeout=30, what="the payout's job to be running")
    # (the service counts a call once it is answered; the job is in it now)

    rc, out, err, started = run_second_server(db, tmp_path / "second", env)
    if started:
        gate.set()
        wait_until(lambda: len(service.calls) >= 1, timeout=30, what="the rail calls")
        time.sleep(1)
        pytest.fail(f"a second server started on {db} (exit {rc}); the payout's rail was "
                    f"called {len(service.calls)} times:\n{out[-3000:]}")
    assert rc == 1, f"exit {rc}\n{out}\n{err}"
    refusal = [ln for ln in out.splitlines() if IN_USE in ln]
    assert refusal, out
    assert f"(holder: settled, pid {first.proc.pid} on host " in refusal[0], refusal[0]
    assert str(lock_path(db)) in refusal[0], refusal[0]
    assert '"level":"error"' in refusal[0]
    # Before it touched anything: no migration, no sweep, no listen.
    assert "applied migration" not in out and "took back" not in out, out
    assert "listening on" not in out and not (tmp_path / "second" / "port").exists()

    # The first one is untouched: it answers, its job is still its own
    # (running, no attempt counted), and once the service answers the
    # payout is paid once.
    assert first.get("/healthz").status == 200
    assert rows(first, "SELECT state, attempts FROM jobs WHERE kind = 'payout.confirm'") == [
        ("running", "0")]
    gate.set()
    wait_completed(first, bid)
    assert get_batch(first, bid)["items"][0]["status"] == "SETTLED"
    assert [c[0] for c in service.calls] == [f"{bid}:0"], "the rail was called once"
    assert rows(first, "SELECT state, attempts FROM jobs WHERE kind = 'payout.confirm'") == [
        ("completed", "0")]
    assert_ledger_balanced(first)

    # The lock dies with its process: after a SIGKILL a new server starts at
    # once on the same store (start() fails the test if it exits instead);
    # after a SIGTERM too.
    first.kill()
    first.start()
    assert first.get("/healthz").status == 200
    assert first.stop() == 0
    first.start()
    assert first.get("/health/ready").status == 200
    assert get_batch(first, bid)["items"][0]["status"] == "SETTLED"


def test_migrate_restore_and_a_server_refuse_a_held_store_and_backup_does_not(start_server,
                                                                              tmp_path):
    srv = start_server()
    assert srv.register(new_wallet()).status == 201
    db = srv.backend.path
    backup = tmp_path / "b.db"
    assert srv.stop() == 0

    # Any other process holding the lock file: here this one, through a
    # symlink to the store for the commands (the lock is the real file's).
    alias = tmp_path / "alias.db"
    alias.symlink_to(db)
    fd = os.open(lock_path(db), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        before = srv.snapshot()
        rc, out, err = run_settled(["backup", str(backup), "--db", str(alias)])
        assert rc == 0, err
        rc, _, err = run_settled(["migrate", "--db", str(alias)])
        assert rc == 1 and err.startswith("settled migrate: ") and IN_USE in err, err
        assert str(lock_path(db)) in err and "it has not named itself" in err, err
        rc, _, err = run_settled(["restore", str(backup), "--db", str(alias), "--force"])
        assert rc == 1 and err.startswith("settled restore: ") and IN_USE in err, err
        rc, out, err, started = run_second_server(alias, tmp_path / "second", {})
        assert not started and rc == 1 and IN_USE in out, out + err
        assert srv.snapshot() == before
    finally:
        os.close(fd)

    # Released: each runs.
    rc, _, err = run_settled(["restore", str(backup), "--db", str(alias), "--force"])
    assert rc == 0, err
    rc, _, err = run_settled(["migrate", "--db", str(db)])
    assert rc == 0, err
    srv.start()
    assert srv.count("accounts") == before["accounts"]


def test_the_guard_file_sits_by_the_real_store_like_the_lock(start_server, tmp_path):
    """The job crash guard's `<db>-inflight` (src/jobguard.h) is named as
    the lock, -wal and -shm are: by the database's real file, whatever path
    names it. With a symlinked --db it was made by the link, so a server
    started through the link and one started through the real path kept
    two guard files for one store, and `settled restore` through the link
    left the real one's marks behind."""
    srv = start_server(env={"SETTLED_WORKERS": "1"})
    db = srv.backend.path.resolve()
    assert srv.stop() == 0
    guard = db.parent / (db.name + "-inflight")
    guard.unlink()
    links = tmp_path / "links"
    links.mkdir()
    alias = links / "alias.db"
    alias.symlink_to(db)

    # A server through the link (killed once it listens: its guard stays).
    rc, out, err, started = run_second_server(alias, tmp_path / "via-link", {"SETTLED_WORKERS": "1"})
    assert started, out + err
    assert guard.exists()
    assert list(links.iterdir()) == [alias], list(links.iterdir())
    assert lock_path(db).exists()

    # restore through the link removes that guard file.
    backup = tmp_path / "b.db"
    rc, _, err = run_settled(["backup", str(backup), "--db", str(db)])
    assert rc == 0, err
    rc, _, err = run_settled(["restore", str(backup), "--db", str(alias), "--force"])
    assert rc == 0, err
    assert not guard.exists()
    assert list(links.iterdir()) == [alias], list(links.iterdir())


def test_a_first_start_through_a_dangling_symlink_locks_the_store_it_creates(tmp_path):
    """--db a symlink whose target does not exist yet (a first start: the
    store is created through the link, SQLite following it): the lock is
    taken by the file the store is created as, so a second server started
    by the real path, or by another link, is refused. It was taken by the
    link, and a second server through the real path started beside the
    first on one store."""
    real = tmp_path / "data"
    real.mkdir()
    links = tmp_path / "links"
    links.mkdir()
    db = real / "store.db"
    alias = links / "alias.db"
    alias.symlink_to(os.path.join("..", "data", "store.db"))   # relative, dangling
    other = tmp_path / "other.db"
    other.symlink_to(alias)                                    # a link to the link
    assert not db.exists()

    workdir = tmp_path / "first"
    workdir.mkdir()
    port_file = workdir / "port"
    output = workdir / "output"
    with tempfile.TemporaryDirectory(prefix="settled-run-") as log_dir, open(output, "wb") as log:
        first = subprocess.Popen(
            wrapped([BIN, "--listen", "127.0.0.1:0", "--port-file", str(port_file),
                     "--db", str(alias)], log_dir),
            env=server_environment({}), cwd=workdir, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: port_file.exists() or first.poll() is not None, timeout=60,
                       what="the first server to listen")
            assert first.poll() is None, output.read_text(errors="replace")
            assert db.is_file() and not db.is_symlink()
            assert lock_path(db).exists()
            assert list(links.iterdir()) == [alias], list(links.iterdir())

            for path, name in ((db, "by-path"), (other, "by-other-link")):
                rc, out, err, started = run_second_server(path, tmp_path / name, {})
                assert not started and rc == 1 and IN_USE in out, out + err
                assert str(lock_path(db)) in out, out
            assert first.poll() is None
        finally:
            first.terminate()
            try:
                first.wait(timeout=60 * TIME_FACTOR)
            except subprocess.TimeoutExpired:
                first.kill()
                first.wait()
        assert first.returncode == 0, output.read_text(errors="replace")
        assert not valgrind_problems(log_dir)
        for marker in BAD_OUTPUT:
            assert marker not in output.read_text(errors="replace"), marker
