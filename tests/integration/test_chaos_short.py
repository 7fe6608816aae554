"""The short chaos run (SPEC section 12): ops/chaos with 3 SIGKILLs
over 20 s of mixed traffic on the backend under test (SETTLED_TEST_BACKEND;
pg uses SETTLED_TEST_PG and SETTLED_TEST_REDIS from tests/with-services),
then its checks: one effect per idempotency key, every acknowledged write
present, every intent SETTLED or FAILED, the ledger balanced, no job stuck,
the DLQ explained by the injected faults. `make chaos` is the full run.

The seed is random unless SETTLED_CHAOS_SEED is set; a failure prints it
(and ops/chaos keeps its work dir) so the run can be repeated:
    ops/chaos --backend sqlite --kills 3 --duration 20 --seed S -v
"""

import os
import random
import subprocess

import pytest

from conftest import BIN, ROOT, backend_name

CHAOS = ROOT / "ops" / "chaos"
TIMEOUT = 300   # seconds


def run_chaos(*args):
    """Runs ops/chaos with a random (or SETTLED_CHAOS_SEED) seed; returns its
    summary line once it reported no violation."""
    seed = os.environ.get("SETTLED_CHAOS_SEED") or str(random.randrange(1, 2 ** 31))
    cmd = [str(CHAOS), *args, "--threads", "4", "--seed", seed, "--bin", BIN]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{' '.join(cmd)} still running after {TIMEOUT}s\n"
                             f"{exc.stdout or ''}\n{exc.stderr or ''}") from None
    summary = [ln for ln in p.stdout.splitlines() if ln.startswith("chaos: backend=")]
    assert p.returncode == 0 and summary and summary[-1].endswith(" violations=0"), \
        (f"{' '.join(cmd)} exited {p.returncode}\n--- stdout ---\n{p.stdout}\n"
         f"--- stderr ---\n{p.stderr}")
    print(summary[-1])
    return summary[-1]


def test_chaos_short_run_loses_nothing():
    summary = run_chaos("--backend", backend_name(), "--kills", "3", "--duration", "20")
    kills = int(summary.split(" kills=")[1].split()[0])
    assert kills == 3, summary


# The short pg-crash run once found a real bug (two concurrent deliveries of
# one event both "accepted", a 422 answered whose idempotency record was not
# there: a lost COMMIT resolved by a transaction id that the restarted
# server had handed out again; fixed in store_pg.c's resolve_commit, seed
# 667027261). It came back here after 20 clean runs of 4 crashes each.
@pytest.mark.skipif(backend_name() != "pg", reason="faults beneath the server: scale-out's services")
@pytest.mark.parametrize("fault", ["pg-crash", "redis-kill", "proxy"])
def test_chaos_short_run_with_faults_beneath(fault):
    """The same traffic and checks with PostgreSQL crashed and restarted,
    Redis killed, or the links to PostgreSQL and Redis broken by the fault
    proxy (ops/chaos --fault)."""
    faults = 4 if fault == "proxy" else 2
    summary = run_chaos("--backend", "pg", "--fault", fault, "--kills", str(faults), "--duration", "15")
    assert f" fault={fault} faults={faults} " in summary, summary
