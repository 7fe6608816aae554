#!/usr/bin/env python3
"""Operator allocations, then a wallet's claim: Python standard library only.

A claim is a wallet withdrawing what it is owed (SPEC section 7), never a
draw on the operator's pool. What a wallet is owed comes from webhook
payments and commissions, client transfers, or, as here, an operator's
allocation: an admin transfer from `treasury` to the wallet. The wallet
then claims at most what it holds.

    SETTLED_URL=http://127.0.0.1:8080 SETTLED_ADMIN_TOKEN=... \\
        python3 examples/allocate_and_claim.py

Steps (each POST with an Idempotency-Key chosen once per operation and
reused by its retries, so a lost answer is replayed, never applied twice):
  1. register the wallet                POST /api/register
  2. the operator allocates ALLOCATION  POST /api/v2/transfers (admin token)
     {from: "treasury", to: <wallet>, amount}
  3. the wallet claims more than it was allocated: 422 insufficient_funds
     naming its account (nothing is written)
  4. the wallet claims CLAIM_AMOUNT     POST /api/claim/prepare, then
     POST /api/claim/record: the hold is on the wallet's own account
  5. poll GET /api/v2/intents/{id} until SETTLED, then show the balances:
     the wallet keeps ALLOCATION - CLAIM_AMOUNT, treasury gave ALLOCATION.

Environment:
    SETTLED_URL           server (default http://127.0.0.1:8080)
    SETTLED_ADMIN_TOKEN   the operator's token (SETTLED_ADMIN_TOKEN); required
    SETTLED_WALLET        the wallet (default: a new random one)
    ALLOCATION            base units allocated (default "500")
    CLAIM_AMOUNT          base units claimed (default "200"; at most ALLOCATION)
    SETTLED_TIMEOUT       seconds per HTTP attempt (default 10)
    SETTLED_MAX_ATTEMPTS  attempts per call before giving up (default 8)
    SETTLED_POLL_TIMEOUT  seconds to wait for SETTLED (default 120)

Retried: network errors and timeouts, 409 idempotency_key_in_use, 429 and
5xx, with exponential backoff and full jitter, never shorter than
Retry-After. One line per step on stdout, retries on stderr; the last line
is "SETTLED <intent id> wallet <balance> treasury <balance>". Exit 0 when
the claim settled, 1 otherwise.
"""

import email.utils
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
ADMIN = os.environ.get("SETTLED_ADMIN_TOKEN", "")
WALLET = os.environ.get("SETTLED_WALLET") or "0x" + secrets.token_hex(20)
ALLOCATION = os.environ.get("ALLOCATION", "500")
AMOUNT = os.environ.get("CLAIM_AMOUNT", "200")
TIMEOUT = float(os.environ.get("SETTLED_TIMEOUT", "10"))
MAX_ATTEMPTS = int(os.environ.get("SETTLED_MAX_ATTEMPTS", "8"))
POLL_TIMEOUT = float(os.environ.get("SETTLED_POLL_TIMEOUT", "120"))

BACKOFF_BASE = 0.25   # seconds: the first retry waits up to this
BACKOFF_CAP = 8.0     # seconds: no single wait is longer (unless Retry-After says so)
RETRY_STATUSES = {429, 500, 502, 503, 504}


class Failed(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def retry_after(headers):
    """Retry-After in seconds (delta-seconds or an HTTP date), or 0."""
    v = (headers.get("Retry-After") or "").strip()
    if v.isdigit():
        return int(v)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(v).timestamp() - time.time())
    except (TypeError, ValueError):
        return 0


def call(method, path, body=None, idem_key=None, auth=None):
    """One logical call, retried as the module docstring says. Returns
    (status, parsed JSON body or None)."""
    data = json.dumps(body).encode() if body is not None else None
    for attempt in range(MAX_ATTEMPTS):
        headers = {"Accept": "application/json",
                   "X-Request-Id": f"example-alloc-{secrets.token_hex(6)}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if idem_key:
            headers["Idempotency-Key"] = idem_key
        if auth:
            headers["Authorization"] = f"Bearer {auth}"
        req = urllib.request.Request(BASE + path, data=data, method=method, headers=headers)
        wait_at_least = 0
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                status, raw, hdrs = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as e:
            status, raw, hdrs = e.code, e.read(), e.headers
        except (OSError, http.client.HTTPException) as e:
            status, raw, hdrs, why = None, b"", {}, f"network error: {e}"
        answer = None
        if raw:
            try:
                answer = json.loads(raw)
            except ValueError:
                answer = None
        code = answer.get("error") if isinstance(answer, dict) else None
        if status is not None:
            if status not in RETRY_STATUSES and not (status == 409 and code == "idempotency_key_in_use"):
                return status, answer
            why = f"{status} {code}"
            wait_at_least = retry_after(hdrs)
        if attempt + 1 == MAX_ATTEMPTS:
            raise Failed(f"{method} {path}: giving up after {MAX_ATTEMPTS} attempts ({why})")
        delay = max(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt)), wait_at_least)
        log(f"{method} {path}: {why}; retrying in {delay:.3f}s"
            + (" with the same Idempotency-Key" if idem_key else ""))
        time.sleep(delay)
    raise Failed(f"{method} {path}: no attempt made")


def expect(status, answer, ok, what):
    if status not in ok:
        raise Failed(f"{what}: HTTP {status} {json.dumps(answer)}")
    return answer


def balance(name):
    status, acct = call("GET", f"/api/v2/accounts/{name}", auth=ADMIN)
    return expect(status, acct, {200}, f"read {name}")


def main():
    if not ADMIN:
        raise Failed("set SETTLED_ADMIN_TOKEN: allocations are the operator's")
    if int(AMOUNT) > int(ALLOCATION):
        raise Failed(f"CLAIM_AMOUNT {AMOUNT} is more than ALLOCATION {ALLOCATION}: it would be refused")

    # 1. Register (an already registered wallet is fine).
    status, answer = call("POST", "/api/register", {"wallet": WALLET},
                          idem_key=f"register-{secrets.token_hex(12)}")
    if status == 409 and answer and answer.get("error") == "already_registered":
        print(f"registered {WALLET} (already)")
    else:
        expect(status, answer, {201}, "register")
        print(f"registered {answer['wallet']}")
    treasury_before = int(balance("treasury")["balance"])
    wallet_before = int(balance(WALLET)["balance"])

    # 2. The operator's allocation: one ledger transaction treasury -> wallet.
    status, transfer = call("POST", "/api/v2/transfers",
                            {"from": "treasury", "to": WALLET, "amount": ALLOCATION,
                             "description": "allocation"},
                            idem_key=f"allocate-{secrets.token_hex(12)}", auth=ADMIN)
    expect(status, transfer, {201}, "allocate")
    print(f"allocated {ALLOCATION} from treasury to {WALLET} ({transfer.get('id')})")
    owed = wallet_before + int(ALLOCATION)

    # 3. The wallet cannot claim more than it holds: 422, nothing written.
    status, refused = call("POST", "/api/claim/prepare", {"wallet": WALLET, "amount": str(owed + 1)})
    expect(status, refused, {422}, "claim beyond the balance")
    if refused.get("error") != "insufficient_funds" or refused.get("account") != WALLET:
        raise Failed(f"claim beyond the balance: expected insufficient_funds naming {WALLET}, got {refused}")
    print(f"refused {owed + 1}: {refused['error']} on {refused['account']}")

    # 4. The claim: a hold on the wallet's own account, then the chain transaction.
    status, intent = call("POST", "/api/claim/prepare", {"wallet": WALLET, "amount": AMOUNT},
                          idem_key=f"prepare-{secrets.token_hex(12)}")
    expect(status, intent, {201}, "prepare")
    print(f"prepared {intent['id']} {intent['status']} amount {intent['amount']}")
    held = balance(WALLET)
    print(f"wallet balance {held['balance']} held {held['held']} available {held['available']}")
    tx_hash = "0x" + secrets.token_hex(32)
    status, intent = call("POST", "/api/claim/record", {"intent_id": intent["id"], "tx_hash": tx_hash},
                          idem_key=f"record-{secrets.token_hex(12)}")
    expect(status, intent, {200}, "record")
    print(f"recorded {intent['id']} {intent['status']} tx {tx_hash}")

    # 5. Poll until the confirmation job settles it; show where the money went.
    deadline, wait = time.monotonic() + POLL_TIMEOUT, 0.1
    while True:
        status, intent = call("GET", f"/api/v2/intents/{intent['id']}", auth=ADMIN)
        expect(status, intent, {200}, "read the intent")
        if intent["status"] == "SETTLED":
            break
        if intent["status"] == "FAILED":
            raise Failed(f"intent {intent['id']} FAILED: {intent.get('failure_reason')}")
        if time.monotonic() > deadline:
            raise Failed(f"intent {intent['id']} still {intent['status']} after {POLL_TIMEOUT}s")
        time.sleep(wait)
        wait = min(wait * 2, 2.0)
    wallet_after = int(balance(WALLET)["balance"])
    treasury_after = int(balance("treasury")["balance"])
    if wallet_after != owed - int(AMOUNT):
        raise Failed(f"wallet balance {wallet_after}, expected {owed - int(AMOUNT)}")
    print(f"treasury {treasury_before} -> {treasury_after} (the allocation only)")
    print(f"SETTLED {intent['id']} wallet {wallet_after} treasury {treasury_after}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failed as e:
        log(f"allocate_and_claim.py: {e}")
        sys.exit(1)
