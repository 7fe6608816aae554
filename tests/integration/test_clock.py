"""The system clock stepped under a running server (libfaketime).

settled keeps its own clock: the wall clock read at start, advanced by the
monotonic clock (src/clock.h). A step of the system clock while it runs --
back or forward, by minutes or hours -- must not move any deadline it keeps:
an idempotency key does not expire early (a retry would run twice), a hold
does not expire early, a job's backoff is not stretched by an hour, a rate
limit is not reset, and a webhook signed by a sender whose clock is right is
still fresh. The step is exported (settled_clock_step_seconds) and logged.

The server runs with Debian's libfaketime preloaded, its offset read from a
file on every call (FAKETIME_NO_CACHE), the monotonic clock left alone; the
test steps it by rewriting the file while traffic flows.
"""

import os
import re
import threading
import time
from pathlib import Path

import pytest

from conftest import ADMIN_TOKEN, new_key, new_wallet, wait_until
from test_webhooks import ENV as WEBHOOK_ENV, coinbase, standard

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")

pytestmark = [
    pytest.mark.skipif(not LIBFAKETIME.exists(), reason="libfaketime (Debian faketime) not installed"),
    pytest.mark.skipif(bool(os.environ.get("SETTLED_TEST_WRAPPER")),
                       reason="LD_PRELOAD under a wrapper (valgrind) is not this test's business"),
]


def faked_env(offset_file, extra):
    asan = os.environ.get("ASAN_OPTIONS", "")
    return {
        **extra,
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        # An ASan build must come first among the loaded libraries; the
        # preload is deliberate here.
        "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0",
    }


def balance(server, wallet):
    r = server.get(f"/api/v2/accounts/{wallet}", headers=ADMIN)
    return r.json["balance"] if r.status == 200 else None


def intent(server, intent_id):
    r = server.get(f"/api/v2/intents/{intent_id}", headers=ADMIN)
    assert r.status == 200, r
    return r.json


def fund(server, wallet, amount="1000"):
    assert server.register(wallet).status == 201
    assert standard(wallet, amount=amount).send(server).status == 200
    wait_until(lambda: balance(server, wallet) == amount, timeout=15, what="the payment")


class Load:
    """Reads and signed payments in a loop while the clock moves: every
    answer must be a success."""

    def __init__(self, server, wallet):
        self.server, self.wallet = server, wallet
        self.stop = threading.Event()
        self.bad = []
        self.count = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            r = self.server.get(f"/api/v2/accounts/{self.wallet}", headers=ADMIN)
            w = standard(self.wallet, amount="1").send(self.server)
            self.count += 1
            for x in (r, w):
                if x.status != 200:
                    self.bad.append(x)
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


@pytest.mark.parametrize("step", ["-1h", "+1h", "-10m", "+3h"])
def test_clock_step_moves_no_deadline(start_server, tmp_path, step):
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    server = start_server(env=faked_env(offset, {
        **WEBHOOK_ENV,
        "SETTLED_IDEMPOTENCY_TTL": "30m",   # a forward step of an hour would expire keys
        "SETTLED_HOLD_TIMEOUT": "30m",      # ... and holds
        "SETTLED_SIM_CONFIRM_MS": "300",    # a job 300 ms out, an hour out after a step back
        "RL_REGISTER_PER_HOUR": "3",
        "RL_WEBHOOK_PER_MIN": "100000",
        "RL_API_PER_MIN": "100000",
    }))

    # Before the step: a keyed write, a pending claim, a spent rate limit.
    payer = new_wallet()
    fund(server, payer, "1000")
    claim = {"wallet": payer, "amount": "10"}
    prepared = server.post("/api/claim/prepare", claim, key=(k := new_key("clk")))
    assert prepared.status == 201, prepared
    pending = prepared.json["id"]
    while server.register(new_wallet()).status == 201:
        pass
    assert server.register(new_wallet()).status == 429

    with Load(server, payer) as load:
        time.sleep(0.3)
        offset.write_text(step + "\n")
        time.sleep(2.5)     # the ticker's hold expiry and gauges run meanwhile
    assert load.count > 0 and not load.bad, load.bad[:3]

    # The step is seen and exported, and nothing kept its own time by it.
    m = re.search(r"^settled_clock_step_seconds (\S+)$", server.metrics(), re.M)
    want = {"s": 1, "m": 60, "h": 3600}[step[-1]] * int(step[:-1])
    assert m and abs(float(m.group(1)) - want) < 5, (m and m.group(0), want)
    assert "the system clock was stepped" in server.stdout_path.read_text()

    # Idempotency: the key still replays (not expired by a forward step).
    again = server.post("/api/claim/prepare", claim, key=k)
    assert again.status == 201 and again.header("X-Idempotency") == "HIT", again
    assert again.body == prepared.body
    # Holds: the pending claim's hold has not expired.
    assert intent(server, pending)["status"] == "PENDING"
    # Rate limits: still spent (a forward step would have refilled them).
    assert server.register(new_wallet()).status == 429
    # Jobs: a confirmation 300 ms out still runs in about 300 ms.
    r = server.post("/api/claim/record", {"intent_id": pending, "tx_hash": "0x" + os.urandom(32).hex()},
                    key=new_key("r"))
    assert r.status == 200, r
    wait_until(lambda: intent(server, pending)["status"] == "SETTLED", timeout=10,
               what="the confirmation job after the step")
    # Webhooks: a delivery signed with the right time is fresh.
    w = standard(payer, amount="5").send(server)
    assert w.status == 200, w


def test_coinbase_redelivery_of_a_known_event_after_5_minutes_is_a_duplicate(start_server,
                                                                            tmp_path):
    """Coinbase's freshness is the event's created_at, the same on every
    retry: a redelivery of a known event that comes 10 minutes later (the
    server restarted with its clock 10 minutes on) is answered duplicate,
    not 401 stale_webhook (which would make Coinbase retry for days), and
    credits nothing more."""
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    server = start_server(env=faked_env(offset, {**WEBHOOK_ENV, "RL_WEBHOOK_PER_MIN": "100000"}))
    wallet = new_wallet()
    assert server.register(wallet).status == 201
    d = coinbase(wallet, amount="12.34")
    r = d.send(server)
    assert r.status == 200 and r.json == {"status": "accepted"}, r
    wait_until(lambda: balance(server, wallet) == "1234", timeout=15, what="the payment")
    assert server.stop() == 0
    offset.write_text("+10m\n")
    server.start()
    with server.unchanged():
        r = d.send(server)
        assert r.status == 200 and r.json == {"status": "duplicate"}, r
        time.sleep(0.3)
    assert balance(server, wallet) == "1234"
