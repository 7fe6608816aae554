"""Storage I/O errors beneath the server (embedded mode).

Runs against the faultsim build (make faultsim): its SQLite VFS (tests/
faultsim/faultsim.c) fails every write (untouched, or torn: half written) or
fsync of the database and its WAL while the file named by
SETTLED_FAULTSIM_IOERR_FILE says so. Under
a concurrent load of registrations and transfers, I/O errors are turned
on: writes answer 503 store_unavailable (never a 500, never a dropped
connection), reads and liveness keep working, /health/ready is 503 naming
the store, settled_store_write_faults_total{reason="io_error"} counts the
failing batches. Turned off, writes resume without a restart. Afterwards
every acknowledged write is there exactly once, and every refused one left
nothing behind: retried with its Idempotency-Key it runs afresh (MISS) and
lands once. Reconciliation is clean.

Reads too: the "read" mode fails the read connections' reads of the database
file; a GET then answers 503 store_unavailable, is logged, writes nothing,
and works again once the storage does.

And a power cut: the "powercut" mode (with SETTLED_FAULTSIM_POWERCUT set at
start) undoes every write to the database and its WAL that no completed
fsync covered and ends the process; started again, every acknowledged
write is there.
"""

import os
import re
import threading
import time

import pytest

from conftest import ADMIN_TOKEN, assert_error, backend_name, new_key, new_wallet, wait_until

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

pytestmark = [
    pytest.mark.skipif(not os.environ.get("SETTLED_FAULTSIM"),
                       reason="needs the faultsim build (make faultsim)"),
    pytest.mark.skipif(backend_name() != "sqlite", reason="the embedded store's files"),
]


def fault_count(server, reason):
    m = re.search(r'^settled_store_write_faults_total\{reason="%s"\} (\S+)$' % reason,
                  server.metrics(), re.M)
    assert m, "settled_store_write_faults_total is not exported"
    return float(m.group(1))


def balance(server, name):
    r = server.get(f"/api/v2/accounts/{name}", headers=ADMIN)
    assert r.status == 200, r
    return int(r.json["balance"])


class Load:
    """Threads sending keyed registrations and 1-unit transfers from
    treasury to one wallet until stopped; every answer is recorded."""

    def __init__(self, server, target, threads=4):
        self.server, self.target = server, target
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.done = []       # (kind, key, wallet or None, Response)
        self.errors = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(threads)]

    def send(self, kind, key, wallet):
        if kind == "register":
            return self.server.register(wallet, key=key)
        return self.server.post("/api/v2/transfers",
                                {"from": "treasury", "to": self.target, "amount": "1"},
                                headers=ADMIN, key=key)

    def _run(self, i):
        n = 0
        while not self.stop.is_set():
            n += 1
            if (n + i) % 2:
                kind, key, wallet = "register", new_key("ioreg"), new_wallet()
            else:
                kind, key, wallet = "transfer", new_key("iotx"), None
            try:
                r = self.send(kind, key, wallet)
            except Exception as exc:  # noqa: BLE001 - a dropped connection fails the test
                with self.lock:
                    self.errors.append((kind, exc))
                continue
            with self.lock:
                self.done.append((kind, key, wallet, r))

    def start(self):
        for t in self.threads:
            t.start()

    def count(self, status):
        with self.lock:
            return sum(1 for *_, r in self.done if r.status == status)

    def refused(self):
        with self.lock:
            return sum(1 for *_, r in self.done if r.status != 201)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)
        assert not any(t.is_alive() for t in self.threads), "the load did not stop"
        assert not self.errors, self.errors[:3]


def start_with_load(start_server, tmp_path, mode):
    """A server whose storage fails as mode says once its control file
    exists, under a Load of registrations and transfers that has seen 20
    writes land and then 20 refused. Returns (server, ctl, load, target,
    treasury0); the caller stops the load (load.finish) and removes ctl."""
    ctl = tmp_path / "ioerr"
    server = start_server(env={"SETTLED_FAULTSIM_IOERR_FILE": str(ctl),
                               "RL_REGISTER_PER_HOUR": "0", "RL_REGISTER_PER_DAY_WALLET": "0"})
    target = new_wallet()
    assert server.register(target).status == 201
    assert fault_count(server, "io_error") == 0
    treasury0 = balance(server, "treasury")

    load = Load(server, target)
    load.start()
    try:
        wait_until(lambda: load.count(201) >= 20, timeout=30, what="writes before the fault")
        ctl.write_text(mode + "\n")
        wait_until(lambda: load.refused() >= 20, timeout=30, what="writes refused by I/O errors")
    except BaseException:
        load.finish()
        if ctl.exists():
            ctl.unlink()
        raise
    return server, ctl, load, target, treasury0


def split_answers(load):
    """(acked, refused) as (kind, key, wallet); every refused write was a
    clean 503 store_unavailable, never a 500."""
    acked = [(k, key, w) for k, key, w, r in load.done if r.status == 201]
    refused = [(k, key, w) for k, key, w, r in load.done if r.status != 201]
    for *_, r in load.done:
        if r.status != 201:
            assert_error(r, 503, "store_unavailable")
    return acked, refused


def assert_retries_land_once(server, load, target, treasury0, acked, refused, replays):
    """The refused writes, retried with their keys, answer 201 with an
    X-Idempotency in replays; then every write is there exactly once, the
    balances add up and reconciliation is clean."""
    for k, key, w in refused:
        r = load.send(k, key, w)
        assert r.status == 201, r
        assert r.header("X-Idempotency") in replays, r
    for k, key, w in acked + refused:
        if k == "register":
            r = server.get(f"/api/v2/accounts/{w}", headers=ADMIN)
            assert r.status == 200, (w, r)
    transfers = sum(1 for k, *_ in acked + refused if k == "transfer")
    assert balance(server, target) == transfers
    assert balance(server, "treasury") == treasury0 - transfers
    r = server.post("/api/admin/reconciliation", headers=ADMIN, key=new_key("rec"))
    assert r.status in (200, 201), r
    assert r.json["ok"] is True, r.json


@pytest.mark.parametrize("mode", ["write", "torn", "fsync"])
def test_io_errors_refuse_writes_keep_reads_and_recover(start_server, tmp_path, mode):
    server, ctl, load, target, treasury0 = start_with_load(start_server, tmp_path, mode)
    try:
        # While writes fail: reads and liveness work, readiness names the
        # store, the metric counts the failing batches.
        assert server.get("/health/live").status == 200
        assert balance(server, target) >= 0
        r = server.get("/api/v2/ledger/transactions?limit=5", headers=ADMIN)
        assert r.status == 200, r
        r = server.get("/health/ready")
        assert r.status == 503, r
        assert r.json["failing"] == ["store"], r.json
        assert "I/O error" in r.json["checks"]["store"]["error"], r.json
        assert fault_count(server, "io_error") >= 1
        assert fault_count(server, "disk_full") == 0

        ctl.unlink()
        mark = load.count(201)
        wait_until(lambda: load.count(201) >= mark + 20, timeout=30,
                   what="writes to commit again once the I/O errors stop")
    finally:
        if ctl.exists():
            ctl.unlink()
        load.finish()
    wait_until(lambda: server.get("/health/ready").status == 200, timeout=15,
               what="readiness once writes commit again")

    acked, refused = split_answers(load)
    assert refused, "no write was refused"
    # A refused registration left nothing behind.
    for k, key, w in refused:
        if k == "register":
            r = server.get(f"/api/v2/accounts/{w}", headers=ADMIN)
            assert r.status == 404, (w, r)
    # The refused writes, retried with their keys, run afresh and land once.
    assert_retries_land_once(server, load, target, treasury0, acked, refused, ("MISS",))


@pytest.mark.parametrize("mode", ["write", "torn", "fsync"])
def test_a_crash_while_io_errors_leaves_no_write_half_there(start_server, tmp_path, mode):
    """The server dies (SIGKILL) while its writes fail and starts again on
    healthy storage. A refused write's outcome was unknown to the client
    (store_unavailable: retry with the same key). A failed fsync may leave
    the refused batch's WAL frames whole in the file (here they are: the
    shim fails the fsync after the write went through), and recovery then
    commits that batch whole, answers and all; a torn frame fails its
    checksum, and recovery stops before it. So each refused write,
    retried with its key, either replays the answer recorded with its
    effect (HIT) or runs afresh (MISS): 201 either way, and its effect is
    there exactly once; none is there in part."""
    server, ctl, load, target, treasury0 = start_with_load(start_server, tmp_path, mode)
    load.finish()
    server.kill()
    ctl.unlink()
    server.start()

    acked, refused = split_answers(load)
    assert_retries_land_once(server, load, target, treasury0, acked, refused, ("HIT", "MISS"))


def test_read_errors_answer_503_write_nothing_and_recover(start_server, tmp_path):
    """The read connections' pread of the database file fails (EIO: the
    shim's "read" mode; the writer's own reads are untouched). A GET that
    needs a page from the file answers 503 store_unavailable (SPEC section
    3's error shape; never a 500 or a dropped connection) and writes
    nothing, the failure is logged, readiness is 503 naming the store, and
    the same GET answers 200 again as soon as the storage does, without a
    restart."""
    ctl = tmp_path / "ioerr"
    server = start_server(env={"SETTLED_FAULTSIM_IOERR_FILE": str(ctl)})
    wallet = new_wallet()
    assert server.register(wallet).status == 201
    # Restarted, the database is checkpointed into its file and no reader
    # has a page of it cached: the GET below reads from the file.
    assert server.stop() == 0
    server.start()
    ctl.write_text("read\n")
    try:
        with server.unchanged():
            r = server.get(f"/api/v2/accounts/{wallet}", headers=ADMIN)
            assert_error(r, 503, "store_unavailable")
            r = server.get("/health/ready")
            assert r.status == 503, r
            assert r.json["failing"] == ["store"], r.json
            assert server.get("/health/live").status == 200
        server.wait_for_log(lambda rec: rec.get("level") == "error"
                            and "sqlite read failed: io_error" in rec.get("msg", ""),
                            what="the failed read logged as an error")
    finally:
        ctl.unlink()
    r = server.get(f"/api/v2/accounts/{wallet}", headers=ADMIN)
    assert r.status == 200, r
    assert r.json["wallet"] == wallet
    wait_until(lambda: server.get("/health/ready").status == 200, timeout=15,
               what="readiness once reads work again")


POWERCUT_EXIT = 86  # tests/faultsim/faultsim.c: the process's exit at the cut


class CutLoad(Load):
    """Load whose requests may meet the power cut: a request that got no
    answer (its connection dropped at the cut, or refused after it) has an
    unknown outcome and is kept with its key in self.lost."""

    def __init__(self, server, target, threads=4):
        super().__init__(server, target, threads)
        self.lost = []  # (kind, key, wallet) sent, no answer

    def _run(self, i):
        n = 0
        while not self.stop.is_set():
            n += 1
            if (n + i) % 2:
                kind, key, wallet = "register", new_key("pcreg"), new_wallet()
            else:
                kind, key, wallet = "transfer", new_key("pctx"), None
            try:
                r = self.send(kind, key, wallet)
            except Exception:  # noqa: BLE001 - no answer: the outcome is unknown
                with self.lock:
                    self.lost.append((kind, key, wallet))
                time.sleep(0.01)
                continue
            with self.lock:
                self.done.append((kind, key, wallet, r))


@pytest.mark.parametrize("acks", [30, 1500])
def test_a_power_cut_keeps_every_acknowledged_write(start_server, tmp_path, acks):
    """Power fails under a load of registrations and transfers: the
    faultsim VFS's "powercut" undoes every write to the database and its
    WAL that no completed fsync covered (what a lost page cache leaves) and
    ends the process. Started again, every write the server acknowledged
    (201) is there; every request that got no answer, retried with its
    Idempotency-Key, replays its recorded answer (HIT: it committed) or
    runs afresh (MISS): 201 either way, once; the balances add up and
    reconciliation is clean. Cut early (the first WAL frames) and after
    enough writes for the checkpointer to have copied pages into the
    database file and synced it."""
    ctl = tmp_path / "ioerr"
    server = start_server(env={"SETTLED_FAULTSIM_IOERR_FILE": str(ctl),
                               "SETTLED_FAULTSIM_POWERCUT": "1",
                               "RL_REGISTER_PER_HOUR": "0", "RL_REGISTER_PER_DAY_WALLET": "0"})
    target = new_wallet()
    assert server.register(target).status == 201
    treasury0 = balance(server, "treasury")
    load = CutLoad(server, target)
    load.start()
    try:
        wait_until(lambda: load.count(201) >= acks, timeout=120, what="writes before the cut")
        ctl.write_text("powercut\n")
        rc = server.wait_exit(60)
    finally:
        load.finish()
        if ctl.exists():
            ctl.unlink()
    assert rc == POWERCUT_EXIT, f"settled exited with {rc}, not at the power cut"
    server.start()

    acked = [(k, key, w) for k, key, w, r in load.done if r.status == 201]
    unknown = load.lost + [(k, key, w) for k, key, w, r in load.done if r.status != 201]
    for *_, r in load.done:
        assert r.status == 201 or r.status == 503, r
    assert len(acked) >= acks
    assert_retries_land_once(server, load, target, treasury0, acked, unknown, ("HIT", "MISS"))


def test_a_power_cut_keeps_every_acknowledged_webhook_and_credits_it_once(start_server, tmp_path):
    """The same power cut under signed webhook deliveries, with the jobs
    crediting them draining meanwhile. Started again: every delivery that
    was answered "accepted" was stored (sent again it is a duplicate); every
    unanswered one, sent again, is accepted or a duplicate; and once the
    jobs have drained, each wallet holds exactly one credit per distinct
    delivery to it (none lost by the cut, none applied twice by a job run
    again), revenue the opposite, and reconciliation is clean."""
    from test_webhooks import ENV as WH_ENV, standard

    ctl = tmp_path / "ioerr"
    server = start_server(env={**WH_ENV, "SETTLED_FAULTSIM_IOERR_FILE": str(ctl),
                               "SETTLED_FAULTSIM_POWERCUT": "1", "RL_WEBHOOK_PER_MIN": "0",
                               "RL_REGISTER_PER_HOUR": "0", "RL_REGISTER_PER_DAY_WALLET": "0"})
    wallets = [new_wallet() for _ in range(8)]
    for w in wallets:
        assert server.register(w).status == 201
    revenue0 = balance(server, "revenue")
    stop = threading.Event()
    lock = threading.Lock()
    sent = []   # (delivery, wallet, status or None: no answer)

    def run(i):
        n = 0
        while not stop.is_set():
            n += 1
            w = wallets[(n * 4 + i) % len(wallets)]
            d = standard(w, amount="100")
            try:
                r = d.send(server)
                st = r.status if r.status != 200 else r.json.get("status")
            except Exception:  # noqa: BLE001 - no answer: the outcome is unknown
                st = None
                time.sleep(0.01)
            with lock:
                sent.append((d, w, st))

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: sum(1 for *_, st in sent if st == "accepted") >= 300, timeout=120,
                   what="deliveries before the cut")
        ctl.write_text("powercut\n")
        rc = server.wait_exit(60)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        if ctl.exists():
            ctl.unlink()
    assert not any(t.is_alive() for t in threads), "the load did not stop"
    assert rc == POWERCUT_EXIT, f"settled exited with {rc}, not at the power cut"
    server.start()

    want = {w: 0 for w in wallets}
    for d, w, st in sent:
        assert st in ("accepted", None), (st, d.event_id)
        r = d.send(server)
        assert r.status == 200, r
        if st == "accepted":
            assert r.json == {"status": "duplicate"}, (d.event_id, r.json)
        else:
            assert r.json["status"] in ("accepted", "duplicate"), r.json
        want[w] += 100
    for w in wallets:
        wait_until(lambda w=w: balance(server, w) == want[w], timeout=60,
                   what=f"{w}'s credits once the jobs drained (want {want[w]})")
    assert balance(server, "revenue") == revenue0 - sum(want.values())
    r = server.post("/api/admin/reconciliation", headers=ADMIN, key=new_key("rec"))
    assert r.status in (200, 201), r
    assert r.json["ok"] is True, r.json
