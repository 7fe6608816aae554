"""Signed webhook intake and affiliate commissions (SPEC section 9).

Every signature here is computed in Python (hmac, hashlib, base64), never
by the server's code. Each test runs its own server with two active secrets
per scheme (rotation), so a delivery signed with either must pass.

"Nothing written" compares row counts of every table except
reconciliation_reports, which the ticker writes on its own schedule (once
at start and every minute) and which would otherwise make those checks
flaky.
"""

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import time

import pytest

from conftest import (ADMIN_TOKEN, assert_error, concurrent_requests, diff_snapshots,
                      find_samples, new_wallet, only_responses, parse_metrics, store_exec,
                      store_rows, wait_until)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

CB_SECRETS = ["cb-secret-old", "cb-secret-new"]
STRIPE_SECRETS = ["whsec_stripe_old_0123", "whsec_stripe_new_4567"]
STD_KEYS = [bytes(range(1, 25)), hashlib.sha256(b"standard-key-2").digest()]
STD_SECRETS = ["whsec_" + base64.b64encode(k).decode() for k in STD_KEYS]

ENV = {
    "SETTLED_WEBHOOK_SECRET": ",".join(CB_SECRETS),
    "SETTLED_STRIPE_WEBHOOK_SECRET": ",".join(STRIPE_SECRETS),
    "SETTLED_STANDARD_WEBHOOK_SECRET": ",".join(STD_SECRETS),
    "SETTLED_COMMISSION_BPS": "1000",
}

PATHS = {
    "coinbase": "/api/commerce/webhook",
    "stripe": "/api/webhooks/stripe",
    "standard": "/api/webhooks/standard",
}
PROVIDERS = list(PATHS)
IGNORED = ("reconciliation_reports",)


# --------------------------------------------------------------------------
# Deliveries, signed here


def rfc3339(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def hex_hmac(secret, msg):
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def b64_hmac(key, msg):
    return base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()


class Delivery:
    """One webhook request: provider, path, raw body bytes and headers."""

    def __init__(self, provider, body, headers, event_id):
        self.provider = provider
        self.path = PATHS[provider]
        self.body = body
        self.headers = {"Content-Type": "application/json", **headers}
        self.event_id = event_id

    def send(self, server, headers=None, body=None):
        return server.post(self.path, body=self.body if body is None else body,
                           headers={**self.headers, **(headers or {})})

    def request(self):
        return {"method": "POST", "path": self.path, "body": self.body, "headers": self.headers}


def coinbase(wallet, amount="12.34", currency="USD", type_="charge:confirmed", event_id=None,
             created=None, secret=CB_SECRETS[0], metadata=True):
    event_id = event_id or f"cb-{secrets.token_hex(8)}"
    data = {"pricing": {"local": {"amount": amount, "currency": currency}}}
    if metadata:
        data["metadata"] = {"wallet": wallet}
    event = {"id": event_id, "type": type_, "data": data,
             "created_at": rfc3339(time.time() if created is None else created)}
    body = json.dumps({"id": secrets.token_hex(4), "event": event}).encode()
    return Delivery("coinbase", body, {"X-CC-Webhook-Signature": hex_hmac(secret, body)},
                    event_id)


def stripe(wallet, amount=1234, currency="usd", type_="payment_intent.succeeded", event_id=None,
           t=None, secret=STRIPE_SECRETS[0], **extra):
    """extra: more fields of data.object (amount_received=...)."""
    event_id = event_id or f"evt_{secrets.token_hex(8)}"
    t = int(time.time()) if t is None else int(t)
    body = json.dumps({"id": event_id, "type": type_, "created": t,
                       "data": {"object": {"amount": amount, "currency": currency,
                                           "metadata": {"wallet": wallet}, **extra}}}).encode()
    sig = hex_hmac(secret, f"{t}.".encode() + body)
    return Delivery("stripe", body, {"Stripe-Signature": f"t={t},v1={sig}"}, event_id)


def standard(wallet, amount="1234", asset="USD", type_="payment.confirmed", event_id=None,
             ts=None, key=STD_KEYS[0]):
    event_id = event_id or f"msg_{secrets.token_hex(8)}"
    ts = int(time.time()) if ts is None else int(ts)
    body = json.dumps({"type": type_, "data": {"wallet": wallet, "amount": amount,
                                               "asset": asset}}).encode()
    sig = b64_hmac(key, f"{event_id}.{ts}.".encode() + body)
    return Delivery("standard", body, {"webhook-id": event_id, "webhook-timestamp": str(ts),
                                       "webhook-signature": f"v1,{sig}"}, event_id)


# A paying event of 1234 cents for each provider.
MAKERS = {
    "coinbase": lambda w, **kw: coinbase(w, amount="12.34", **kw),
    "stripe": lambda w, **kw: stripe(w, amount=1234, **kw),
    "standard": lambda w, **kw: standard(w, amount="1234", **kw),
}


# --------------------------------------------------------------------------
# Reading what happened


@pytest.fixture
def wh(start_server):
    return start_server(env=ENV)


def balance(server, account):
    r = server.get(f"/api/v2/accounts/{account}", headers=ADMIN)
    if r.status == 404:
        return None
    assert r.status == 200, r
    return int(r.json["balance"])


def entries(server, account):
    r = server.get(f"/api/v2/ledger/transactions?account={account}&limit=500", headers=ADMIN)
    assert r.status == 200, r
    return r.json["data"]


def wait_balance(server, account, want, timeout=10.0):
    wait_until(lambda: balance(server, account) == want, timeout=timeout,
               what=f"balance of {account} == {want} (is {balance(server, account)})")


def snapshot(server):
    return {k: v for k, v in server.snapshot().items() if k not in IGNORED}


@contextlib.contextmanager
def nothing_written(server):
    before = snapshot(server)
    yield
    after = snapshot(server)
    assert after == before, f"rows were written: {diff_snapshots(before, after)}"


def webhook_metric(server, provider, result):
    s = find_samples(parse_metrics(server.metrics()), "settled_webhook_events_total",
                     provider=provider, result=result)
    return s[0][2] if s else 0.0


def dlq_jobs(server):
    r = server.get("/api/admin/dlq?limit=200", headers=ADMIN)
    assert r.status == 200, r
    return r.json["data"]


def dlq_job_for(server, delivery):
    for j in dlq_jobs(server):
        p = j.get("payload") or {}
        if j["kind"] == "webhook.process" and isinstance(p, dict) and \
                p.get("event_id") == delivery.event_id:
            return j
    return None


def register_pair(server):
    """A referrer and a wallet it referred; returns (wallet, referrer)."""
    referrer, wallet = new_wallet(), new_wallet()
    assert server.register(referrer).status == 201
    assert server.register(wallet, referrer=referrer).status == 201
    return wallet, referrer


# --------------------------------------------------------------------------
# Valid events


@pytest.mark.parametrize("provider", PROVIDERS)
def test_valid_event_credits_once_with_commission(wh, provider):
    wallet, referrer = register_pair(wh)
    d = MAKERS[provider](wallet)
    before = snapshot(wh)

    r = d.send(wh)
    assert r.status == 200, r
    assert r.json == {"status": "accepted"}
    wait_balance(wh, wallet, 1234)
    wait_balance(wh, referrer, 123)          # floor(1234 * 1000 / 10000)
    assert balance(wh, "revenue") == -1234
    assert balance(wh, "commissions") == -123

    after = snapshot(wh)
    assert after["webhook_events"] == before.get("webhook_events", 0) + 1
    assert after["ledger_tx"] == before["ledger_tx"] + 1          # one transaction...
    assert after["ledger_entries"] == before["ledger_entries"] + 4  # ...of four entries
    [credit] = entries(wh, wallet)
    assert credit["direction"] == "credit" and credit["amount"] == "1234"
    assert credit["kind"] == "webhook_payment"
    [commission] = entries(wh, referrer)
    assert commission["tx_id"] == credit["tx_id"] and commission["amount"] == "123"
    # The job's info line.
    want = (f"webhook {provider}:{d.event_id} credited 1234 to {wallet} "
            f"(commission 123 to {referrer}) in {credit['tx_id']}")
    rec = wh.wait_for_log(lambda r: "credited" in str(r.get("msg")), what="the credited line")
    assert rec["msg"] == want and rec["level"] == "info", rec
    assert rec["queue"] == "webhooks" and rec["kind"] == "webhook.process", rec

    # A redelivery changes nothing, now or later.
    with nothing_written(wh):
        r = d.send(wh)
        assert r.status == 200, r
        assert r.json == {"status": "duplicate"}
        time.sleep(0.3)
    assert balance(wh, wallet) == 1234 and balance(wh, referrer) == 123
    assert webhook_metric(wh, provider, "accepted") == 1
    assert webhook_metric(wh, provider, "duplicate") == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rotated_secrets_both_accepted(wh, provider):
    wallet = new_wallet()
    assert wh.register(wallet).status == 201
    if provider == "coinbase":
        ds = [coinbase(wallet, amount="1.00", secret=s) for s in CB_SECRETS]
    elif provider == "stripe":
        ds = [stripe(wallet, amount=100, secret=s) for s in STRIPE_SECRETS]
    else:
        ds = [standard(wallet, amount="100", key=k) for k in STD_KEYS]
    for d in ds:
        r = d.send(wh)
        assert r.status == 200 and r.json == {"status": "accepted"}, r
    wait_balance(wh, wallet, 200)


def test_stripe_header_with_several_signatures(wh):
    """Stripe sends one v1 per active secret during its own rotation; any
    one valid is enough, and v0 is ignored."""
    wallet = new_wallet()
    assert wh.register(wallet).status == 201
    d = stripe(wallet, amount=500)
    t, good = d.headers["Stripe-Signature"].split(",")
    other = hex_hmac("not-our-secret", f"{t[2:]}.".encode() + d.body)
    r = d.send(wh, headers={"Stripe-Signature": f"{t},v1={other},v0={other},{good}"})
    assert r.status == 200 and r.json == {"status": "accepted"}, r
    wait_balance(wh, wallet, 500)


def test_wallet_without_referrer_gets_two_entries(wh):
    wallet = new_wallet()
    assert wh.register(wallet).status == 201
    before = snapshot(wh)
    assert stripe(wallet, amount=999).send(wh).status == 200
    wait_balance(wh, wallet, 999)
    after = snapshot(wh)
    assert after["ledger_entries"] == before["ledger_entries"] + 2
    assert balance(wh, "commissions") == 0
    [credit] = entries(wh, wallet)
    rec = wh.wait_for_log(lambda r: "credited" in str(r.get("msg")), what="the credited line")
    assert rec["msg"].endswith(f" credited 999 to {wallet} (commission 0 to nobody) "
                               f"in {credit['tx_id']}"), rec


def test_non_paying_event_is_stored_not_processed(wh):
    wallet = new_wallet()
    assert wh.register(wallet).status == 201
    before = snapshot(wh)
    for d in (stripe(wallet, type_="charge.refunded"), coinbase(wallet, type_="charge:created"),
              standard(wallet, type_="payment.pending")):
        r = d.send(wh)
        assert r.status == 200 and r.json == {"status": "accepted"}, r
    time.sleep(0.5)
    after = snapshot(wh)
    assert after["webhook_events"] == before.get("webhook_events", 0) + 3
    assert after["jobs"] == before["jobs"]
    assert after["ledger_entries"] == before["ledger_entries"]
    assert balance(wh, wallet) == 0


# --------------------------------------------------------------------------
# Tampering: 401 and nothing written


def flip(b, i):
    """b with the byte at i changed to another printable byte."""
    b = bytearray(b)
    b[i] = ord("0") if b[i] != ord("0") else ord("1")
    return bytes(b)


def tamper_cases(provider, wallet):
    """(name, delivery, extra headers, body override) for every tampering."""
    d = MAKERS[provider](wallet)
    body = d.body
    # Tampered bodies: a byte inside the wallet string, trailing whitespace,
    # and the same JSON serialized differently (the signature is checked
    # before the body is parsed, so invalid JSON would be a 401 as well).
    pos = body.index(wallet.encode()) + 5
    cases = [("body byte", d, None, flip(body, pos)),
             ("body extra byte", d, None, body + b" "),
             ("body re-serialized", d, None, json.dumps(json.loads(body), indent=1).encode())]
    if provider == "coinbase":
        sig = d.headers["X-CC-Webhook-Signature"]
        cases += [
            ("signature byte", d, {"X-CC-Webhook-Signature": sig[:10] + ("0" if sig[10] != "0" else "1") + sig[11:]}, None),
            ("missing header", d, {"X-CC-Webhook-Signature": None}, None),
            ("empty header", d, {"X-CC-Webhook-Signature": ""}, None),
            ("wrong secret", coinbase(wallet, secret="cb-secret-wrong"), None, None),
            ("truncated", d, {"X-CC-Webhook-Signature": sig[:63]}, None),
            ("extended", d, {"X-CC-Webhook-Signature": sig + "0"}, None),
            ("non-hex", d, {"X-CC-Webhook-Signature": "z" + sig[1:]}, None),
            ("prefixed", d, {"X-CC-Webhook-Signature": "sha256=" + sig}, None),
            # created_at is Coinbase's timestamp: one second later, same signature
            ("timestamp in body", d, None,
             flip(body, body.index(b'"created_at": "') + len('"created_at": "') + 18)),
        ]
    elif provider == "stripe":
        t, v1 = d.headers["Stripe-Signature"].split(",")
        sig = v1[3:]
        cases += [
            ("signature byte", d, {"Stripe-Signature": f"{t},v1={flip(sig.encode(), 5).decode()}"}, None),
            ("timestamp", d, {"Stripe-Signature": f"t={int(t[2:]) - 1},{v1}"}, None),
            ("missing header", d, {"Stripe-Signature": None}, None),
            ("no t", d, {"Stripe-Signature": v1}, None),
            ("no v1", d, {"Stripe-Signature": t}, None),
            ("only v0", d, {"Stripe-Signature": f"{t},v0={sig}"}, None),
            ("wrong secret", stripe(wallet, secret="whsec_stripe_wrong"), None, None),
            ("truncated", d, {"Stripe-Signature": f"{t},v1={sig[:60]}"}, None),
            ("non-hex", d, {"Stripe-Signature": f"{t},v1=g{sig[1:]}"}, None),
        ]
    else:
        sig = d.headers["webhook-signature"][3:]
        other = ("A" if sig[7] != "A" else "B")
        cases += [
            ("signature byte", d, {"webhook-signature": f"v1,{sig[:7]}{other}{sig[8:]}"}, None),
            ("timestamp", d, {"webhook-timestamp": str(int(d.headers["webhook-timestamp"]) + 1)}, None),
            ("id", d, {"webhook-id": d.event_id + "x"}, None),
            ("missing signature", d, {"webhook-signature": None}, None),
            ("missing id", d, {"webhook-id": None}, None),
            ("missing timestamp", d, {"webhook-timestamp": None}, None),
            ("wrong secret", standard(wallet, key=b"another key entirely"), None, None),
            ("whsec string as key", standard(wallet, key=STD_SECRETS[0].encode()), None, None),
            ("truncated", d, {"webhook-signature": f"v1,{sig[:40]}"}, None),
            ("padding dropped", d, {"webhook-signature": f"v1,{sig.rstrip('=')}"}, None),
            ("non-base64", d, {"webhook-signature": f"v1,*{sig[1:]}"}, None),
            ("url-safe alphabet", d, {"webhook-signature": "v1," + sig.replace("+", "-").replace("/", "_")}
             if ("+" in sig or "/" in sig) else {"webhook-signature": f"v2,{sig}"}, None),
            ("other version only", d, {"webhook-signature": f"v1a,{sig}"}, None),
        ]
    return cases


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_tampering_is_401_and_writes_nothing(wh, provider):
    wallet = new_wallet()
    assert wh.register(wallet).status == 201
    cases = tamper_cases(provider, wallet)
    bad_before = webhook_metric(wh, provider, "bad_signature")
    with nothing_written(wh):
        for name, d, headers, body in cases:
            r = d.send(wh, headers=headers, body=body)
            assert_error(r, 401, "invalid_signature")
            assert r.status == 401, f"{provider} {name}: {r!r}"
        time.sleep(0.3)
    assert balance(wh, wallet) == 0
    assert webhook_metric(wh, provider, "bad_signature") == bad_before + len(cases)
    assert webhook_metric(wh, provider, "accepted") == 0


@pytest.mark.parametrize("provider", PROVIDERS)
# Just past the 5 minutes (with a margin: timestamps are whole seconds, so
# +301 s truncated could land inside the window), and far past.
@pytest.mark.parametrize("offset", [-303, -3600, 303, 3600], ids=lambda o: f"{o:+d}s")
def test_old_and_future_timestamps_are_stale(wh, provider, offset):
    if provider == "coinbase" and offset < 0:
        pytest.skip("a late Coinbase event is accepted: test_coinbase_late_first_delivery_...")
    # The server judges the timestamp against its clock when the request
    # reaches the check, some time after ts was computed here: a timestamp
    # in the past only gets older, but one 303 s ahead is inside the
    # window if the check runs more than ~2 s later (a loaded machine, the
    # server descheduled). So an acceptance is a failure only when the
    # timestamp was still more than 300 s ahead when the answer arrived
    # (the check ran before that); an acceptance the delay explains is no
    # verdict, and the delivery is made again with a fresh timestamp.
    for attempt in range(5):
        wallet = new_wallet()
        assert wh.register(wallet).status == 201
        ts = time.time() + offset
        if provider == "coinbase":
            d = coinbase(wallet, created=ts)
        elif provider == "stripe":
            d = stripe(wallet, t=ts)
        else:
            d = standard(wallet, ts=ts)
        before = snapshot(wh)
        r = d.send(wh)
        ahead_at_answer = int(ts) - time.time()
        if r.status == 200 and 0 < ahead_at_answer <= 300:
            continue    # the check may have run inside the window: no verdict
        assert_error(r, 401, "stale_webhook")
        after = snapshot(wh)
        assert after == before, f"rows were written: {diff_snapshots(before, after)}"
        break
    else:
        pytest.fail("5 deliveries 303 s ahead each took over 2 s to be answered")
    assert webhook_metric(wh, provider, "stale") == 1
    assert webhook_metric(wh, provider, "bad_signature") == 0


def test_timestamps_within_tolerance_are_fresh(wh):
    wallet = new_wallet()
    assert wh.register(wallet).status == 201
    now = time.time()
    for d in (stripe(wallet, amount=1, t=now - 240), stripe(wallet, amount=1, t=now + 240),
              standard(wallet, amount="1", ts=now - 240), coinbase(wallet, amount="0.01", created=now + 240)):
        r = d.send(wh)
        assert r.status == 200 and r.json == {"status": "accepted"}, r
    wait_balance(wh, wallet, 4)


# --------------------------------------------------------------------------
# Malformed events


def test_signed_but_malformed_event_is_400(wh):
    wallet = new_wallet()
    now = int(time.time())
    cases = []
    body = json.dumps({"type": "payment_intent.succeeded", "data": {}}).encode()   # no id
    cases.append(("stripe", body, {"Stripe-Signature": f"t={now},v1={hex_hmac(STRIPE_SECRETS[0], f'{now}.'.encode() + body)}"}))
    body = json.dumps({"id": "evt_x"}).encode()                                     # no type
    cases.append(("stripe", body, {"Stripe-Signature": f"t={now},v1={hex_hmac(STRIPE_SECRETS[1], f'{now}.'.encode() + body)}"}))
    body = json.dumps({"event": {"id": "e1", "type": "charge:confirmed"}}).encode()  # no created_at
    cases.append(("coinbase", body, {"X-CC-Webhook-Signature": hex_hmac(CB_SECRETS[0], body)}))
    body = json.dumps({"event": {"id": "e1", "type": "charge:confirmed",
                                 "created_at": "14/11/2023"}}).encode()
    cases.append(("coinbase", body, {"X-CC-Webhook-Signature": hex_hmac(CB_SECRETS[0], body)}))
    body = json.dumps({"data": {"wallet": wallet}}).encode()                         # no type
    cases.append(("standard", body, {"webhook-id": "msg_1", "webhook-timestamp": str(now),
                                     "webhook-signature": "v1," + b64_hmac(STD_KEYS[0], f"msg_1.{now}.".encode() + body)}))
    with nothing_written(wh):
        for provider, body, headers in cases:
            r = wh.post(PATHS[provider], body=body,
                        headers={"Content-Type": "application/json", **headers})
            assert_error(r, 400, "invalid_event")
    assert webhook_metric(wh, "stripe", "malformed") == 2
    assert webhook_metric(wh, "coinbase", "malformed") == 2
    assert webhook_metric(wh, "standard", "malformed") == 1


# --------------------------------------------------------------------------
# Concurrency: one credit, the rest duplicates


@pytest.mark.parametrize("provider", PROVIDERS)
def test_twenty_concurrent_deliveries_one_credit(wh, provider):
    wallet, referrer = register_pair(wh)
    d = MAKERS[provider](wallet)
    before = snapshot(wh)
    results = only_responses(concurrent_requests(wh.port, [d.request()] * 20))
    statuses = sorted((r.status, (r.json or {}).get("status")) for r in results)
    assert statuses == sorted([(200, "accepted")] + [(200, "duplicate")] * 19), statuses
    wait_balance(wh, wallet, 1234)
    wait_balance(wh, referrer, 123)
    time.sleep(0.5)
    assert balance(wh, wallet) == 1234
    assert len(entries(wh, wallet)) == 1
    after = snapshot(wh)
    assert after["webhook_events"] == before.get("webhook_events", 0) + 1
    assert after["ledger_tx"] == before["ledger_tx"] + 1
    assert after["jobs"] == before["jobs"] + 1
    assert webhook_metric(wh, provider, "duplicate") == 19


def traced(d):
    """d's request with a traceparent of its own; returns (request, trace id)."""
    t = secrets.token_hex(16)
    r = d.request()
    r["headers"] = {**r["headers"], "traceparent": f"00-{t}-{secrets.token_hex(8)}-01"}
    return r, t


def job_traces(server):
    return dict(store_rows(server, "SELECT unique_key, traceparent FROM jobs"
                                   " WHERE kind = 'webhook.process'"))


def test_concurrent_new_events_are_stored_each_with_its_job_and_trace(wh):
    """40 new events at once, paying and not, of every provider. On SQLite
    the writer takes them in a few batches and stores each batch's events
    and jobs with multi-row INSERTs: every delivery is still answered
    accepted, each event stored once with its job, and each job carries
    the trace of the request that caused it."""
    wallet, referrer = register_pair(wh)
    new = [MAKERS[p](wallet) for p in PROVIDERS for _ in range(12)]
    ignored = [standard(wallet, type_="payment.pending") for _ in range(4)]
    reqs, traces = zip(*[traced(d) for d in new + ignored])
    before = snapshot(wh)
    results = only_responses(concurrent_requests(wh.port, list(reqs)))
    assert [(r.status, r.json) for r in results] == [(200, {"status": "accepted"})] * len(reqs)
    after = snapshot(wh)
    assert after["webhook_events"] == before["webhook_events"] + len(reqs)
    assert after["jobs"] == before["jobs"] + len(new)
    jobs = job_traces(wh)
    for d, t in zip(new, traces):
        assert jobs[f"{d.provider}:{d.event_id}"].split("-")[1] == t, d.event_id
    rows = store_rows(wh, "SELECT status FROM webhook_events WHERE event_id IN (%s)"
                      % ",".join(f"'{d.event_id}'" for d in ignored))
    assert rows == [("ignored",)] * len(ignored)
    wait_balance(wh, wallet, 1234 * len(new), timeout=30)
    wait_balance(wh, referrer, 123 * len(new), timeout=30)
    assert len(entries(wh, wallet)) == len(new)


def test_concurrent_mix_of_new_known_and_repeated_events(wh):
    """New events, redeliveries of an event stored before, and one new event
    sent three times, all at once: a known or repeated event in a batch
    makes the writer store that batch's deliveries one at a time, so each
    gets its own answer: new ones accepted, the known one duplicate, the
    repeated one accepted once."""
    wallet, referrer = register_pair(wh)
    known = MAKERS["stripe"](wallet)
    assert known.send(wh).json == {"status": "accepted"}
    wait_balance(wh, wallet, 1234)
    new = [MAKERS[p](wallet) for p in PROVIDERS for _ in range(6)]
    twice = MAKERS["coinbase"](wallet)
    deliveries = new + [known] * 3 + [twice] * 3
    before = snapshot(wh)
    results = only_responses(concurrent_requests(wh.port, [d.request() for d in deliveries]))
    assert all(r.status == 200 for r in results), [r.status for r in results]
    answers = [r.json["status"] for r in results]
    assert answers[:len(new)] == ["accepted"] * len(new)
    assert answers[len(new):len(new) + 3] == ["duplicate"] * 3
    assert sorted(answers[len(new) + 3:]) == ["accepted", "duplicate", "duplicate"]
    after = snapshot(wh)
    assert after["webhook_events"] == before["webhook_events"] + len(new) + 1
    assert after["jobs"] == before["jobs"] + len(new) + 1
    paid = 1 + len(new) + 1
    wait_balance(wh, wallet, 1234 * paid, timeout=30)
    wait_balance(wh, referrer, 123 * paid, timeout=30)
    assert len(entries(wh, wallet)) == paid


# --------------------------------------------------------------------------
# Commission arithmetic


@pytest.mark.parametrize("bps,amounts", [
    (1000, [1234, 1239, 1, 9, 10, 99999, 9223372036854775]),
    (333, [1000, 2999, 3, 31, 123456789]),
    (0, [500]),
    (10000, [777]),
], ids=lambda v: str(v) if isinstance(v, int) else None)
def test_commission_is_floored_and_conserves_units(start_server, bps, amounts):
    srv = start_server(env={**ENV, "SETTLED_COMMISSION_BPS": str(bps)})
    want_rev = want_com = 0
    for amount in amounts:
        wallet, referrer = register_pair(srv)
        before = snapshot(srv)
        commission = amount * bps // 10000      # floor; the rest stays with the payer side
        assert standard(wallet, amount=str(amount)).send(srv).status == 200
        wait_balance(srv, wallet, amount)
        wait_balance(srv, referrer, commission)
        want_rev -= amount
        want_com -= commission
        after = snapshot(srv)
        assert after["ledger_entries"] - before["ledger_entries"] == (4 if commission else 2), amount
        # No unit created or lost: the four movements sum to zero.
        assert balance(srv, "revenue") == want_rev
        assert balance(srv, "commissions") == want_com
    total = sum(int(e["amount"]) * (1 if e["direction"] == "credit" else -1)
                for e in entries(srv, "revenue") + entries(srv, "commissions"))
    assert total == want_rev + want_com


def test_commission_amount_with_cents_from_coinbase(wh):
    wallet, referrer = register_pair(wh)
    assert coinbase(wallet, amount="0.99").send(wh).status == 200   # 99 cents -> 9.9 -> 9
    wait_balance(wh, wallet, 99)
    wait_balance(wh, referrer, 9)


# --------------------------------------------------------------------------
# Events that can never be processed: the DLQ


def test_unknown_wallet_goes_to_dlq_then_retry_after_register(wh):
    wallet = new_wallet()                      # never registered
    d = stripe(wallet, amount=4321)
    before = snapshot(wh)
    r = d.send(wh)
    assert r.status == 200 and r.json == {"status": "accepted"}, r
    job = wait_until(lambda: dlq_job_for(wh, d), timeout=10, what="the job in the DLQ")
    assert job["state"] == "dead"
    assert job["attempts"] == 1, job            # permanent: no retries
    assert job["last_error"].startswith("unknown_wallet"), job
    assert wallet in job["last_error"]
    after = snapshot(wh)
    assert after["ledger_tx"] == before["ledger_tx"]
    assert after["ledger_entries"] == before["ledger_entries"]

    # An operator registers the wallet and retries the job: credited once.
    assert wh.register(wallet).status == 201
    r = wh.post(f"/api/admin/dlq/{job['id']}/retry", headers=ADMIN)
    assert r.status == 200, r
    wait_balance(wh, wallet, 4321)
    assert dlq_job_for(wh, d) is None


def test_amount_with_too_many_decimals_goes_to_dlq(wh):
    wallet = new_wallet()
    assert wh.register(wallet).status == 201
    d = coinbase(wallet, amount="12.345")
    assert d.send(wh).status == 200
    job = wait_until(lambda: dlq_job_for(wh, d), timeout=10, what="the job in the DLQ")
    assert job["attempts"] == 1, job
    assert job["last_error"].startswith("invalid_amount"), job
    assert "decimals" in job["last_error"], job
    assert balance(wh, wallet) == 0


def test_wrong_currency_goes_to_dlq(wh):
    wallet = new_wallet()
    assert wh.register(wallet).status == 201
    d = stripe(wallet, amount=100, currency="eur")
    assert d.send(wh).status == 200
    job = wait_until(lambda: dlq_job_for(wh, d), timeout=10, what="the job in the DLQ")
    assert job["last_error"].startswith("currency_mismatch"), job
    assert balance(wh, wallet) == 0


def test_stripe_partial_capture_credits_amount_received(wh):
    """A partial capture authorizes amount and receives amount_received:
    only what was received is credited (and the commission is on that)."""
    wallet, referrer = register_pair(wh)
    d = stripe(wallet, amount=5000, amount_received=1234)
    r = d.send(wh)
    assert r.status == 200 and r.json == {"status": "accepted"}, r
    wait_balance(wh, wallet, 1234)
    wait_balance(wh, referrer, 123)
    [credit] = entries(wh, wallet)
    assert credit["amount"] == "1234"
    # Without amount_received (older API versions) amount is credited.
    d = stripe(wallet, amount=66)
    assert d.send(wh).status == 200
    wait_balance(wh, wallet, 1234 + 66)


def test_stripe_zero_received_credits_nothing_and_goes_to_dlq(wh):
    """amount_received 0: nothing was paid, so nothing is credited and the
    event is not read as its authorized amount; it is dead at once with
    invalid_amount for an operator to look at."""
    wallet = new_wallet()
    assert wh.register(wallet).status == 201
    d = stripe(wallet, amount=5000, amount_received=0)
    before = snapshot(wh)
    assert d.send(wh).status == 200
    job = wait_until(lambda: dlq_job_for(wh, d), timeout=10, what="the job in the DLQ")
    assert job["attempts"] == 1, job
    assert job["last_error"].startswith("invalid_amount"), job
    assert "amount_received" in job["last_error"], job
    after = snapshot(wh)
    assert after["ledger_tx"] == before["ledger_tx"]
    assert balance(wh, wallet) == 0


@pytest.mark.parametrize("event_id", ["msg.1.2", "evt 42", "a:b/c?d=e#f~!", "x" * 255,
                                      f"a.{int(time.time())}",
                                      # every byte escaped in the job's JSON payload
                                      '"\\' * 127 + '"'])
def test_standard_ids_with_dots_and_printable_characters(wh, event_id):
    """Standard Webhooks allows any id: '.', blanks and other printable
    ASCII are accepted (and the event is credited once)."""
    wallet = new_wallet()
    assert wh.register(wallet).status == 201
    d = standard(wallet, amount="321", event_id=event_id)
    r = d.send(wh)
    assert r.status == 200 and r.json == {"status": "accepted"}, r
    wait_balance(wh, wallet, 321)
    with nothing_written(wh):
        r = d.send(wh)
        assert r.status == 200 and r.json == {"status": "duplicate"}, r


@pytest.mark.parametrize("event_id", [" lead", "x" * 256, "tab\there", "del\x7f"])
def test_standard_ids_out_of_range_are_refused(wh, event_id):
    wallet = new_wallet()
    d = standard(wallet, event_id=event_id)
    with nothing_written(wh):
        r = d.send(wh)
        assert r.status in (400, 401), r
        assert r.json["error"] in ("invalid_signature", "invalid_request", "invalid_header"), r


# --------------------------------------------------------------------------
# Configuration edges


def test_no_secret_configured_refuses_everything(start_server):
    srv = start_server(env={"SETTLED_WEBHOOK_SECRET": None, "SETTLED_STRIPE_WEBHOOK_SECRET": None,
                            "SETTLED_STANDARD_WEBHOOK_SECRET": None})
    wallet = new_wallet()
    with nothing_written(srv):
        for provider in PROVIDERS:
            assert_error(MAKERS[provider](wallet).send(srv), 401, "invalid_signature")


def test_metric_family_is_exported_at_zero(wh):
    samples = parse_metrics(wh.metrics())
    for provider in PROVIDERS:
        for result in ("accepted", "late", "duplicate", "bad_signature", "stale", "malformed"):
            s = find_samples(samples, "settled_webhook_events_total", provider=provider, result=result)
            assert len(s) == 1 and s[0][2] == 0, (provider, result, s)


# --------------------------------------------------------------------------
# Late Coinbase deliveries: no paid event lost, none paid twice


@pytest.mark.parametrize("age", [303, 3600, 3 * 86400], ids=lambda a: f"{a}s")
def test_coinbase_late_first_delivery_is_accepted_and_credited_once(wh, age):
    """Coinbase signs no timestamp and retries a failed delivery for days with
    the same body (the same created_at): a correctly signed first delivery
    of any age is the provider's genuine event. It is accepted, flagged
    late, and credited once; every redelivery is a duplicate."""
    wallet, referrer = register_pair(wh)
    d = coinbase(wallet, amount="12.34", created=time.time() - age)
    r = d.send(wh)
    assert r.status == 200 and r.json == {"status": "accepted", "late": True}, r
    wait_balance(wh, wallet, 1234)
    wait_balance(wh, referrer, 123)
    with nothing_written(wh):
        for _ in range(3):
            r = d.send(wh)
            assert r.status == 200 and r.json == {"status": "duplicate"}, r
        time.sleep(0.3)
    assert balance(wh, wallet) == 1234
    assert len(entries(wh, wallet)) == 1
    assert webhook_metric(wh, "coinbase", "late") == 1
    assert webhook_metric(wh, "coinbase", "accepted") == 0
    assert webhook_metric(wh, "coinbase", "duplicate") == 3
    assert webhook_metric(wh, "coinbase", "stale") == 0
    wh.wait_for_log(lambda rec: rec.get("level") == "warn" and d.event_id in rec.get("msg", "")
                    and "late" in rec.get("msg", ""), what="the late-acceptance warning")


def test_coinbase_late_concurrent_deliveries_credit_once(wh):
    wallet, _ = register_pair(wh)
    d = coinbase(wallet, amount="12.34", created=time.time() - 7200)
    results = only_responses(concurrent_requests(wh.port, [d.request()] * 12))
    got = sorted((r.status, r.json.get("status"), r.json.get("late")) for r in results)
    assert got == sorted([(200, "accepted", True)] + [(200, "duplicate", None)] * 11), got
    wait_balance(wh, wallet, 1234)
    time.sleep(0.5)
    assert len(entries(wh, wallet)) == 1


def test_coinbase_future_event_stays_stale_and_tampered_late_event_is_401(wh):
    wallet = new_wallet()
    assert wh.register(wallet).status == 201
    with nothing_written(wh):
        assert_error(coinbase(wallet, created=time.time() + 3600).send(wh), 401, "stale_webhook")
        # A late event is only accepted with a valid signature.
        d = coinbase(wallet, created=time.time() - 3600)
        assert_error(d.send(wh, headers={"X-CC-Webhook-Signature": "0" * 64}), 401,
                     "invalid_signature")
        assert_error(coinbase(wallet, created=time.time() - 3600, secret="cb-wrong").send(wh),
                     401, "invalid_signature")


# --------------------------------------------------------------------------
# Limits: per source address; unsigned traffic never spends signed budget


LIMITED_ENV = {**ENV, "RL_WEBHOOK_PER_MIN": "4", "RL_AUTH_FAIL_PER_MIN": "3",
               "SETTLED_TRUST_PROXY": "127.0.0.1"}


def junk(provider, xff):
    """An unsigned (badly signed) delivery from xff."""
    d = MAKERS[provider](new_wallet())
    bad = {"coinbase": {"X-CC-Webhook-Signature": "0" * 64},
           "stripe": {"Stripe-Signature": f"t={int(time.time())},v1={'0' * 64}"},
           "standard": {"webhook-signature": "v1," + "A" * 43 + "="}}[provider]
    return d, {**bad, "X-Forwarded-For": xff}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unsigned_flood_does_not_starve_signed_deliveries(start_server, provider):
    """Before: one bucket per route, checked before the signature, so 100
    junk POSTs a minute made every real delivery a 429. Now the signature
    is checked first: junk is charged to its sender's failed
    authentications (401, then 429 past RL_AUTH_FAIL_PER_MIN), signed
    deliveries to their source address's webhook budget."""
    srv = start_server(env=LIMITED_ENV)
    attacker, provider_ip = "203.0.113.66", "198.51.100.5"
    wallet = new_wallet()
    assert srv.register(wallet).status == 201
    with nothing_written(srv):
        for i in range(30):
            d, h = junk(provider, attacker)
            r = d.send(srv, headers=h)
            if i < 3:
                assert_error(r, 401, "invalid_signature")
            else:
                body = assert_error(r, 429, "rate_limited")
                assert body["policy"] == "auth_fail", body
                assert int(r.headers["Retry-After"]) >= 1
    # The provider's deliveries all pass, up to its own address's budget.
    for i in range(4):
        d = MAKERS[provider](wallet)
        r = d.send(srv, headers={"X-Forwarded-For": provider_ip})
        assert r.status == 200 and r.json == {"status": "accepted"}, (i, r)
        assert r.headers.get("RateLimit-Policy") and 'name="webhook"' in r.headers["RateLimit-Policy"]
    r = MAKERS[provider](wallet).send(srv, headers={"X-Forwarded-For": provider_ip})
    body = assert_error(r, 429, "rate_limited")
    assert body["policy"] == "webhook", body
    # Signed deliveries from the junk sender's own address are not blocked
    # by its failures either (the key cannot be guessed: nothing to gate).
    r = MAKERS[provider](wallet).send(srv, headers={"X-Forwarded-For": attacker})
    assert r.status == 200 and r.json == {"status": "accepted"}, r
    # Another address has its own budget.
    r = MAKERS[provider](wallet).send(srv, headers={"X-Forwarded-For": "198.51.100.6"})
    assert r.status == 200, r
    wait_balance(srv, wallet, 6 * 1234)
    assert webhook_metric(srv, provider, "bad_signature") == 30
    s = find_samples(parse_metrics(srv.metrics()), "settled_auth_failures_total",
                     route=PATHS[provider])
    got = {x[1]["result"]: x[2] for x in s}
    assert got == {"refused": 3, "limited": 27}, got


def test_stale_signed_timestamp_counts_against_the_sender(start_server):
    """A Stripe/Standard delivery whose signed timestamp is stale is a
    replay (a genuine retry is signed anew): a failure of its sender."""
    srv = start_server(env=LIMITED_ENV)
    wallet = new_wallet()
    for i in range(3):
        assert_error(stripe(wallet, t=time.time() - 3600).send(srv, headers={"X-Forwarded-For": "192.0.2.77"}),
                     401, "stale_webhook")
    r = stripe(wallet, t=time.time() - 3600).send(srv, headers={"X-Forwarded-For": "192.0.2.77"})
    assert_error(r, 429, "rate_limited")


def test_signature_is_checked_before_the_body_is_parsed(wh):
    """Unsigned bytes are never parsed: junk that is not JSON is a 401 (a
    failure of its sender), signed junk a 400."""
    with nothing_written(wh):
        for provider in PROVIDERS:
            d = MAKERS[provider](new_wallet())
            assert_error(d.send(wh, body=b"{not json"), 401, "invalid_signature")
        body = b"{not json"
        assert_error(wh.post(PATHS["coinbase"], body=body,
                             headers={"Content-Type": "application/json",
                                      "X-CC-Webhook-Signature": hex_hmac(CB_SECRETS[0], body)}),
                     400, "invalid_json")


# --------------------------------------------------------------------------
# The job's payload


def test_the_job_carries_the_payment_and_older_jobs_read_the_event(start_server):
    """Intake puts the payment it parsed in the job's payload, so the job
    does not read and parse the stored body again; a job stored before
    that (the event and provider only) reads it as it always did."""
    srv = start_server(env={**ENV, "SETTLED_WORKERS": "0"})
    new_w, new_ref = register_pair(srv)
    old_w, old_ref = register_pair(srv)
    new_d, old_d = standard(new_w, amount="1234"), standard(old_w, amount="2000")
    assert new_d.send(srv).status == 200
    assert old_d.send(srv).status == 200
    [(payload,)] = store_rows(srv, "SELECT payload FROM jobs WHERE unique_key = "
                                   f"'standard:{new_d.event_id}'")
    assert json.loads(payload) == {"amount": 1234, "event_id": new_d.event_id,
                                   "provider": "standard", "wallet": new_w}
    srv.stop()
    store_exec(srv, "UPDATE jobs SET payload = '" +
                json.dumps({"event_id": old_d.event_id, "provider": "standard"}) +
                f"' WHERE unique_key = 'standard:{old_d.event_id}'")

    srv.env["SETTLED_WORKERS"] = "2"
    srv.start()
    wait_balance(srv, new_w, 1234)
    wait_balance(srv, new_ref, 123)
    wait_balance(srv, old_w, 2000)
    wait_balance(srv, old_ref, 200)
    assert len(entries(srv, new_w)) == 1 and len(entries(srv, old_w)) == 1
