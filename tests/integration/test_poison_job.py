"""A job that crashes the process every time ends in the DLQ (embedded mode).

In embedded mode webhook.process jobs are never leased (queue.md, "In-store
jobs: no lease in embedded mode"): a process that died in one left it
`available` with no attempt counted, so a job whose handler crashes the
process every time crash-looped for ever, and under a supervisor
(Restart=always) the server was down for everyone. The crash guard
(src/jobguard.h: each worker names the unleased job it is working on in a
file next to the database) counts such a job an attempt at the next start,
so after max_attempts crashes it is dead.

test_poison_job_ends_in_the_dlq needs the faultsim build (make faultsim):
its webhook_process_job() wrapper abort()s the process for a job whose
payload names SETTLED_FAULTSIM_ABORT_JOB (tests/faultsim/faultsim.c). The
test restarts the server after each crash, as a supervisor would. The
other tests run on any build.
"""

import http.client
import os
import signal
import struct

import pytest

from conftest import (ADMIN_TOKEN, account_of, backend_name, new_key, new_wallet, parse_metrics,
                      find_samples, payment_delivery, store_rows, store_scalar, wait_until)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
GUARD_ERROR = "process died while running this job"
MAX_ATTEMPTS = 3

embedded_only = pytest.mark.skipif(backend_name() != "sqlite",
                                   reason="embedded mode only: PostgreSQL leases every job")


def pay(srv, wallet, amount):
    path, body, headers = payment_delivery(srv, wallet, amount)
    r = srv.post(path, body=body, headers=headers)
    assert r.status == 200, r


def webhook_jobs(srv):
    return store_rows(srv, "SELECT id, state, attempts, coalesce(last_error, ''), payload"
                           " FROM jobs WHERE kind = 'webhook.process' ORDER BY id")


def supervised_start(srv):
    """Starts srv as a supervisor would: False when it died of SIGABRT
    before it was listening (the harness's start fails then)."""
    try:
        srv.start()
        return True
    except pytest.fail.Exception:
        if srv.proc.poll() == -signal.SIGABRT:
            return False
        raise


def reconciled(srv):
    r = srv.post("/api/admin/reconciliation", headers=ADMIN, key=new_key("rec"))
    assert r.status in (200, 201), r
    return r.json["ok"] is True


@embedded_only
@pytest.mark.skipif(not os.environ.get("SETTLED_FAULTSIM"),
                    reason="needs the faultsim build (make faultsim)")
def test_poison_job_ends_in_the_dlq(start_server):
    poison_wallet = new_wallet()
    # One worker: the job in its hands when the process dies is the poison
    # job, so the test can say which jobs are counted (with more workers,
    # a job another worker was running at that instant is counted one
    # attempt too, as a swept lease would be; queue.md).
    env = {"SETTLED_FAULTSIM_ABORT_JOB": poison_wallet, "SETTLED_WORKERS": "0",
           "SETTLED_JOB_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
           "SETTLED_JOB_BASE_DELAY": "10ms", "SETTLED_JOB_MAX_DELAY": "50ms"}
    srv = start_server(env=env)
    wallets = [new_wallet() for _ in range(8)]
    for w in wallets + [poison_wallet]:
        assert srv.register(w).status == 201
    # Queued with no worker running (the first run of the poison job ends
    # the process): payments before the poison one and after it, so that
    # it shares its batches with them; they must neither be counted nor
    # lost.
    for i, w in enumerate(wallets):
        pay(srv, w, 100 + i)
    pay(srv, poison_wallet, 7)
    for w in wallets:
        for k in range(5):
            pay(srv, w, 1000 + k)
    assert srv.stop() == 0
    # One worker: the job in its hands when the process dies is the poison
    # job, so the test can say which jobs are counted (with more workers,
    # a job another worker was running at that instant is counted one
    # attempt too, as a swept lease would be; queue.md).
    srv.env["SETTLED_WORKERS"] = "1"
    crashes = 0
    up = supervised_start(srv)
    while True:
        # Either the poison job kills this process (maybe before it was
        # listening: the workers start first), or (its attempts spent at
        # this start) it is dead and the server stays up.
        def settled_or_crashed():
            if not srv.running:
                return "crashed"
            states = [row[1] for row in webhook_jobs(srv)]
            if "available" not in states and "running" not in states:
                return "settled"
            return None
        outcome = wait_until(settled_or_crashed, timeout=60,
                             what="a crash or a drained queue") if up else "crashed"
        if outcome == "settled":
            break
        assert srv.proc.returncode == -signal.SIGABRT, srv.proc.returncode
        crashes += 1
        assert crashes <= MAX_ATTEMPTS, "the poison job is crash-looping the server"
        up = supervised_start(srv)  # the supervisor's restart

    # Exactly max_attempts crashes: each start after one counted an attempt,
    # and the one after the last put the job in the DLQ.
    assert crashes == MAX_ATTEMPTS, crashes
    jobs = webhook_jobs(srv)
    poison = [j for j in jobs if poison_wallet in j[4]]
    assert len(poison) == 1, poison
    pid, state, attempts, error, _ = poison[0]
    assert (state, int(attempts), error) == ("dead", MAX_ATTEMPTS, GUARD_ERROR), poison[0]
    # Its event is marked failed with the same text, as a handler's last
    # failure marks it; the others are processed.
    events = store_rows(srv, "SELECT status, coalesce(error, ''), CAST(body AS TEXT)"
                             " FROM webhook_events")
    assert [(st, err) for st, err, body in events if poison_wallet in body] == \
        [("failed", GUARD_ERROR)], events
    assert sorted(st for st, _, body in events if poison_wallet not in body) == \
        ["processed"] * len(wallets) * 6
    # Every other job completed, none was counted an attempt.
    others = [j for j in jobs if j[0] != pid]
    assert len(others) == len(wallets) * 6, len(others)
    assert all(j[1] == "completed" and j[2] == "0" for j in others), others

    # The DLQ through the admin API, and the gauge.
    r = srv.get("/api/admin/dlq", headers=ADMIN)
    assert r.status == 200, r
    assert [(str(j["id"]), j["last_error"]) for j in r.json["data"]] == [(pid, GUARD_ERROR)], r.json
    wait_until(lambda: find_samples(parse_metrics(srv.metrics()), "settled_dlq_jobs")[0][2] == 1,
               timeout=10, what="settled_dlq_jobs == 1")
    srv.wait_for_log(lambda rec: rec.get("msg") == "job failed for good: moved to the dead-letter"
                     " queue" and rec.get("job_id") == int(pid) and rec.get("error") == GUARD_ERROR,
                     what="the dead-letter log line")

    # Exactly once: each wallet got each payment once, the poison one none.
    for i, w in enumerate(wallets):
        assert account_of(srv, w)["balance"] == 100 + i + sum(1000 + k for k in range(5)), w
    assert account_of(srv, poison_wallet)["balance"] == 0
    assert store_scalar(srv, "SELECT count(*) FROM ledger_tx WHERE ref LIKE 'webhook:%'") == \
        len(wallets) * 6
    wait_until(lambda: reconciled(srv), timeout=30, what="a clean reconciliation")

    # An operator retry runs it again (and it crashes again: the bug is
    # still there); the next start counts that attempt too, before any
    # worker runs (here none: a start without workers still counts).
    # The retry's commit wakes the worker, which can run the job and abort
    # the process before the answer is written (seen under load): then the
    # connection closes unanswered. That the retry committed either way is
    # what the restart below shows (available again, its run counted).
    try:
        r = srv.post(f"/api/admin/dlq/{pid}/retry", headers=ADMIN)
        assert r.status == 200, r
    except (http.client.RemoteDisconnected, ConnectionError):
        pass
    wait_until(lambda: not srv.running, timeout=30, what="the retried poison job's crash")
    assert srv.proc.returncode == -signal.SIGABRT, srv.proc.returncode
    srv.env["SETTLED_WORKERS"] = "0"
    srv.start()
    assert [j[1:4] for j in webhook_jobs(srv) if j[0] == pid] == [("available", "1", GUARD_ERROR)]


def guard_path(srv):
    return srv.dir / "settled.db-inflight"


@embedded_only
def test_a_clean_stop_counts_nothing(start_server):
    """Jobs in flight at a SIGTERM finish or are handed back: nothing is
    counted at the next start, and the guard file is left empty."""
    srv = start_server(env={"SETTLED_WORKERS": "2"})
    wallets = [new_wallet() for _ in range(4)]
    for w in wallets:
        assert srv.register(w).status == 201
    for k in range(60):
        pay(srv, wallets[k % 4], 1 + k)
    # Stopped while the jobs drain (some may be done, some not yet).
    assert srv.stop() == 0
    assert guard_path(srv).exists()
    assert guard_path(srv).stat().st_size == 0
    srv.start()
    wait_until(lambda: all(j[1] == "completed" for j in webhook_jobs(srv)), timeout=30,
               what="every webhook job completed")
    assert [j for j in webhook_jobs(srv) if j[2] != "0" or j[3]] == []
    total = sum(1 + k for k in range(60))
    assert sum(account_of(srv, w)["balance"] for w in wallets) == total
    assert not any(rec and rec.get("error") == GUARD_ERROR for rec in srv.log_records())


@embedded_only
def test_kills_count_nothing_for_committed_jobs(start_server):
    """SIGKILLs while webhook jobs drain (what make chaos does): a job
    whose effect committed is completed, and nothing is counted for it;
    every payment is credited exactly once whatever was in flight."""
    srv = start_server(env={"SETTLED_WORKERS": "4", "SETTLED_JOB_BASE_DELAY": "10ms",
                            "SETTLED_JOB_MAX_DELAY": "50ms"})
    wallets = [new_wallet() for _ in range(8)]
    for w in wallets:
        assert srv.register(w).status == 201
    total = 0
    for rnd in range(4):
        for k in range(100):
            pay(srv, wallets[k % 8], 1 + k)
            total += 1 + k
        srv.kill()
        srv.start()
    wait_until(lambda: all(j[1] == "completed" for j in webhook_jobs(srv)), timeout=60,
               what="every webhook job completed")
    assert sum(account_of(srv, w)["balance"] for w in wallets) == total
    # At most one attempt a kill and a worker can be counted (a job in a
    # worker's hands at the kill), and no job is counted to death.
    counted = store_scalar(srv, "SELECT coalesce(sum(attempts), 0) FROM jobs"
                                " WHERE kind = 'webhook.process'")
    assert counted <= 4 * 4, counted
    assert store_scalar(srv, "SELECT count(*) FROM jobs WHERE state = 'dead'") == 0
    wait_until(lambda: reconciled(srv), timeout=30, what="a clean reconciliation")


# The guard file's bytes as src/jobguard.c writes them (a test of the
# format: the server must read these).
M64 = (1 << 64) - 1
CHECK_SEED = 0x5e771ed1f11e0001


def _mix(x):
    x = (x + 0x9e3779b97f4a7c15) & M64
    x = ((x ^ (x >> 30)) * 0xbf58476d1ce4e5b9) & M64
    x = ((x ^ (x >> 27)) * 0x94d049bb133111eb) & M64
    return x ^ (x >> 31)


def guard_bytes(marks):
    """A guard file of len(marks) slots; marks[i] = (id, attempts,
    updated_at) or None (empty)."""
    n = len(marks)
    out = b"settled-inflight" + struct.pack("<IIII", 1, 32, n, 0)
    out += struct.pack("<Q", _mix(_mix(_mix(CHECK_SEED ^ 1) ^ 32) ^ n))
    out += bytes(64 - len(out))
    for i, m in enumerate(marks):
        if m is None:
            out += bytes(32)
            continue
        job_id, attempts, updated_at = m
        h = _mix(CHECK_SEED ^ i)
        for v in (job_id, updated_at, attempts):
            h = _mix(h ^ (v & M64))
        out += struct.pack("<qqqQ", job_id, updated_at, attempts, h or 1)
    return out


@embedded_only
def test_only_a_job_still_as_it_was_marked_is_counted(start_server):
    """The start reads the guard and counts an attempt only for a job still
    available with the fence it was marked with: not for one whose effect
    committed after the mark (a kill between the commit and the clear),
    nor for one that moved since (its failure written, a DLQ retry)."""
    srv = start_server(env={"SETTLED_WORKERS": "1"})
    wallets = [new_wallet() for _ in range(3)]
    for w in wallets:
        assert srv.register(w).status == 201
    pay(srv, wallets[0], 10)
    wait_until(lambda: account_of(srv, wallets[0])["balance"] == 10, timeout=30,
               what="the first payment")
    assert srv.stop() == 0
    srv.env["SETTLED_WORKERS"] = "0"
    srv.start()
    pay(srv, wallets[1], 20)
    pay(srv, wallets[2], 30)
    assert srv.stop() == 0
    rows = store_rows(srv, "SELECT id, state, attempts, created_at, updated_at FROM jobs"
                           " WHERE kind = 'webhook.process' ORDER BY id")
    (done, s0, _, created0, _), (b, s1, a1, _, u1), (c, s2, a2, _, u2) = rows
    assert (s0, s1, s2) == ("completed", "available", "available"), rows
    # The completed job as a worker marked it before its effect committed
    # (enqueued: updated_at = created_at), b as it is, c with a stale fence.
    guard_path(srv).write_bytes(guard_bytes([
        (int(done), 0, int(created0)), None, (int(b), int(a1), int(u1)),
        (int(c), int(a2), int(u2) - 1)]))
    srv.start()
    after = {r[0]: r[1:] for r in webhook_jobs(srv)}
    assert after[done][:3] == ("completed", "0", ""), after[done]
    assert after[b][:3] == ("available", "1", GUARD_ERROR), after[b]
    assert after[c][:3] == ("available", "0", ""), after[c]
    srv.wait_for_log(lambda rec: rec.get("msg") == "job failed: retry scheduled"
                     and rec.get("job_id") == int(b) and rec.get("error") == GUARD_ERROR,
                     what="the retry log line")
    assert guard_path(srv).stat().st_size == 0  # read, counted, emptied
    # Counted once: the next start finds nothing.
    assert srv.stop() == 0
    srv.env["SETTLED_WORKERS"] = "1"
    srv.start()
    wait_until(lambda: all(j[1] == "completed" for j in webhook_jobs(srv)), timeout=30,
               what="every webhook job completed")
    assert [(j[0], j[2]) for j in webhook_jobs(srv)] == [(done, "0"), (b, "1"), (c, "0")]
    assert [account_of(srv, w)["balance"] for w in wallets] == [10, 20, 30]


@embedded_only
@pytest.mark.parametrize("content", [
    b"",
    b"garbage that is not a guard file",
    b"settled-inflight" + b"\x01\x00\x00\x00",           # a truncated header
    os.urandom(64 + 32 * 4),
])
def test_a_bad_guard_file_never_blocks_a_start(start_server, content):
    """A guard file that is empty, short or garbage counts nothing and the
    server starts."""
    srv = start_server(env={"SETTLED_WORKERS": "1"})
    w = new_wallet()
    assert srv.register(w).status == 201
    assert srv.stop() == 0
    guard_path(srv).write_bytes(content)
    srv.start()
    pay(srv, w, 5)
    wait_until(lambda: account_of(srv, w)["balance"] == 5, timeout=30, what="the payment")
    assert [j for j in webhook_jobs(srv) if j[2] != "0"] == []


@pytest.mark.skipif(backend_name() != "pg", reason="scale-out mode")
def test_postgresql_keeps_leases_and_has_no_guard(start_server):
    """Scale-out mode is unchanged: every job is leased there (other
    instances share the table), so no guard file is made or read."""
    srv = start_server(env={"SETTLED_WORKERS": "2"})
    w = new_wallet()
    assert srv.register(w).status == 201
    pay(srv, w, 9)
    wait_until(lambda: account_of(srv, w)["balance"] == 9, timeout=30, what="the payment")
    assert list(srv.dir.glob("*" + "-inflight")) == []
    assert not any("crash guard" in (rec or {}).get("msg", "") for rec in srv.log_records())
