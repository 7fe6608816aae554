"""Allocation failures walked over each kind of request and job.

Runs against the faultsim build (make faultsim, part of make check: under
make asan it is an ASan build, so a leak on an error path fails too): every
allocation settled's code makes can be failed on demand (tests/faultsim/
faultsim.c). For each kind of request the test arms the N-th allocation to
fail, sends the request, disarms, and walks N = 1, 2, 3 ... until the
request no longer reaches the armed allocation. Every step must give the
expected answer or a clean 500/503 with an error body (never a dropped
connection or a crash); a 5xx leaves nothing behind, so the same request
with the same Idempotency-Key then succeeds as a MISS (no key stuck in
flight, no half-written effect); a success replays as a HIT, and its
effect is read back from the store (a 2xx is never recorded for a handler
whose writes rolled back, e.g. when registering its after-commit step failed
after it wrote the answer). Jobs (webhook
processing, claim confirmation) are walked the same way: a failed attempt
is retried and the effect lands exactly once. At the end reconciliation is
clean and the server exits 0 (and, under ASan, without a leak report).
"""

import os
import signal
import time

import pytest

from conftest import ADMIN_TOKEN, backend_name, new_key, new_wallet, wait_until
from test_webhooks import ENV as WEBHOOK_ENV, standard

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MAX_N = int(os.environ.get("SETTLED_FAULTSIM_MAX_N", "400"))

pytestmark = [
    pytest.mark.skipif(not os.environ.get("SETTLED_FAULTSIM"),
                       reason="needs the faultsim build (make faultsim)"),
    pytest.mark.skipif(backend_name() != "sqlite", reason="walked on the embedded store"),
]


class Faults:
    def __init__(self, server, path):
        self.server, self.path = server, path
        self.injected = 0
        self.seq = 0

    def _signal(self, n):
        """Sets the countdown to n; returns what was left of the last one."""
        self.seq += 1
        self.path.write_text(f"{n} {self.seq}\n")
        os.kill(self.server.proc.pid, signal.SIGUSR2)
        left_file = self.path.parent / (self.path.name + ".left")
        # A hang guard: the handler answers at once, but a loaded machine
        # can keep the server off the CPU for seconds.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                left, seq = left_file.read_text().split()
                if int(seq) == self.seq:
                    return int(left)
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.001)
        pytest.fail("the faultsim build did not answer SIGUSR2")

    def arm(self, n):
        self._signal(n)

    def disarm(self):
        """Disarms; True when the armed allocation was reached (failed)."""
        left = self._signal(0)
        if left == 0:
            self.injected += 1
        return left == 0


@pytest.fixture
def fs(start_server, tmp_path):
    path = tmp_path / "faultsim"
    path.write_text("0 0\n")
    server = start_server(env={**WEBHOOK_ENV, "SETTLED_FAULTSIM_FILE": str(path),
                               "RL_REGISTER_PER_HOUR": "0", "RL_REGISTER_PER_DAY_WALLET": "0",
                               "RL_CLAIM_PER_HOUR": "0", "RL_WEBHOOK_PER_MIN": "0",
                               "RL_API_PER_MIN": "0", "SETTLED_SIM_CONFIRM_MS": "20",
                               "SETTLED_JOB_BASE_DELAY": "20ms", "SETTLED_JOB_MAX_DELAY": "200ms",
                               "SETTLED_JOB_MAX_ATTEMPTS": "50",
                               # No job may wait for its lease to expire: an
                               # allocation failure in the claim, the hand-off to a
                               # worker or the writing of an outcome is retried or
                               # the job completed at once, so a lease that outlasts
                               # the test makes a stranded job fail it.
                               "SETTLED_JOB_LEASE": "10m"})
    return server, Faults(server, path)


def clean_failure(r):
    return r.status in (500, 503) and r.json is not None and "error" in r.json


def walk(server, faults, name, prepare, send, ok_status, check_once=None, same_body=True):
    """Walks N over one kind of request. prepare() -> ctx made without a
    fault; send(ctx, key) -> Response."""
    failures = 0
    for n in range(1, MAX_N + 1):
        ctx = prepare()
        key = new_key(f"fs-{name}-{n}")
        faults.arm(n)
        r = send(ctx, key)
        reached = faults.disarm()
        assert r.status == ok_status or clean_failure(r), (name, n, r)
        if r.status != ok_status:
            failures += 1
            again = send(ctx, key)
            assert again.status == ok_status, (name, n, "retry after a 5xx", again)
            assert again.header("X-Idempotency") in (None, "MISS"), (name, n, again)
            answer = again
        else:
            again = send(ctx, key)
            assert again.status == ok_status, (name, n, "replay", again)
            if again.header("X-Idempotency"):
                assert again.header("X-Idempotency") == "HIT", (name, n, again)
                # (A new API key is shown once: its replay withholds it.)
                assert again.body == r.body or not same_body, (name, n, again)
            answer = r
        if check_once:
            # The success answered is in the store: never a 2xx whose
            # effect was rolled back behind it.
            check_once(ctx, answer)
        assert server.get("/healthz").status == 200, (name, n)
        if not reached:
            return n, failures
    pytest.fail(f"{name}: still reaching the armed allocation after {MAX_N} steps")


def account(server, wallet):
    r = server.get(f"/api/v2/accounts/{wallet}", headers=ADMIN)
    return r.json if r.status == 200 else None


def funded_wallet(server, amount="1000"):
    w = new_wallet()
    assert server.register(w).status == 201
    assert standard(w, amount=amount).send(server).status == 200
    wait_until(lambda: (account(server, w) or {}).get("balance") == amount, timeout=15,
               what="funding")
    return w


def test_allocation_failures_in_requests_and_jobs(fs):
    server, faults = fs
    report = {}

    # Registration: the wallet exists exactly once afterwards.
    report["register"] = walk(
        server, faults, "register", new_wallet,
        lambda w, k: server.register(w, key=k), 201,
        check_once=lambda w, _r: account(server, w) is not None or pytest.fail(w))

    payer = funded_wallet(server, "100000")
    def intent(intent_id):
        r = server.get(f"/api/v2/intents/{intent_id}", headers=ADMIN)
        assert r.status == 200, (intent_id, r)
        return r.json

    def prepared_once(_body, answer):
        assert intent(answer.json["id"])["status"] == "PENDING", answer

    report["claim_prepare"] = walk(
        server, faults, "claim_prepare", lambda: {"wallet": payer, "amount": "1"},
        lambda b, k: server.post("/api/claim/prepare", b, key=k), 201,
        check_once=prepared_once)

    recorded = []

    def prepared():
        r = server.post("/api/claim/prepare", {"wallet": payer, "amount": "1"}, key=new_key("p"))
        assert r.status == 201, r
        recorded.append(r.json["id"])
        return {"intent_id": r.json["id"], "tx_hash": "0x" + os.urandom(32).hex()}

    def recorded_once(body, answer):
        it = intent(body["intent_id"])
        assert it["tx_hash"] == body["tx_hash"], (it, answer)
        assert it["status"] in ("SUBMITTED", "CONFIRMED", "SETTLED"), (it, answer)

    report["claim_record"] = walk(
        server, faults, "claim_record", prepared,
        lambda b, k: server.post("/api/claim/record", b, key=k), 200,
        check_once=recorded_once)

    # Webhook intake: the event id is the key; a 5xx delivery is redelivered.
    def deliver(d, _key):
        return d.send(server)

    def webhook():
        return standard(payer, amount="3")
    report["webhook_intake"] = walk(server, faults, "webhook_intake", webhook, deliver, 200)

    # Admin: an API key, then a payout batch with it.
    report["api_key_create"] = walk(
        server, faults, "api_key_create", lambda: {"name": "fs"},
        lambda b, k: server.post("/api/admin/api-keys", b, headers=ADMIN, key=k), 201,
        same_body=False,
        check_once=lambda _b, answer: server.get(
            "/api/v2/accounts", headers={"Authorization": f"Bearer {answer.json['key']}"}
        ).status == 200 or pytest.fail(answer))
    r = server.post("/api/admin/api-keys", {"name": "payouts"}, headers=ADMIN, key=new_key())
    auth = {"Authorization": f"Bearer {r.json['key']}"}
    report["payout_batch"] = walk(
        server, faults, "payout_batch",
        lambda: {"reference": new_key("ref"), "items": [{"wallet": payer, "amount": "1"}]},
        lambda b, k: server.post("/api/v2/payouts/batch", b, headers=auth, key=k), 201,
        check_once=lambda _b, answer: server.get(f"/api/v2/payouts/batch/{answer.json['id']}",
                                                 headers=auth).status == 200 or
        pytest.fail(answer))

    # Reads: a fault is a clean 5xx, never a wrong answer.
    for name, path, hdrs in [("account_read", f"/api/v2/accounts/{payer}", ADMIN),
                             ("metrics", "/metrics", None),
                             ("ready", "/health/ready", None)]:
        for n in range(1, MAX_N + 1):
            faults.arm(n)
            r = server.get(path, headers=hdrs)
            reached = faults.disarm()
            assert r.status == 200 or clean_failure(r), (name, n, r)
            if not reached:
                report[name] = (n, None)
                break

    # Jobs: faults armed while webhook jobs run; each credit lands once.
    # The claims recorded above settle first (each moves its amount out of
    # the payer's balance), so the balance counted from here is the credits'.
    def all_settled():
        return all(server.get(f"/api/v2/intents/{i}", headers=ADMIN).json["status"] == "SETTLED"
                   for i in recorded)
    wait_until(all_settled, timeout=60, what="the recorded claims to settle")
    # Every delivery the intake walk had accepted is credited once (its
    # webhook job ran, retried if it hit a fault), and each recorded claim
    # took its amount out.
    credited = 100000 + 3 * report["webhook_intake"][0] - len(recorded)
    wait_until(lambda: int(account(server, payer)["balance"]) == credited, timeout=30,
               what="the accepted deliveries credited and the claims debited once")
    before = int(account(server, payer)["balance"])
    sent = 0
    for n in range(1, 120):
        faults.arm(n)
        d = standard(payer, amount="5")
        for _ in range(20):
            r = d.send(server)
            if r.status == 200:
                break
        assert r.status == 200, r
        sent += 5
        time.sleep(0.03)
        faults.disarm()
    want = before + sent
    wait_until(lambda: int(account(server, payer)["balance"]) == want, timeout=30,
               what="every webhook job credited once")
    time.sleep(0.5)
    assert int(account(server, payer)["balance"]) == want

    # Every claim recorded above settles (confirmation jobs, retried).
    r = server.post("/api/admin/reconciliation", headers=ADMIN, key=new_key("rec"))
    assert r.status in (200, 201), r
    print("faultsim:", report, "faults injected:", faults.injected)
    assert faults.injected > 50, faults.injected
    wait_until(lambda: server.post("/api/admin/reconciliation", headers=ADMIN,
                                   key=new_key("rec")).json["ok"] is True,
               timeout=30, what="a clean reconciliation")
