"""The example clients in examples/ against a live server.

Each of examples/claim.sh (curl), examples/client.mjs (Node's fetch) and
examples/client.py (Python's urllib) must register, claim and see its
intent SETTLED. A claim withdraws what the wallet is owed, so the test pays
the wallet first through the API (fund_wallet, as an operator would) and
hands it to the client in SETTLED_WALLET; the client's register then finds
it registered (409 already_registered, an answer it accepts):

* directly against the server;
* through a fault-injecting proxy (here, standard library) that answers the
  first register 503 with Retry-After, forwards the first prepare but never
  answers it (the client times out after the effect happened), answers the
  second prepare 409 idempotency_key_in_use, the first record 429 and the
  first intent read 500. The client must retry each with the same
  Idempotency-Key, wait at least Retry-After, get the lost prepare's answer
  replayed (X-Idempotency: HIT), and leave exactly one intent behind.
"""

import http.client
import http.server
import json
import os
import shutil
import socketserver
import subprocess
import threading
import time

import pytest

from conftest import ADMIN_TOKEN, ROOT, account_of, fund_wallet, new_key, new_wallet, wait_until

EXAMPLES = ROOT / "examples"
CLIENTS = {
    "curl": ["bash", str(EXAMPLES / "claim.sh")],
    "node": ["node", str(EXAMPLES / "client.mjs")],
    "python": ["/usr/bin/python3", str(EXAMPLES / "client.py")],
}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CLAIM = 100                   # the examples' default CLAIM_AMOUNT
# SETTLED_TIMEOUT of the faulty runs: each attempt's deadline. Past the one
# lost answer it must not expire: an attempt the proxy was slow to answer
# (a loaded machine) would be retried without the Retry-After it never saw,
# and the attempt counts below would be off by one. The proxy sits on the
# lost answer until the client hangs up (not for a fixed time), so the
# deadline costs the test its length once per run: 1 s failed under load
# 20 (4591689); 3 s was a margin a stall of the loaded machine could eat
# (under ASan beside the other suites one synced transaction took 1.9 s).
CLIENT_TIMEOUT = 8.0
LOST_MAX = CLIENT_TIMEOUT + 60  # a client that never hangs up: give up then
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "date",
               "server"}


def route_key(method, path):
    path = path.split("?", 1)[0]
    if path.startswith("/api/v2/intents/"):
        path = "/api/v2/intents/{id}"
    return f"{method} {path}"


class FaultProxy:
    """An HTTP/1.0 proxy in front of the server. faults maps
    (route_key, n-th request on it) to an action: an int status answered
    here (with a JSON error body and Retry-After unless status is 500), or
    "lose" (forward, then hold the connection past the client's timeout and
    close it without an answer). Every request is logged with its
    Idempotency-Key, the time and the server's status / X-Idempotency."""

    def __init__(self, upstream_port, faults):
        self.upstream_port = upstream_port
        self.faults = faults
        self.counts = {}
        self.log = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                proxy.handle(self)

            do_POST = do_DELETE = do_GET

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, h):
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        key = route_key(h.command, h.path)
        with self.lock:
            n = self.counts[key] = self.counts.get(key, 0) + 1
            entry = {"route": key, "n": n, "t": time.monotonic(),
                     "idem": h.headers.get("Idempotency-Key"), "action": None,
                     "status": None, "x_idempotency": None}
            self.log.append(entry)
        action = self.faults.get((key, n))
        entry["action"] = action
        if isinstance(action, int):
            codes = {503: "store_unavailable", 429: "rate_limited", 409: "idempotency_key_in_use",
                     500: "internal_error"}
            payload = json.dumps({"error": codes[action], "message": "injected by the test proxy",
                                  **({"retry_after": 1} if action == 429 else {})},
                                 separators=(",", ":")).encode()
            h.send_response(action)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            if action != 500:
                h.send_header("Retry-After", "1")
            h.end_headers()
            h.wfile.write(payload)
            entry["status"] = action
            return
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_HEADERS}
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
        try:
            conn.request(h.command, h.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        entry["status"] = resp.status
        entry["x_idempotency"] = resp.getheader("X-Idempotency")
        if action == "lose":
            # Held until the client gives up and closes its end.
            h.connection.settimeout(LOST_MAX)
            try:
                while h.connection.recv(4096):
                    pass
            except OSError:
                pass
            h.close_connection = True
            return
        h.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_HEADERS:
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def attempts(self, key):
        return [e for e in self.log if e["route"] == key]


FAULTS = {
    ("POST /api/register", 1): 503,
    ("POST /api/claim/prepare", 1): "lose",
    ("POST /api/claim/prepare", 2): 409,
    ("POST /api/claim/record", 1): 429,
    ("GET /api/v2/intents/{id}", 1): 500,
}


def run_client(name, url, api_key, wallet, timeout=None):
    tool = CLIENTS[name][0]
    if not shutil.which(tool) and not os.access(tool, os.X_OK):
        pytest.fail(f"{tool} not found (scripts/deps installs it)", pytrace=False)
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
           and not k.startswith(("SETTLED_", "CLAIM_"))}
    env.update({"SETTLED_URL": url, "SETTLED_API_KEY": api_key, "SETTLED_POLL_TIMEOUT": "30",
                "SETTLED_WALLET": wallet})
    if timeout is not None:
        env["SETTLED_TIMEOUT"] = str(timeout)
    p = subprocess.run(CLIENTS[name], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{name} example failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    lines = p.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("SETTLED int_"), p.stdout
    return p, lines[-1].split()[1]


def api_key(srv):
    r = srv.post("/api/admin/api-keys", {"name": "examples"}, headers=ADMIN, key=new_key())
    assert r.status == 201, r
    return r.json["key"]


def owed_wallet(srv, amount=3 * CLAIM):
    """A registered wallet the API paid amount into."""
    w = new_wallet()
    fund_wallet(srv, w, amount, register=True)
    return w


def assert_settled_once(srv, key, intent_id, wallet):
    r = srv.get(f"/api/v2/intents/{intent_id}", headers={"Authorization": f"Bearer {key}"})
    assert r.status == 200 and r.json["status"] == "SETTLED", r
    assert [t["to"] for t in r.json["transitions"]] == \
        ["PENDING", "LOCKED", "SUBMITTED", "CONFIRMED", "SETTLED"], r.json["transitions"]
    assert srv.count("intents") == 1, "the example created more than one intent"
    assert account_of(srv, wallet) == {"balance": 2 * CLAIM, "held": 0, "available": 2 * CLAIM}, \
        "the wallet paid out its claim once"


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_example_claim_beyond_the_balance_is_refused(start_server, name):
    srv = start_server(env={"SETTLED_SIM_CONFIRM_MS": "50"})
    key = api_key(srv)
    w = new_wallet()
    fund_wallet(srv, w, CLAIM - 1, register=True)
    tool = CLIENTS[name][0]
    if not shutil.which(tool) and not os.access(tool, os.X_OK):
        pytest.fail(f"{tool} not found (scripts/deps installs it)", pytrace=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SETTLED_", "CLAIM_"))}
    env.update({"SETTLED_URL": srv.url, "SETTLED_API_KEY": key, "SETTLED_WALLET": w})
    p = subprocess.run(CLIENTS[name], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p
    assert "422" in p.stderr and "insufficient_funds" in p.stderr, p.stderr
    assert srv.count("intents") == 0


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_example_claims_to_settled(start_server, name):
    srv = start_server(env={"SETTLED_SIM_CONFIRM_MS": "50"})
    key = api_key(srv)
    w = owed_wallet(srv)
    p, intent_id = run_client(name, srv.url, key, w)
    out = p.stdout
    assert "registered 0x" in out and "prepared int_" in out and "recorded int_" in out, out
    assert "retrying" not in p.stderr, p.stderr
    assert_settled_once(srv, key, intent_id, w)


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_example_retries_safely_through_faults(start_server, name):
    srv = start_server(env={"SETTLED_SIM_CONFIRM_MS": "50"})
    key = api_key(srv)
    w = owed_wallet(srv)
    proxy = FaultProxy(srv.port, FAULTS)
    try:
        p, intent_id = run_client(name, f"http://127.0.0.1:{proxy.port}", key, w,
                                  timeout=CLIENT_TIMEOUT)
    finally:
        proxy.close()
    assert "retrying" in p.stderr, p.stderr

    # Each POST: every attempt with the one key of its operation.
    keys = {}
    for route, attempts in (("POST /api/register", 2), ("POST /api/claim/prepare", 3),
                            ("POST /api/claim/record", 2)):
        seen = proxy.attempts(route)
        assert len(seen) == attempts, (route, seen)
        assert len({e["idem"] for e in seen}) == 1 and seen[0]["idem"], \
            f"{route}: attempts used different Idempotency-Keys: {seen}"
        keys[route] = seen[0]["idem"]
    assert len(set(keys.values())) == 3, f"operations share a key: {keys}"

    # The lost prepare ran once; the retry got its answer replayed.
    prepare = proxy.attempts("POST /api/claim/prepare")
    assert prepare[0]["status"] == 201 and prepare[0]["x_idempotency"] == "MISS", prepare
    assert prepare[2]["status"] == 201 and prepare[2]["x_idempotency"] == "HIT", prepare

    # Retry-After: 1 was honoured after the 503, the 409 and the 429.
    for route, before in (("POST /api/register", 0), ("POST /api/claim/prepare", 1),
                          ("POST /api/claim/record", 0)):
        seen = proxy.attempts(route)
        waited = seen[before + 1]["t"] - seen[before]["t"]
        assert waited >= 0.95, f"{route}: retried {waited:.3f}s after Retry-After: 1\n{p.stderr}"

    # The 500 on the read was retried too.
    reads = proxy.attempts("GET /api/v2/intents/{id}")
    assert reads[0]["status"] == 500 and any(e["status"] == 200 for e in reads[1:]), reads
    assert_settled_once(srv, key, intent_id, w)


# --------------------------------------------------------------------------
# examples/credits.py: credit reservations with holds (SPEC section 13)

STRIPE_SECRET = "whsec_examples_credits"


def run_credits(env):
    full = {k: v for k, v in os.environ.items()
            if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
            and not k.startswith(("SETTLED_", "CLAIM_"))}
    full.update(env)
    p = subprocess.run(["/usr/bin/python3", str(EXAMPLES / "credits.py")], env=full,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"credits example failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p


def test_credit_reservation_example(start_server):
    """Buy credits by a Stripe webhook naming the account, reserve 500,
    capture 320 (the rest back, once), a crashed sender's hold expires."""
    srv = start_server(env={"SETTLED_STRIPE_WEBHOOK_SECRET": STRIPE_SECRET})
    revenue = int(srv.get("/api/v2/accounts/revenue", headers=ADMIN).json["balance"])
    p = run_credits({"SETTLED_URL": srv.url, "SETTLED_ADMIN_TOKEN": ADMIN_TOKEN,
                     "SETTLED_STRIPE_WEBHOOK_SECRET": STRIPE_SECRET, "CRASH_EXPIRES_IN": "1"})
    out = p.stdout
    for step in ("onboarded the shop", "bought 1000 credits", "reserved 500",
                 "captured 320 of 500 (CAPTURED)", "the crashed sender's hold EXPIRED"):
        assert step in out, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("OK shop:") and last.endswith("balance=680 held=0"), out
    assert "retrying" not in p.stderr, p.stderr
    # What the server holds: the account 680, revenue paid 1000 and got 320
    # back from the capture, the two holds CAPTURED and EXPIRED.
    holds = srv.get("/api/v2/holds?limit=100", headers=ADMIN).json["data"]
    assert sorted((h["state"], h["captured"]) for h in holds) == \
        [("CAPTURED", "320"), ("EXPIRED", "0")], holds
    acct = holds[0]["from"]
    a = srv.get(f"/api/v2/accounts/{acct}", headers=ADMIN).json
    assert (a["balance"], a["held"]) == ("680", "0"), a
    assert int(srv.get("/api/v2/accounts/revenue", headers=ADMIN).json["balance"]) == \
        revenue - 1000 + 320


def test_a_payment_to_an_unknown_account_credits_nothing(start_server):
    """metadata.account naming no client's account: the event is accepted
    (Stripe must not retry), its job fails permanently (DLQ), nothing moves."""
    import hashlib
    import hmac
    srv = start_server(env={"SETTLED_STRIPE_WEBHOOK_SECRET": STRIPE_SECRET})
    t = int(time.time())
    body = json.dumps({"id": "evt_unknown_acct", "type": "payment_intent.succeeded", "created": t,
                       "data": {"object": {"amount_received": 500, "currency": "usd",
                                           "metadata": {"account": "key_nobody/shop:1:credits"}}}}
                      ).encode()
    sig = hmac.new(STRIPE_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    r = srv.post("/api/webhooks/stripe", body=body,
                 headers={"Content-Type": "application/json", "Stripe-Signature": f"t={t},v1={sig}"})
    assert r.status == 200, r

    def dead():
        d = srv.get("/api/admin/dlq", headers=ADMIN).json["data"]
        return d if d else None
    jobs = wait_until(dead, timeout=30, what="the payment's job in the dead-letter queue")
    assert "unknown_account" in json.dumps(jobs), jobs
    assert srv.count("ledger_entries") == 2   # only the treasury funding


# --------------------------------------------------------------------------
# examples/allocate_and_claim.py: an operator's allocation, then the claim


def test_allocation_then_claim_example(start_server):
    """The operator allocates 500 from treasury (an admin transfer); the
    wallet's claim of 501 is refused, its claim of 200 settles: the wallet
    keeps 300, external got 200, treasury gave the 500 and nothing else."""
    srv = start_server(env={"SETTLED_SIM_CONFIRM_MS": "50"})
    treasury = account_of(srv, "treasury")["balance"]
    external = account_of(srv, "external")["balance"]
    w = new_wallet()
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
           and not k.startswith(("SETTLED_", "CLAIM_", "ALLOCATION"))}
    env.update({"SETTLED_URL": srv.url, "SETTLED_ADMIN_TOKEN": ADMIN_TOKEN, "SETTLED_WALLET": w,
                "SETTLED_POLL_TIMEOUT": "30"})
    p = subprocess.run(["/usr/bin/python3", str(EXAMPLES / "allocate_and_claim.py")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"allocate_and_claim failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    out = p.stdout
    for step in (f"allocated 500 from treasury to {w}", f"refused 501: insufficient_funds on {w}",
                 "prepared int_", "recorded int_"):
        assert step in out, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("SETTLED int_") and last.endswith(f"wallet 300 treasury {treasury - 500}"), out
    assert account_of(srv, w) == {"balance": 300, "held": 0, "available": 300}
    assert account_of(srv, "treasury")["balance"] == treasury - 500
    assert account_of(srv, "external")["balance"] == external + 200
    assert srv.count("intents") == 1, "the refused claim wrote nothing"

