"""The http payout rail (SETTLED_PAYOUT_RAIL=http; src/rail_http.h): each
approved payout item is POSTed to the operator's payout service, signed as
a Standard Webhooks sender signs, with webhook-id = the item id (the same
on every retry, so the service can pay an item once); 2xx settles the
item, a definite 4xx fails it, 5xx and timeouts are retried with the job's
backoff and end in the DLQ with the funds still held.

The payout service is a small HTTP server in this test that checks every
signature and answers per wallet as the test scripts it."""

import base64
import hashlib
import hmac
import http.server
import json
import re
import threading
import time

import pytest

from conftest import ADMIN_TOKEN, find_samples, new_wallet, parse_metrics, wait_until
from test_payouts import (account, approve, assert_ledger_balanced, create_batch, fund,
                          get_batch, new_api_key, start, wait_completed)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
KEY = hashlib.sha256(b"payout-service-key").digest()
SECRET = "whsec_" + base64.b64encode(KEY).decode()
URL_KEY = "PAYKEY0123456789"   # in the URL's path: must never be logged


class PayoutService:
    """answers[wallet] is a list of (status, body) used in turn (the last
    one repeats); unknown wallets get 200."""

    def __init__(self):
        self.answers = {}
        self.calls = []      # (webhook-id, body dict, signature ok)
        self.lock = threading.Lock()
        svc = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                wid = self.headers.get("webhook-id")
                ts = self.headers.get("webhook-timestamp")
                sig = self.headers.get("webhook-signature", "")
                want = base64.b64encode(hmac.new(KEY, f"{wid}.{ts}.".encode() + body,
                                                 hashlib.sha256).digest()).decode()
                ok = sig == f"v1,{want}" and abs(int(ts) - time.time()) < 300
                msg = json.loads(body)
                with svc.lock:
                    svc.calls.append((wid, msg, ok, self.path, self.headers.get("traceparent")))
                    script = svc.answers.get(msg["data"]["wallet"], [(200, {"paid": True})])
                    n = sum(1 for c in svc.calls if c[0] == wid)
                    status, answer = script[min(n, len(script)) - 1]
                if not ok:
                    status, answer = 401, {"reason": "bad signature"}
                out = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/pay/{URL_KEY}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def ids(self, wallet):
        with self.lock:
            return [c[0] for c in self.calls if c[1]["data"]["wallet"] == wallet]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service():
    s = PayoutService()
    yield s
    s.close()


def paying_server(start_server, service, timeout):
    srv = start(start_server, SETTLED_SIM_CONFIRM_MS="0", SETTLED_PAYOUT_RAIL="http",
                SETTLED_PAYOUT_URL=service.url, SETTLED_PAYOUT_SECRET=SECRET,
                SETTLED_PAYOUT_TIMEOUT=timeout, SETTLED_JOB_BASE_DELAY="100ms",
                SETTLED_JOB_MAX_DELAY="300ms", SETTLED_JOB_MAX_ATTEMPTS="4")
    return srv, new_api_key(srv)


@pytest.fixture
def paying(start_server, service):
    """A server whose payout calls never time out by chance: the tests
    count calls and attempts exactly, and the service answers from this
    process, which a loaded machine can hold for seconds (a 1 s timeout
    made a call a timeout, retried: one call more than its script)."""
    return paying_server(start_server, service, "60s")


@pytest.fixture
def paying_1s(start_server, service):
    """SETTLED_PAYOUT_TIMEOUT=1s, for the test whose service stalls past it."""
    return paying_server(start_server, service, "1s")


def item(batch, idx):
    return next(i for i in batch["items"] if i["idx"] == idx)


def test_items_settle_or_fail_from_the_services_answer(paying, service):
    srv, key = paying
    ok, refused, flaky, down = (new_wallet() for _ in range(4))
    fund(srv, [ok, refused, flaky, down], 1000)
    service.answers[refused] = [(422, {"reason": "account closed"})]
    service.answers[flaky] = [(503, {}), (500, {}), (200, {"paid": True})]
    service.answers[down] = [(502, {})]
    r = create_batch(srv, key, [(ok, 100), (refused, 200), (flaky, 300), (down, 400)])
    assert r.status == 201, r
    bid = r.json["id"]
    assert approve(srv, bid).status == 200

    # The item whose service never answers 2xx ends in the DLQ; the rest end.
    wait_until(lambda: all(item(get_batch(srv, bid), i)["status"] in ("SETTLED", "FAILED")
                           for i in (0, 1, 2)), timeout=30, what="three items to end")
    b = get_batch(srv, bid)
    assert item(b, 0)["status"] == "SETTLED"
    assert (item(b, 1)["status"], item(b, 1)["error"]) == ("FAILED", "payout_rejected")
    assert item(b, 2)["status"] == "SETTLED", "retried after 5xx"
    wait_until(lambda: service.ids(down) and len(service.ids(down)) >= 4, timeout=30,
               what="the down item's attempts")
    dlq = wait_until(lambda: [j for j in srv.get("/api/admin/dlq", headers=ADMIN).json.get(
        "data", []) if j["kind"] == "payout.confirm"], timeout=30, what="the DLQ entry")
    assert len(dlq) == 1 and "HTTP 502" in dlq[0]["last_error"], dlq
    assert item(get_batch(srv, bid), 3)["status"] == "SUBMITTED", "funds stay held"
    assert account(srv, down) == {"balance": 1000, "held": 400, "available": 600}

    # Money: paid items left their wallets, the refused one kept its funds.
    assert account(srv, ok)["balance"] == 900
    assert account(srv, refused) == {"balance": 1000, "held": 0, "available": 1000}
    assert account(srv, flaky)["balance"] == 700

    # Signed, one webhook-id per item, the same on every retry.
    assert all(c[2] for c in service.calls), "every request carries a valid signature"
    assert set(service.ids(flaky)) == {f"{bid}:2"} and len(service.ids(flaky)) == 3
    assert service.ids(ok) == [f"{bid}:0"]
    body = next(c[1] for c in service.calls if c[0] == f"{bid}:0")
    assert body["type"] == "payout.requested"
    assert body["data"]["amount"] == "100" and body["data"]["item_id"] == f"{bid}:0"

    out = (srv.stdout() + srv.stderr()).decode(errors="replace")
    assert URL_KEY not in out and SECRET not in out
    # Each request continues the payout.confirm job's trace (W3C traceparent;
    # the job's log lines carry the same trace_id).
    tps = [c[4] for c in service.calls]
    assert all(tp and re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", tp) for tp in tps), tps
    assert all(f'"trace_id":"{tp[3:35]}"' in out for tp in tps)
    assert "account closed" in out, "the service's reason is logged with the job"
    samples = parse_metrics(srv.metrics())
    assert find_samples(samples, "settled_payouts_total", status="SETTLED")[0][2] == 2
    assert find_samples(samples, "settled_payouts_total", status="FAILED")[0][2] == 1


def test_a_timeout_is_retried_not_a_refusal(paying_1s, service):
    srv, key = paying_1s
    w = new_wallet()
    fund(srv, [w], 500)
    slow_then_ok = threading.Event()

    orig = service.server.RequestHandlerClass.do_POST

    def stall_first(handler):
        if not slow_then_ok.is_set():
            slow_then_ok.set()
            time.sleep(2.5)   # past SETTLED_PAYOUT_TIMEOUT=1s
        return orig(handler)

    service.server.RequestHandlerClass.do_POST = stall_first
    r = create_batch(srv, key, [(w, 50)])
    bid = r.json["id"]
    assert approve(srv, bid).status == 200
    b = wait_completed(srv, bid, timeout=30)
    assert item(get_batch(srv, bid), 0)["status"] == "SETTLED", b
    assert len(set(service.ids(w))) == 1, "the retry carries the same webhook-id"
    assert_ledger_balanced(srv)
