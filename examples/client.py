#!/usr/bin/env python3
"""A settled client in Python, standard library only: register a wallet,
claim (prepare + record) and poll the intent until it is SETTLED.

A claim is the wallet withdrawing what it is owed: the wallet must have been
credited first (a webhook payment, a client's transfer or an operator's
allocation), and it can claim at most its available balance (else 422
insufficient_funds).

    SETTLED_URL=http://127.0.0.1:8080 SETTLED_API_KEY=sk_live_... \
    SETTLED_WALLET=0x... python3 examples/client.py

Environment:
    SETTLED_URL           server (default http://127.0.0.1:8080)
    SETTLED_API_KEY       bearer for GET /api/v2/intents/{id} (an API key or
                          the admin token); required
    SETTLED_WALLET        wallet to claim for, credited with at least
                          CLAIM_AMOUNT; required
    CLAIM_AMOUNT          base units (default "100")
    SETTLED_TIMEOUT       seconds per HTTP attempt (default 10)
    SETTLED_MAX_ATTEMPTS  attempts per call before giving up (default 8)
    SETTLED_POLL_TIMEOUT  seconds to wait for SETTLED (default 120)

Retrying safely: every POST carries an Idempotency-Key chosen once per
logical operation and reused by all its attempts, so an attempt whose answer
was lost (timeout, dropped connection) is repeated without a second effect:
the server replays the first answer (X-Idempotency: HIT). Retried: network
errors and timeouts, 409 idempotency_key_in_use (the first attempt is still
running), 429 and 5xx (a 5xx stores nothing, so the retry runs once). The
wait is exponential backoff with full jitter, and never shorter than the
server's Retry-After. Everything else (400, 404, 409 already_registered,
422, ...) is an answer, not a transient failure.

Prints one line per step on stdout, retries on stderr; the last line is
"SETTLED <intent id>". Exit 0 when the claim settled, 1 otherwise.
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
API_KEY = os.environ.get("SETTLED_API_KEY", "")
WALLET = os.environ.get("SETTLED_WALLET", "")
AMOUNT = os.environ.get("CLAIM_AMOUNT", "100")
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


def retry_after_seconds(value):
    """Retry-After as seconds: delta-seconds or an HTTP date; None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff(attempt, retry_after):
    """Full jitter (uniform in [0, min(cap, base * 2^attempt)]), at least Retry-After."""
    delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt))
    return max(delay, retry_after) if retry_after is not None else delay


def call(method, path, body=None, idem_key=None, auth=None):
    """One logical call, retried as described above. Returns (status, json)."""
    data = json.dumps(body).encode() if body is not None else None
    for attempt in range(MAX_ATTEMPTS):
        headers = {"Accept": "application/json",
                   "X-Request-Id": f"example-py-{secrets.token_hex(6)}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if idem_key:
            headers["Idempotency-Key"] = idem_key
        if auth:
            headers["Authorization"] = f"Bearer {auth}"
        req = urllib.request.Request(BASE + path, data=data, method=method, headers=headers)
        retry_after = None
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                answer = json.loads(raw) if raw else None
            except ValueError:
                answer = None
            code = answer.get("error") if isinstance(answer, dict) else None
            if not (e.code in RETRY_STATUSES or (e.code == 409 and code == "idempotency_key_in_use")):
                return e.code, answer
            why = f"{e.code} {code}"
            retry_after = retry_after_seconds(e.headers.get("Retry-After"))
        except (OSError, http.client.HTTPException) as e:   # timeouts, resets, refused
            why = f"network error: {e}"
        if attempt + 1 == MAX_ATTEMPTS:
            raise Failed(f"{method} {path}: giving up after {MAX_ATTEMPTS} attempts ({why})")
        delay = backoff(attempt, retry_after)
        log(f"{method} {path}: {why}; retrying in {delay:.2f}s"
            + (" with the same Idempotency-Key" if idem_key else ""))
        time.sleep(delay)
    raise Failed("unreachable")


def expect(status, answer, ok, what):
    if status not in ok:
        raise Failed(f"{what}: HTTP {status} {json.dumps(answer)}")
    return answer


def main():
    if not API_KEY:
        raise Failed("set SETTLED_API_KEY (an API key or the admin token) to read intents")
    if not WALLET:
        raise Failed(f"set SETTLED_WALLET (a wallet credited with at least {AMOUNT})")

    # 1. Register (idempotent by key; an already registered wallet is fine).
    status, answer = call("POST", "/api/register", {"wallet": WALLET},
                          idem_key=f"register-{secrets.token_hex(12)}")
    if status == 409 and answer and answer.get("error") == "already_registered":
        print(f"registered {WALLET} (already)")
    else:
        expect(status, answer, {201}, "register")
        print(f"registered {answer['wallet']}")

    # 2. Prepare: the claim intent and a hold on the wallet's own account.
    status, intent = call("POST", "/api/claim/prepare", {"wallet": WALLET, "amount": AMOUNT},
                          idem_key=f"prepare-{secrets.token_hex(12)}")
    expect(status, intent, {201}, "prepare")
    print(f"prepared {intent['id']} {intent['status']} amount {intent['amount']}")

    # 3. Record the chain transaction (here a random hash): PENDING -> SUBMITTED.
    tx_hash = "0x" + secrets.token_hex(32)
    status, intent = call("POST", "/api/claim/record",
                          {"intent_id": intent["id"], "tx_hash": tx_hash},
                          idem_key=f"record-{secrets.token_hex(12)}")
    expect(status, intent, {200}, "record")
    print(f"recorded {intent['id']} {intent['status']} tx {tx_hash}")

    # 4. Poll until the confirmation job settles it.
    deadline, wait = time.monotonic() + POLL_TIMEOUT, 0.1
    while True:
        status, intent = call("GET", f"/api/v2/intents/{intent['id']}", auth=API_KEY)
        expect(status, intent, {200}, "read the intent")
        if intent["status"] == "SETTLED":
            print(f"SETTLED {intent['id']} ledger_tx {intent['ledger_tx_id']}")
            return 0
        if intent["status"] == "FAILED":
            raise Failed(f"intent {intent['id']} FAILED: {intent.get('failure_reason')}")
        if time.monotonic() > deadline:
            raise Failed(f"intent {intent['id']} still {intent['status']} after {POLL_TIMEOUT}s")
        time.sleep(wait)
        wait = min(wait * 2, 2.0)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failed as e:
        log(f"client.py: {e}")
        sys.exit(1)
