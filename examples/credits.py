#!/usr/bin/env python3
"""Credit reservations with settled's holds (SPEC section 13), as an SMS
platform uses them, Python standard library only:

  1. the shop has an account for its prepaid credits (shop:<n>:credits);
  2. it buys credits: Stripe's payment_intent.succeeded webhook names the
     account in metadata.account = "<client_id>/shop:<n>:credits", and
     settled credits it (here the script signs and sends that webhook as
     Stripe would, with the endpoint's secret);
  3. a campaign reserves 500 credits (a hold to revenue): the shop's
     available balance drops, its balance does not;
  4. the campaign finishes having sent 320 messages: it captures 320 and the
     other 180 go back to the shop, exactly once (a retry of the capture is
     replayed, a second capture is 409 hold_not_pending);
  5. a sender crashes after reserving 200: it never captures, and the hold
     expires back to the shop after expires_in seconds.

    SETTLED_URL=http://127.0.0.1:8080 SETTLED_ADMIN_TOKEN=... \\
    SETTLED_STRIPE_WEBHOOK_SECRET=whsec_... python3 examples/credits.py

Environment:
    SETTLED_URL                    server (default http://127.0.0.1:8080)
    SETTLED_API_KEY, SETTLED_CLIENT_ID  the shop's API key and its client id;
                                   when unset, SETTLED_ADMIN_TOKEN creates a key
    SETTLED_ADMIN_TOKEN            the operator's token (onboarding only)
    SETTLED_STRIPE_WEBHOOK_SECRET  the Stripe endpoint's signing secret; required
    CREDITS                        credits bought (default 1000)
    CRASH_EXPIRES_IN               seconds the crashed sender's hold lives (default 2)
    SETTLED_TIMEOUT, SETTLED_MAX_ATTEMPTS  per attempt / per call (default 10 s, 8)

Every POST carries an Idempotency-Key chosen once per logical operation and
reused by its retries (network errors, 409 idempotency_key_in_use, 429,
5xx, waiting at least Retry-After), as in examples/client.py.

Prints one line per step; the last is "OK <account> balance=<b> held=0".
Exit 0 when every step saw what it should, 1 otherwise.
"""

import hashlib
import hmac
import http.client
import json
import os
import random
import secrets
import sys
import time
import urllib.error
import urllib.request

BASE = os.environ.get("SETTLED_URL", "http://127.0.0.1:8080").rstrip("/")
API_KEY = os.environ.get("SETTLED_API_KEY", "")
CLIENT_ID = os.environ.get("SETTLED_CLIENT_ID", "")
ADMIN_TOKEN = os.environ.get("SETTLED_ADMIN_TOKEN", "")
STRIPE_SECRET = os.environ.get("SETTLED_STRIPE_WEBHOOK_SECRET", "")
CREDITS = int(os.environ.get("CREDITS", "1000"))
CRASH_EXPIRES_IN = int(os.environ.get("CRASH_EXPIRES_IN", "2"))
TIMEOUT = float(os.environ.get("SETTLED_TIMEOUT", "10"))
MAX_ATTEMPTS = int(os.environ.get("SETTLED_MAX_ATTEMPTS", "8"))
RETRY_STATUSES = {429, 500, 502, 503, 504}


class Failed(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def call(method, path, body=None, idem_key=None, auth=None, raw_body=None, headers=None):
    """One logical call, retried with the same Idempotency-Key. Returns (status, json, headers)."""
    data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else None)
    for attempt in range(MAX_ATTEMPTS):
        h = {"Accept": "application/json", **(headers or {})}
        if data is not None:
            h["Content-Type"] = "application/json"
        if idem_key:
            h["Idempotency-Key"] = idem_key
        if auth:
            h["Authorization"] = f"Bearer {auth}"
        req = urllib.request.Request(BASE + path, data=data, method=method, headers=h)
        retry_after = None
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None), resp.headers
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                answer = json.loads(raw) if raw else None
            except ValueError:
                answer = None
            code = answer.get("error") if isinstance(answer, dict) else None
            if not (e.code in RETRY_STATUSES or (e.code == 409 and code == "idempotency_key_in_use")):
                return e.code, answer, e.headers
            why = f"{e.code} {code}"
            ra = e.headers.get("Retry-After")
            retry_after = float(ra) if ra and ra.strip().isdigit() else None
        except (OSError, http.client.HTTPException) as e:
            why = f"network error: {e}"
        if attempt + 1 == MAX_ATTEMPTS:
            raise Failed(f"{method} {path}: giving up after {MAX_ATTEMPTS} attempts ({why})")
        delay = random.uniform(0, min(8.0, 0.25 * 2 ** attempt))
        delay = max(delay, retry_after) if retry_after is not None else delay
        print(f"{method} {path}: {why}; retrying in {delay:.2f}s", file=sys.stderr, flush=True)
        time.sleep(delay)
    raise Failed("unreachable")


def expect(got, ok, what):
    status, answer = got[0], got[1]
    if status not in ok:
        raise Failed(f"{what}: HTTP {status} {json.dumps(answer)}")
    return answer


def account(name):
    return expect(call("GET", f"/api/v2/accounts/{name}", auth=API_KEY), {200}, f"read {name}")


def wait_for(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Failed(f"timed out waiting for {what}")
        time.sleep(0.2)


def stripe_payment(account_qname, amount):
    """payment_intent.succeeded for amount (cents), signed like Stripe signs it."""
    t = int(time.time())
    body = json.dumps({
        "id": f"evt_{secrets.token_hex(12)}", "type": "payment_intent.succeeded", "created": t,
        "data": {"object": {"id": f"pi_{secrets.token_hex(12)}", "amount": amount,
                            "amount_received": amount, "currency": "usd",
                            "metadata": {"account": account_qname}}}}).encode()
    sig = hmac.new(STRIPE_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={t},v1={sig}"}


def main():
    global API_KEY, CLIENT_ID
    if not STRIPE_SECRET:
        raise Failed("SETTLED_STRIPE_WEBHOOK_SECRET is required (the webhook is signed with it)")
    if not API_KEY:
        if not ADMIN_TOKEN:
            raise Failed("set SETTLED_API_KEY and SETTLED_CLIENT_ID, or SETTLED_ADMIN_TOKEN to make a key")
        k = expect(call("POST", "/api/admin/api-keys", {"name": "credits example"},
                        idem_key=f"credits-key-{secrets.token_hex(8)}", auth=ADMIN_TOKEN),
                   {201}, "create the shop's API key")
        API_KEY, CLIENT_ID = k["key"], k["client_id"]
        log(f"onboarded the shop: client {CLIENT_ID}")
    if not CLIENT_ID:
        raise Failed("SETTLED_CLIENT_ID is required with SETTLED_API_KEY")

    # 1. the shop's credits account
    name = f"shop:{secrets.randbelow(10**6)}:credits"
    a = expect(call("POST", "/api/v2/accounts", {"name": name, "metadata": {"kind": "sms credits"}},
                    idem_key=f"acct-{name}", auth=API_KEY), {201}, "create the credits account")
    log(f"account {a['name']}: balance {a['balance']}")

    # 2. buy credits: Stripe's webhook names the account
    body, headers = stripe_payment(f"{CLIENT_ID}/{name}", CREDITS)
    expect(call("POST", "/api/webhooks/stripe", raw_body=body, headers=headers), {200}, "Stripe webhook")
    bought = wait_for("the payment to be credited",
                      lambda: (lambda x: x if int(x["balance"]) == CREDITS else None)(account(name)), 30)
    log(f"bought {CREDITS} credits: balance {bought['balance']}, available {bought['available']}")

    # 3. a campaign reserves 500
    campaign = f"campaign-{secrets.token_hex(4)}"
    h = expect(call("POST", "/api/v2/holds",
                    {"from": name, "to": "revenue", "amount": "500", "expires_in": 3600,
                     "metadata": {"campaign": campaign}},
                    idem_key=f"reserve-{campaign}", auth=API_KEY), {201}, "reserve 500")
    a = account(name)
    if (int(a["balance"]), int(a["held"])) != (CREDITS, 500):
        raise Failed(f"after the reservation: {a}")
    log(f"reserved 500 for {campaign} ({h['id']}): available {a['available']}")

    # 4. it sent 320: capture 320, the rest goes back; once
    cap_key = f"capture-{campaign}"
    c1 = call("POST", f"/api/v2/holds/{h['id']}/capture", {"amount": "320"}, idem_key=cap_key, auth=API_KEY)
    c = expect(c1, {200}, "capture 320")
    c2 = call("POST", f"/api/v2/holds/{h['id']}/capture", {"amount": "320"}, idem_key=cap_key, auth=API_KEY)
    if c2[0] != 200 or c2[1] != c or c2[2].get("X-Idempotency") != "HIT":
        raise Failed(f"the capture's retry was not replayed: {c2[0]} {c2[1]}")
    again = call("POST", f"/api/v2/holds/{h['id']}/capture", {"amount": "180"},
                 idem_key=f"capture-rest-{campaign}", auth=API_KEY)
    if again[0] != 409 or again[1].get("error") != "hold_not_pending":
        raise Failed(f"a second capture was not refused: {again[0]} {again[1]}")
    a = account(name)
    if (int(a["balance"]), int(a["held"])) != (CREDITS - 320, 0):
        raise Failed(f"after the capture: {a}")
    log(f"captured {c['captured']} of {c['amount']} ({c['state']}): balance {a['balance']}, "
        "the other 180 back")

    # 5. a sender crashes holding 200: the hold expires back to the shop
    crashed = expect(call("POST", "/api/v2/holds",
                          {"from": name, "to": "revenue", "amount": "200",
                           "expires_in": CRASH_EXPIRES_IN, "metadata": {"sender": "crashed"}},
                          idem_key=f"reserve-crash-{campaign}", auth=API_KEY), {201}, "reserve 200")
    log(f"a sender reserved 200 ({crashed['id']}) and crashed")
    wait_for("the crashed sender's hold to expire",
             lambda: expect(call("GET", f"/api/v2/holds/{crashed['id']}", auth=API_KEY), {200},
                            "read the hold")["state"] == "EXPIRED",
             CRASH_EXPIRES_IN + 30)
    a = account(name)
    if (int(a["balance"]), int(a["held"])) != (CREDITS - 320, 0):
        raise Failed(f"after the expiry: {a}")
    log(f"the crashed sender's hold EXPIRED: available {a['available']}")
    log(f"OK {name} balance={a['balance']} held={a['held']}")


if __name__ == "__main__":
    try:
        main()
    except Failed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
