"""The operator console in a real browser: Debian's chromium, headless,
driven by puppeteer-core (tests/console/console.test.mjs; installed by
`npm ci` from tests/console/package-lock.json into build/console-browser/,
with PUPPETEER_SKIP_DOWNLOAD set: no browser is ever downloaded).

The server is prepared with what an operator acts on: a payout batch
pending approval, a dead webhook job (a payment for a wallet that was not
registered yet; registered here, so the retry credits it), an API key and
some intents. The browser signs in, checks each view against the API,
approves the batch, retries the job, rotates the key and renders the API
reference; this side then checks the effects through the API.

Screenshots: every run writes them under the test's tmp dir; with
SETTLED_CONSOLE_SHOTS=DIR they go to DIR (docs/console/ holds the ones the
README shows). Backend-independent: runs in the embedded half only."""

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import (ADMIN_TOKEN, ROOT, TIME_FACTOR, backend_name, fund_wallet, new_key, new_wallet,
                      wait_until)
from test_webhooks import ENV as WEBHOOK_ENV, stripe

pytestmark = pytest.mark.skipif(backend_name() != "sqlite",
                                reason="the browser test does not depend on the backend")

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NPM_SRC = ROOT / "tests" / "console"
NPM_DIR = ROOT / "build" / "console-browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def browser_dir():
    """build/console-browser with puppeteer-core installed by `npm ci` from
    the checked-in lock; reinstalled only when the lock changes."""
    for tool in ("node", "npm"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not found: scripts/deps installs nodejs and npm", pytrace=False)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: scripts/deps installs chromium", pytrace=False)
    digest = hashlib.sha256((NPM_SRC / "package-lock.json").read_bytes() +
                            (NPM_SRC / "package.json").read_bytes()).hexdigest()
    NPM_DIR.mkdir(parents=True, exist_ok=True)
    with open(NPM_DIR / ".lock", "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        stamp = NPM_DIR / ".installed"
        mod = NPM_DIR / "node_modules" / "puppeteer-core" / "package.json"
        if not (stamp.exists() and stamp.read_text() == digest and mod.exists()):
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(NPM_SRC / name, NPM_DIR / name)
            p = subprocess.run(["npm", "ci", "--prefix", str(NPM_DIR), "--no-audit", "--no-fund",
                                "--loglevel=error"], capture_output=True, text=True, timeout=600,
                               env={**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1"})
            if p.returncode != 0:
                pytest.fail(f"npm ci of puppeteer-core failed:\n{p.stdout}\n{p.stderr}",
                            pytrace=False)
            stamp.write_text(digest)
        # Run from here, so that the import finds node_modules.
        shutil.copyfile(NPM_SRC / "console.test.mjs", NPM_DIR / "console.test.mjs")
    return NPM_DIR


def prepare(srv):
    """A pending batch, a dead job, an API key, intents; returns their ids."""
    r = srv.post("/api/admin/api-keys", {"name": "partner-acme"}, headers=ADMIN, key=new_key())
    assert r.status == 201, r
    key = r.json
    partner = {"Authorization": f"Bearer {key['key']}"}
    # A client account (the accounts list), and claims: each holds funds on
    # its wallet's own account (the holds list), so each wallet is paid first.
    r = srv.post("/api/v2/accounts", {"name": "float", "metadata": {"desk": "ops"}}, headers=partner,
                 key=new_key())
    assert r.status == 201, r
    wallets = [new_wallet() for _ in range(3)]
    for i, w in enumerate(wallets):
        fund_wallet(srv, w, 1250 * (i + 1), register=True)
        r = srv.post("/api/claim/prepare", {"wallet": w, "amount": str(1250 * (i + 1))},
                     key=new_key())
        assert r.status == 201, r
    r = srv.post("/api/v2/payouts/batch",
                 {"reference": f"payroll-{secrets.token_hex(3)}",
                  "items": [{"wallet": w, "amount": str(10000 * (i + 1))}
                            for i, w in enumerate(wallets)]},
                 headers=partner, key=new_key())
    assert r.status == 201, r
    batch = r.json["id"]
    # A payment for a wallet nobody registered: dead at once (permanent).
    late = new_wallet()
    d = stripe(late, amount=4321)
    assert d.send(srv).status == 200

    def dead():
        r = srv.get("/api/admin/dlq", headers=ADMIN)
        return r.json["data"] if r.status == 200 and r.json["data"] else None
    job = wait_until(dead, timeout=15, what="the webhook job in the DLQ")[0]["id"]
    assert srv.register(late).status == 201      # so the console's retry can credit it
    return {"batch": batch, "job": job, "key": key["id"], "late": late}


def test_console_in_chromium(start_server, tmp_path):
    d = browser_dir()
    srv = start_server(env={**WEBHOOK_ENV, "SETTLED_SIM_CONFIRM_MS": "50"})
    ids = prepare(srv)
    shots = Path(os.environ.get("SETTLED_CONSOLE_SHOTS") or tmp_path / "shots")
    env = {**os.environ, "SETTLED_URL": srv.url, "ADMIN_TOKEN": ADMIN_TOKEN,
           "BATCH_ID": ids["batch"], "DEAD_JOB": str(ids["job"]), "KEY_ID": ids["key"],
           "SHOTS": str(shots), "PUPPETEER_SKIP_DOWNLOAD": "1", "CHROMIUM": CHROMIUM,
           "HOME": str(tmp_path), "TIME_FACTOR": str(TIME_FACTOR)}
    p = subprocess.run(["node", str(d / "console.test.mjs")], capture_output=True, text=True,
                       timeout=300 * TIME_FACTOR, env=env, cwd=tmp_path)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no result from the browser test:\n{p.stdout}\n{p.stderr}"
    out = json.loads(lines[-1])
    assert p.returncode == 0 and out["ok"], json.dumps(out, indent=2) + "\n" + p.stderr[-3000:]
    print("\nconsole:", json.dumps(out["results"]))

    # The effects, through the API.
    b = srv.get(f"/api/v2/payouts/batch/{ids['batch']}", headers=ADMIN).json
    assert b["status"] in ("APPROVED", "COMPLETED") and b["approved_at"], b
    wait_until(lambda: (srv.get(f"/api/v2/accounts/{ids['late']}", headers=ADMIN).json or {})
               .get("balance") == "4321", timeout=15, what="the retried payment to be credited")
    assert not any(j["id"] == ids["job"]
                   for j in srv.get("/api/admin/dlq", headers=ADMIN).json["data"])
    keys = srv.get("/api/admin/api-keys", headers=ADMIN).json["data"]
    old = next(k for k in keys if k["id"] == ids["key"])
    assert old["replaced_by"] and old["expires_at"], old
    for name in ("login", "overview", "payouts", "dlq", "keys", "intents", "accounts", "api-docs"):
        png = shots / f"{name}.png"
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
