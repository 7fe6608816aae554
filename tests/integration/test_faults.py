"""Faults beneath the server: storage that runs out (embedded mode).

The SQLite database lives on a tmpfs this test mounts with a small size, so
the disk really fills: writes must answer 503 store_unavailable, reads and
liveness keep working, /health/ready names the store, a metric counts the
refused batches, and once the tmpfs is grown writes resume without a
restart. Nothing acknowledged is lost, and a write that was refused left
nothing behind: retried with its Idempotency-Key it runs afresh (MISS), it
is neither replayed nor stuck in flight.

Mounting needs root (CI runs as root); elsewhere the test is skipped.
"""

import os
import re
import subprocess

import pytest

from conftest import ADMIN_TOKEN, assert_error, backend_name, new_key, new_wallet, wait_until

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

pytestmark = pytest.mark.skipif(backend_name() != "sqlite",
                                reason="the embedded store's disk; PostgreSQL's is its own")


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def grow(mnt, size="64m"):
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)


def fault_count(server, reason):
    m = re.search(r'^settled_store_write_faults_total\{reason="%s"\} (\S+)$' % reason,
                  server.metrics(), re.M)
    assert m, "settled_store_write_faults_total is not exported"
    return float(m.group(1))


def test_disk_full_refuses_writes_keeps_reads_and_recovers(start_server, small_disk):
    server = start_server(env={"RL_REGISTER_PER_HOUR": "0", "RL_REGISTER_PER_DAY_WALLET": "0"},
                          args=["--db", str(small_disk / "settled.db")])
    assert fault_count(server, "disk_full") == 0

    acked, refused = [], []
    for _ in range(20000):
        w, k = new_wallet(), new_key("full")
        r = server.register(w, key=k)
        if r.status == 201:
            acked.append(w)
            continue
        assert_error(r, 503, "store_unavailable")
        refused.append((w, k))
        if len(refused) >= 5:
            break
    assert acked, "the disk was full before the first write"
    assert len(refused) == 5, "the 2 MiB disk never filled"

    # Reads and liveness still work; readiness names the store; the metric counts it.
    assert server.get("/healthz").status == 200
    r = server.get(f"/api/v2/accounts/{acked[-1]}", headers=ADMIN)
    assert r.status == 200 and r.json["balance"] == "0", r
    r = server.get("/health/ready")
    assert r.status == 503, r
    assert r.json["failing"] == ["store"], r.json
    assert "full" in r.json["checks"]["store"]["error"], r.json
    assert fault_count(server, "disk_full") >= 5
    # A refused write left nothing behind: its wallet does not exist.
    for w, _ in refused:
        r = server.get(f"/api/v2/accounts/{w}", headers=ADMIN)
        assert r.status == 404, r

    grow(small_disk)
    # The refused writes, retried with their keys, run afresh (no replay of
    # the 503, no key stuck in flight) and succeed without a restart.
    for w, k in refused:
        r = server.register(w, key=k)
        assert r.status == 201, r
        assert r.header("X-Idempotency") == "MISS", r
    wait_until(lambda: server.get("/health/ready").status == 200, timeout=15,
               what="readiness once writes commit again")
    # Everything acknowledged before the disk filled is still there.
    for w in acked + [w for w, _ in refused]:
        r = server.get(f"/api/v2/accounts/{w}", headers=ADMIN)
        assert r.status == 200, (w, r)
    r = server.post("/api/admin/reconciliation", headers=ADMIN, key=new_key("rec"))
    assert r.status in (200, 201), r
    assert r.json["ok"] is True, r.json
