"""Issue 7, "What it must show": two, then four settled instances on ONE
PostgreSQL database and ONE Redis key prefix (scale-out mode) keep the
guarantees of the embedded mode.

- Concurrent same-key registrations spread round-robin over the instances
  give exactly one account per key; every answer is the 201, a HIT replay
  of it, or 409 idempotency_key_in_use; never a 5xx.
- Concurrent claims spread over the instances never over-commit the
  claiming wallet: it was paid (through the API) exactly enough for 50
  claims, 100 concurrent prepares, exactly 50 pass and 50 are 422
  insufficient_funds; held == balance after, and treasury never moves.
- Jobs run with workers on every instance are processed exactly once in
  effect: every recorded claim settles with one ledger transaction, each
  claim.confirm job completes once, and several instances ran jobs.
- "A rate limit of 50 across four instances lets exactly 50 through" is
  test_redis.py::test_instances_share_a_limit_of_50 (2 and 4 instances on
  one Redis and prefix); not repeated here.

Only on SETTLED_TEST_BACKEND=pg: the embedded (SQLite) mode is one instance
by design. Instances share a store the way the pg backend of conftest.py
runs one: the first server's SETTLED_DATABASE_URL and SETTLED_REDIS_PREFIX
are passed to the others (their own fresh databases stay unused).
"""

import http.client
import json
import random
import re
import secrets

import pytest

from conftest import (ADMIN_TOKEN, account_of, assert_common_headers, assert_error, backend_name,
                      barrier_run, fund_wallet, new_key, new_wallet, only_responses, Response,
                      wait_until)

pytestmark = pytest.mark.skipif(
    backend_name() != "pg",
    reason="several instances need a shared store: SETTLED_TEST_BACKEND=pg only "
           "(the embedded SQLite mode is one instance by design)")

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
INSTANCES = [2, 4]


@pytest.fixture
def cluster(start_server):
    """Factory: cluster(n, **env) -> n running servers on one database and
    one Redis prefix. The first one starts alone and finishes its bootstrap
    (migrations, system accounts, the one-time treasury funding) before the
    others start. At teardown all are stopped (TERM) here, before the
    start_server fixture drops the first one's database under the others."""
    servers = []

    def make(n, **env):
        env = {k: str(v) for k, v in env.items()}
        first = start_server(env=env)
        servers.append(first)
        wait_until(lambda: first.snapshot().get("accounts", 0) >= 1, timeout=10,
                   what="the first instance's bootstrap")
        shared = {**env, **first.backend.server_env()}
        for _ in range(n - 1):
            servers.append(start_server(env=shared))
        group = servers[-n:]
        for srv in group:
            r = srv.get("/health/ready")
            assert r.status == 200, r
        return group

    yield make

    bad = []
    for srv in reversed(servers):
        if srv.running:
            rc = srv.stop()
            if rc != 0:
                bad.append(f"{srv.dir}: exited with {rc} on SIGTERM")
    assert not bad, bad


def sql(srv, query):
    return [tuple(line.split("|")) for line in srv.backend.psql(query).splitlines() if line]


def scalar(srv, query):
    return int(sql(srv, query)[0][0])


def spread(servers, requests, timeout=120):
    """requests: list of (method, path, json_body, headers); request i goes
    to servers[i % len(servers)] on its own connection opened before the
    barrier. Returns (server index, Response) in order."""

    def make(i, req):
        method, path, json_body, headers = req
        port = servers[i % len(servers)].port
        body = json.dumps(json_body).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})}

        def fn(release):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                conn.connect()
                release()
                conn.request(method, path, body=body, headers=hdrs)
                r = conn.getresponse()
                resp = Response(r.status, r.reason, r.msg, r.read())
            finally:
                conn.close()
            assert_common_headers(resp)
            return i % len(servers), resp
        return fn

    return only_responses(barrier_run([make(i, r) for i, r in enumerate(requests)],
                                      timeout=timeout))


def registered(servers):
    w = new_wallet()
    r = random.choice(servers).register(w, key=new_key("w"))
    assert r.status == 201, r
    return w


def tx_hash():
    return "0x" + secrets.token_hex(32)


# --------------------------------------------------------------------------


@pytest.mark.parametrize("instances", INSTANCES)
def test_same_key_over_instances_has_one_effect(cluster, instances):
    servers = cluster(instances)
    a = servers[0]
    for _ in range(20):
        key, wallet = new_key("mi"), new_wallet()
        accounts_before = a.count("accounts")
        results = spread(servers, [("POST", "/api/register", {"wallet": wallet},
                                    {"Idempotency-Key": key})] * 64)
        assert not [r for _, r in results if r.status >= 500], \
            [r for _, r in results if r.status >= 500][:3]
        created = [r for _, r in results if r.status == 201]
        misses = [r for r in created if r.headers.get("X-Idempotency") == "MISS"]
        assert len(misses) == 1, [(i, r.status, r.headers.get("X-Idempotency"))
                                  for i, r in results]
        first = misses[0]
        kinds = {}
        for _, r in results:
            k = (r.status, r.headers.get("X-Idempotency") or r.error)
            kinds[k] = kinds.get(k, 0) + 1
        print(f"round answers: {kinds}")
        for _, r in results:
            if r is first:
                continue
            if r.status == 409:
                assert_error(r, 409, "idempotency_key_in_use")
                continue
            assert r.status == 201, r
            assert r.headers.get("X-Idempotency") == "HIT", r
            assert r.body == first.body, (first.body, r.body)
            assert r.headers.get("Location") == first.headers.get("Location")
        assert a.count("accounts") == accounts_before + 1
        assert scalar(a, f"SELECT count(*) FROM accounts WHERE wallet = '{wallet}'") == 1
        # Once all answers are in, the key replays on every instance.
        for srv in servers:
            again = srv.register(wallet, key=key)
            assert again.status == 201 and again.headers.get("X-Idempotency") == "HIT", again
            assert again.body == first.body


@pytest.mark.parametrize("instances", INSTANCES)
def test_same_key_other_wallets_over_instances_registers_one(cluster, instances):
    """One key sent with a different wallet by every request, spread over
    the instances: a keyed registration on PostgreSQL writes its account
    and its key's record in one statement, so a request that finds the key
    recorded by another instance's request (waiting for it to commit) may
    have written its own account already; that account must go with the
    rolled-back unit. Exactly one wallet is registered, its request is the
    one MISS; every other answer is 422 idempotency_key_reused (the record
    is another body's), 409 idempotency_key_in_use (its own instance was
    still running the key) or a replay of the MISS by a request of the
    winning body (none here: every body differs). Never a 5xx."""
    servers = cluster(instances)
    a = servers[0]
    for _ in range(10):
        key = new_key("mo")
        wallets = [new_wallet() for _ in range(32)]
        accounts_before = a.count("accounts")
        results = spread(servers, [("POST", "/api/register", {"wallet": w},
                                    {"Idempotency-Key": key}) for w in wallets])
        assert not [r for _, r in results if r.status >= 500], \
            [r for _, r in results if r.status >= 500][:3]
        misses = [(n, r) for n, (_, r) in enumerate(results)
                  if r.status == 201 and r.headers.get("X-Idempotency") == "MISS"]
        assert len(misses) == 1, [(r.status, r.headers.get("X-Idempotency"), r.error)
                                  for _, r in results]
        winner = wallets[misses[0][0]]
        for n, (_, r) in enumerate(results):
            if n == misses[0][0]:
                continue
            if r.status == 409:
                assert_error(r, 409, "idempotency_key_in_use")
            else:
                assert_error(r, 422, "idempotency_key_reused")
        assert a.count("accounts") == accounts_before + 1
        listed = ", ".join(f"'{w}'" for w in wallets)
        assert sql(a, f"SELECT wallet FROM accounts WHERE wallet IN ({listed})") == [(winner,)]
        for srv in servers:
            again = srv.register(winner, key=key)
            assert again.status == 201 and again.headers.get("X-Idempotency") == "HIT", again
            assert again.body == misses[0][1].body


@pytest.mark.parametrize("instances", INSTANCES)
def test_claims_over_instances_never_over_commit(cluster, instances):
    servers = cluster(instances, SETTLED_TREASURY_FUNDING=50 * 100,
                      SETTLED_SIM_CONFIRM_MS=86400000)
    a = servers[0]
    assert sql(a, "SELECT balance, held FROM accounts WHERE name = 'treasury'") == \
        [("5000", "0")], "funded once, by the first start only"
    assert scalar(a, "SELECT count(*) FROM ledger_tx WHERE kind = 'treasury_funding'") == 1
    w = registered(servers)
    fund_wallet(servers[-1], w, 50 * 100)
    results = spread(servers, [("POST", "/api/claim/prepare", {"wallet": w, "amount": "100"},
                                {"Idempotency-Key": new_key("p")}) for _ in range(100)])
    codes = sorted((r.status, r.error) for _, r in results)
    ok = [r for _, r in results if r.status == 201]
    refused = [r for _, r in results if r.status == 422]
    assert len(ok) == 50 and len(refused) == 50, codes
    for r in refused:
        assert_error(r, 422, "insufficient_funds")
    assert len({i for i, r in results if r.status == 201}) >= 2, "passes on several instances"
    assert account_of(a, w) == {"balance": 5000, "held": 5000, "available": 0}
    assert sql(a, "SELECT balance, held FROM accounts WHERE name = 'treasury'") == \
        [("5000", "0")]
    assert scalar(a, "SELECT count(*) FROM holds WHERE status = 'pending'") == 50
    assert scalar(a, "SELECT coalesce(sum(amount), 0) FROM holds WHERE status = 'pending'") == 5000
    assert scalar(a, "SELECT count(*) FROM intents") == 50
    # One more, on every instance: still refused.
    for srv in servers:
        r = srv.post("/api/claim/prepare", {"wallet": w, "amount": "100"},
                     key=new_key("p"))
        assert_error(r, 422, "insufficient_funds")
    assert scalar(a, "SELECT count(*) FROM accounts WHERE held > balance AND may_go_negative = 0") == 0


@pytest.mark.parametrize("instances", INSTANCES)
def test_jobs_over_instances_run_once_in_effect(cluster, instances):
    servers = cluster(instances, SETTLED_TREASURY_FUNDING=100000, SETTLED_SIM_CONFIRM_MS=50)
    a = servers[0]
    wallets = [registered(servers) for _ in range(40)]
    for n, w in enumerate(wallets):
        fund_wallet(servers[n % len(servers)], w, 100)

    def claim(w):
        def fn(release):
            srv = random.choice(servers)
            release()
            r = srv.post("/api/claim/prepare", {"wallet": w, "amount": "100"}, key=new_key())
            assert r.status == 201, r
            intent = r.json["id"]
            srv = random.choice(servers)
            r = srv.post("/api/claim/record", {"intent_id": intent, "tx_hash": tx_hash()},
                         key=new_key())
            assert r.status == 200 and r.json["status"] == "SUBMITTED", r
            return intent
        return fn

    intents = only_responses(barrier_run([claim(w) for w in wallets], timeout=120))
    assert len(set(intents)) == 40

    def all_settled():
        return scalar(a, "SELECT count(*) FROM intents WHERE status = 'SETTLED'") == 40
    wait_until(all_settled, timeout=30, interval=0.2, what="all 40 claims to settle")

    assert scalar(a, "SELECT count(*) FROM intents WHERE status <> 'SETTLED'") == 0
    per_intent = sql(a, "SELECT i.id, count(t.id), count(DISTINCT t.id) FILTER"
                        " (WHERE t.id = i.ledger_tx_id) FROM intents i"
                        " LEFT JOIN ledger_tx t ON t.intent_id = i.id GROUP BY i.id")
    assert len(per_intent) == 40
    assert all(n == "1" and linked == "1" for _, n, linked in per_intent), per_intent
    assert scalar(a, "SELECT count(*) FROM holds WHERE status = 'pending'") == 0
    assert sql(a, "SELECT balance, held FROM accounts WHERE name = 'treasury'") == \
        [("100000", "0")], "claims never touch treasury"
    assert scalar(a, "SELECT count(*) FROM accounts WHERE kind = 'wallet' AND balance = 0") == 40, \
        "each wallet claimed the 100 it was paid"

    jobs = sql(a, "SELECT id, state FROM jobs WHERE kind = 'claim.confirm'")
    assert len(jobs) == 40 and all(s == "completed" for _, s in jobs), jobs
    assert scalar(a, "SELECT count(*) FROM jobs WHERE state IN ('running', 'available')") == 0, \
        sql(a, "SELECT id, kind, state, run_at, lease_owner FROM jobs"
               " WHERE state IN ('running', 'available')")
    assert scalar(a, "SELECT count(*) FROM jobs WHERE state = 'dead'") == 0

    # Who ran them: "job completed" (debug) lines, with job_id, per instance.
    job_ids = {int(j) for j, _ in jobs}
    ran = {}          # job id -> list of instance indexes that completed it
    for n, srv in enumerate(servers):
        for rec in srv.log_records():
            if isinstance(rec, dict) and rec.get("msg") == "job completed" \
                    and rec.get("kind") == "claim.confirm":
                ran.setdefault(int(rec["job_id"]), []).append(n)
        lost = [rec for rec in srv.log_records()
                if isinstance(rec, dict) and re.search(r"lease lost", rec.get("msg", ""))]
        assert not lost, lost[:3]
    assert set(ran) == job_ids, (sorted(job_ids - set(ran)), sorted(set(ran) - job_ids))
    assert all(len(v) == 1 for v in ran.values()), {k: v for k, v in ran.items() if len(v) > 1}
    per_instance = [sum(1 for v in ran.values() if v[0] == n) for n in range(instances)]
    print(f"claim.confirm jobs completed per instance: {per_instance}")
    assert sum(1 for c in per_instance if c) >= 2, \
        f"jobs ran on one instance only: {per_instance}"
