"""Jobs, the sim rail, the dead-letter queue, the sweepers and
reconciliation (SPEC sections 1, 8, 10).

* A claim recorded through the API is confirmed by a job and reaches
  SETTLED with exactly one ledger transaction (the wallet, funded first by
  a signed payment, pays out to external; treasury never moves).
* With SETTLED_SIM_FAIL_RATE=1 the job retries with growing backoff
  ceilings and lands in the DLQ; after a restart with the fault cleared an
  operator retry settles it exactly once; DELETE removes a dead job.
* Admin routes: 401 without a token, 403 with a wrong one.
* Crash test: claims in flight while the server is SIGKILLed several times;
  in the end every intent is SETTLED or FAILED, each settled claim has one
  ledger transaction, no hold is pending and the ledger balances (through
  GET/POST /api/admin/reconciliation and direct SQL).
"""

import json
import random
import threading
import time
import urllib.parse

import pytest

from conftest import (ADMIN_TOKEN, account_of, assert_error, backend_name, find_samples,
                      fund_wallet, new_key, new_wallet, parse_metrics, store_rows as rows,
                      store_scalar as scalar, wait_until)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
JOB_LEASE_S = 3   # SETTLED_JOB_LEASE of the crash test: how long pg leaves a killed run's jobs


def tx_hash():
    return "0x" + "".join(random.choice("0123456789abcdef") for _ in range(64))


def prepare_and_record(srv, wallet, amount="100"):
    r = srv.post("/api/claim/prepare", {"wallet": wallet, "amount": amount}, key=new_key())
    assert r.status == 201, r
    intent = r.json["id"]
    r = srv.post("/api/claim/record", {"intent_id": intent, "tx_hash": tx_hash()}, key=new_key())
    assert r.status == 200, r
    assert r.json["status"] == "SUBMITTED"
    return intent


def intent_status(srv, intent):
    r = srv.get(f"/api/v2/intents/{intent}", headers=ADMIN)
    assert r.status == 200, r
    return r.json


def wait_status(srv, intent, status, timeout=10.0):
    return wait_until(lambda: (lambda b: b if b["status"] == status else None)(intent_status(srv, intent)),
                      timeout=timeout, what=f"intent {intent} to be {status}")


def dlq(srv, **query):
    qs = urllib.parse.urlencode(query)
    r = srv.get("/api/admin/dlq" + (f"?{qs}" if qs else ""), headers=ADMIN)
    assert r.status == 200, r
    return r.json


def dead_job_of(srv, intent):
    for j in dlq(srv, limit=200)["data"]:
        if j["payload"].get("intent_id") == intent:
            return j
    return None


def ledger_txs_of(srv, intent):
    return scalar(srv, f"SELECT count(*) FROM ledger_tx WHERE intent_id = '{intent}'")


def reconcile_now(srv):
    r = srv.post("/api/admin/reconciliation", headers=ADMIN)
    assert r.status == 200, r
    return r.json


# --------------------------------------------------------------------------


def test_recorded_claim_settles_with_one_ledger_transaction(start_server):
    srv = start_server(env={"SETTLED_SIM_CONFIRM_MS": "100"})
    wallet = new_wallet()
    fund_wallet(srv, wallet, 1000, register=True)
    treasury = account_of(srv, "treasury")
    external = account_of(srv, "external")["balance"]
    t0 = time.monotonic()
    intent = prepare_and_record(srv, wallet, "250")

    body = wait_status(srv, intent, "SETTLED", timeout=5)
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.1, "the sim rail confirms only after SETTLED_SIM_CONFIRM_MS"
    steps = [(t["from"], t["to"]) for t in body["transitions"]]
    assert steps == [(None, "PENDING"), ("PENDING", "LOCKED"), ("LOCKED", "SUBMITTED"),
                     ("SUBMITTED", "CONFIRMED"), ("CONFIRMED", "SETTLED")]
    assert body["transitions"][-1]["actor"].startswith("job:")
    assert body["hold"]["status"] == "captured"
    assert body["ledger_tx_id"]

    assert account_of(srv, wallet) == {"balance": 750, "held": 0, "available": 750}
    assert account_of(srv, "external")["balance"] == external + 250
    assert account_of(srv, "treasury") == treasury
    assert ledger_txs_of(srv, intent) == 1
    assert rows(srv, "SELECT state, attempts FROM jobs WHERE kind = 'claim.confirm'") == [("completed", "0")]

    # Recording the same intent again enqueues nothing (409, one job).
    r = srv.post("/api/claim/record", {"intent_id": intent, "tx_hash": tx_hash()}, key=new_key())
    assert_error(r, 409, "invalid_transition")
    assert scalar(srv, "SELECT count(*) FROM jobs WHERE kind = 'claim.confirm'") == 1

    samples = parse_metrics(srv.metrics())
    done = find_samples(samples, "settled_job_duration_seconds_count", queue="claims",
                        kind="claim.confirm", result="completed")
    assert done and done[0][2] == 1
    assert find_samples(samples, "settled_ledger_imbalance")[0][2] == 0


def test_failing_rail_retries_with_backoff_then_dlq_then_operator_retry(start_server):
    env = {"SETTLED_SIM_FAIL_RATE": "1", "SETTLED_JOB_BASE_DELAY": "10ms",
           "SETTLED_JOB_MAX_ATTEMPTS": "4", "SETTLED_SIM_CONFIRM_MS": "20"}
    srv = start_server(env=env)
    wallet = new_wallet()
    fund_wallet(srv, wallet, 400, register=True)
    a = prepare_and_record(srv, wallet, "300")
    b = prepare_and_record(srv, wallet, "50")

    job_a = wait_until(lambda: dead_job_of(srv, a), timeout=10, what="job a in the DLQ")
    job_b = wait_until(lambda: dead_job_of(srv, b), timeout=10, what="job b in the DLQ")
    assert job_a["state"] == "dead" and job_a["attempts"] == 4 and job_a["max_attempts"] == 4
    assert "injected failure" in job_a["last_error"]
    assert job_a["kind"] == "claim.confirm" and job_a["queue"] == "claims"
    assert job_a["finished_at"]

    # The intent waits in SUBMITTED with its hold pending.
    body = intent_status(srv, a)
    assert body["status"] == "SUBMITTED" and body["hold"]["status"] == "pending"
    assert account_of(srv, wallet) == {"balance": 400, "held": 350, "available": 50}

    # Three retries, each after a delay drawn from a doubling ceiling
    # (full jitter: uniform in [0, min(cap, 10ms * 2^n)]), then the DLQ.
    recs = [r for r in srv.log_records() if isinstance(r, dict) and r.get("job_id") == job_a["id"]]
    retries = [r for r in recs if r["msg"] == "job failed: retry scheduled"]
    assert [r["attempt"] for r in retries] == [1, 2, 3]
    assert [r["backoff_cap_ms"] for r in retries] == [10, 20, 40]
    assert all(0 <= r["delay_ms"] <= r["backoff_cap_ms"] for r in retries)
    assert [r["attempt"] for r in recs if "dead-letter" in r["msg"]] == [4]

    samples = parse_metrics(srv.metrics())
    assert find_samples(samples, "settled_job_retries_total", kind="claim.confirm")[0][2] == 6
    wait_until(lambda: find_samples(parse_metrics(srv.metrics()), "settled_dlq_jobs")[0][2] == 2,
               timeout=5, what="settled_dlq_jobs == 2")

    # Pagination: one per page, in id order, then the end.
    p1 = dlq(srv, limit=1)
    assert [j["id"] for j in p1["data"]] == [job_a["id"]] and p1["next_after"] == job_a["id"]
    p2 = dlq(srv, limit=1, after=p1["next_after"])
    assert [j["id"] for j in p2["data"]] == [job_b["id"]]
    assert dlq(srv, after=job_b["id"])["data"] == []

    # Clear the fault: restart with the rail healthy. Dead jobs stay dead.
    srv.env["SETTLED_SIM_FAIL_RATE"] = "0"
    srv.restart()
    assert intent_status(srv, a)["status"] == "SUBMITTED"

    r = srv.post(f"/api/admin/dlq/{job_a['id']}/retry", headers=ADMIN)
    assert r.status == 200, r
    assert r.json["state"] == "available" and r.json["attempts"] == 0
    wait_status(srv, a, "SETTLED", timeout=5)
    assert ledger_txs_of(srv, a) == 1
    assert dead_job_of(srv, a) is None
    assert account_of(srv, wallet) == {"balance": 100, "held": 50, "available": 50}

    # Retrying again is refused (not dead); unknown ids are 404.
    assert_error(srv.post(f"/api/admin/dlq/{job_a['id']}/retry", headers=ADMIN), 409, "job_not_dead")
    assert_error(srv.post("/api/admin/dlq/99999999/retry", headers=ADMIN), 404, "job_not_found")
    assert_error(srv.post("/api/admin/dlq/abc/retry", headers=ADMIN), 404, "job_not_found")

    # Delete the other dead job: gone, a second delete is 404; a finished
    # job cannot be deleted through the DLQ.
    r = srv.request("DELETE", f"/api/admin/dlq/{job_b['id']}", headers=ADMIN)
    assert r.status == 200 and r.json == {"id": job_b["id"], "deleted": True}, r
    assert_error(srv.request("DELETE", f"/api/admin/dlq/{job_b['id']}", headers=ADMIN), 404, "job_not_found")
    assert_error(srv.request("DELETE", f"/api/admin/dlq/{job_a['id']}", headers=ADMIN), 409, "job_not_dead")
    assert dlq(srv)["data"] == []

    # The retried claim settled once; the ledger still balances.
    time.sleep(0.3)
    assert ledger_txs_of(srv, a) == 1
    report = reconcile_now(srv)
    assert report["checks"]["transactions_balanced"]["ok"]
    assert report["checks"]["settled_claims_posted_once"]["ok"]
    assert report["imbalance"] == "0"


def test_admin_routes_need_the_admin_token(server):
    routes = [("GET", "/api/admin/dlq"), ("POST", "/api/admin/dlq/1/retry"),
              ("DELETE", "/api/admin/dlq/1"), ("GET", "/api/admin/reconciliation"),
              ("POST", "/api/admin/reconciliation")]
    with server.unchanged():
        for method, path in routes:
            r = server.request(method, path)
            assert_error(r, 401, "unauthorized")
            r = server.request(method, path, headers={"Authorization": "Bearer not-the-token"})
            assert_error(r, 403, "forbidden")
    for bad in ("limit=0", "limit=x", "after=-1", "after=1.5"):
        r = server.get(f"/api/admin/dlq?{bad}", headers=ADMIN)
        assert_error(r, 400, "invalid_parameter")
    r = server.get("/api/admin/dlq?limit=100000", headers=ADMIN)
    assert r.status == 200 and r.json["limit"] == 200


def test_reconciliation_report_at_start_and_on_demand(server):
    r = wait_until(lambda: (lambda x: x if x.status == 200 else None)(
        server.get("/api/admin/reconciliation", headers=ADMIN)), timeout=5, what="first report")
    rep = r.json
    assert rep["ok"] is True and rep["problems"] == 0 and rep["imbalance"] == "0"
    assert set(rep["checks"]) == {"transactions_balanced", "global_sum_zero", "balances_match_entries",
                                  "held_matches_holds", "no_overdraft", "holds_match_intents",
                                  "settled_claims_posted_once", "no_stuck_intents",
                                  "holds_resolved_once", "no_overdue_holds"}
    assert all(c["ok"] for c in rep["checks"].values())
    assert rep["counts"]["transactions"] >= 1   # the treasury funding
    fresh = reconcile_now(server)
    assert fresh["ran_at"] >= rep["ran_at"]
    assert server.get("/api/admin/reconciliation", headers=ADMIN).json == fresh
    samples = parse_metrics(server.metrics())
    assert find_samples(samples, "settled_reconciliation_runs_total", result="ok")[0][2] >= 2
    assert find_samples(samples, "settled_reconciliation_problems")[0][2] == 0


def test_crash_with_claims_in_flight(start_server):
    env = {"SETTLED_SIM_CONFIRM_MS": "800", "SETTLED_STUCK_AFTER": "1s",
           "SETTLED_HOLD_TIMEOUT": "2s", "SETTLED_WORKERS": "4",
           "SETTLED_JOB_LEASE": f"{JOB_LEASE_S}s"}
    srv = start_server(env=env)
    wallets = [new_wallet() for _ in range(16)]
    for w in wallets:
        fund_wallet(srv, w, 1000000, register=True)
    treasury = account_of(srv, "treasury")

    stop = threading.Event()
    recorded = []            # intents whose record answered 200
    lock = threading.Lock()

    def client(seed):
        rnd = random.Random(seed)
        while not stop.is_set():
            try:
                w = rnd.choice(wallets)
                r = srv.post("/api/claim/prepare", {"wallet": w, "amount": str(rnd.randint(1, 500))},
                             key=new_key(), timeout=5, check=False)
                if r.status != 201:
                    continue
                intent = r.json["id"]
                r = srv.post("/api/claim/record", {"intent_id": intent, "tx_hash": tx_hash()},
                             key=new_key(), timeout=5, check=False)
                if r.status == 200:
                    with lock:
                        recorded.append(intent)
            except (OSError, ValueError, TypeError, AttributeError):
                time.sleep(0.02)   # the server is down or restarting

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    rnd = random.Random()
    kills = rnd.randint(3, 5)
    # Kill at least `kills` times and until 100 claims were recorded across
    # the kills: the test needs that much work in flight, however slowly a
    # loaded machine (or a sanitizer build) gets through it; it measures no
    # speed. The cap only stops a server that records nothing at all.
    done = 0
    try:
        while done < kills or (len(recorded) < 100 and done < 60):
            time.sleep(rnd.uniform(0.4, 1.2))
            srv.kill()
            srv.start()
            done += 1
        time.sleep(rnd.uniform(0.4, 1.0))
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert len(recorded) >= 100, f"only {len(recorded)} claims were recorded in {done} kills"

    # Everything ends SETTLED or FAILED: submitted ones confirm, prepared-
    # but-never-recorded ones fail when their hold expires.
    def all_final():
        open_ = scalar(srv, "SELECT count(*) FROM intents WHERE status NOT IN ('SETTLED', 'FAILED')")
        return open_ == 0
    # Embedded mode takes back a killed process's running jobs at start; with
    # PostgreSQL other instances may be alive, so they wait for the lease.
    timeout = 20 if backend_name() == "sqlite" else 20 + JOB_LEASE_S
    wait_until(all_final, timeout=timeout, interval=0.2, what="every intent SETTLED or FAILED")

    # Every acknowledged record settled (the rail never fails here).
    statuses = dict(rows(srv, "SELECT id, status FROM intents"))
    assert all(statuses[i] == "SETTLED" for i in recorded), \
        [i for i in recorded if statuses[i] != "SETTLED"][:5]
    settled = [i for i, s in statuses.items() if s == "SETTLED"]
    assert len(settled) >= len(recorded)

    # Direct SQL: one posting per settled claim, none for others, no pending
    # hold, balanced transactions, balances equal their entries, sum zero.
    assert scalar(srv, "SELECT count(*) FROM intents i WHERE status = 'SETTLED' AND "
                       "(SELECT count(*) FROM ledger_tx t WHERE t.intent_id = i.id) <> 1") == 0
    assert scalar(srv, "SELECT count(*) FROM intents i WHERE status <> 'SETTLED' AND "
                       "(SELECT count(*) FROM ledger_tx t WHERE t.intent_id = i.id) <> 0") == 0
    assert scalar(srv, "SELECT count(*) FROM holds WHERE status = 'pending'") == 0
    assert scalar(srv, "SELECT count(*) FROM (SELECT tx_id FROM ledger_entries GROUP BY tx_id HAVING "
                       "sum(CASE WHEN direction = 'debit' THEN amount ELSE -amount END) <> 0) t") == 0
    assert scalar(srv, "SELECT coalesce(sum(balance), 0) FROM account_balances") == 0
    assert scalar(srv, "SELECT count(*) FROM account_balances a WHERE balance <> (SELECT coalesce(sum("
                       "CASE WHEN direction = 'credit' THEN amount ELSE -amount END), 0) "
                       "FROM ledger_entries e WHERE e.account_id = a.id)") == 0
    assert scalar(srv, "SELECT count(*) FROM accounts WHERE held <> 0") == 0
    # Claims spent the wallets' own money: each wallet's balance is what it
    # was paid less its settled claims, and treasury never moved.
    assert account_of(srv, "treasury") == treasury
    for w in wallets:
        spent = scalar(srv, "SELECT coalesce(sum(amount), 0) FROM intents"
                            f" WHERE wallet = '{w}' AND status = 'SETTLED'")
        assert account_of(srv, w)["balance"] == 1000000 - spent, w
    assert scalar(srv, "SELECT count(*) FROM jobs WHERE state IN ('running', 'dead')") == 0
    assert scalar(srv, "SELECT count(*) FROM (SELECT intent_id FROM ledger_tx WHERE intent_id IS NOT NULL"
                       " GROUP BY intent_id HAVING count(*) > 1) t") == 0

    # And the server's own audit agrees.
    report = reconcile_now(srv)
    assert report["ok"] is True, json.dumps(report)
    assert report["imbalance"] == "0"
    assert report["counts"]["intents"]["SETTLED"] == len(settled)
    assert report["counts"]["pending_holds"] == 0
    assert srv.get("/api/admin/reconciliation", headers=ADMIN).json == report
