"""Faults on the links between settled and PostgreSQL / Redis (scale-out).

A fault-injecting proxy (faultproxy.py) sits between the server and each
service. The cases:

* A COMMIT reaches PostgreSQL, which commits, and the connection is cut
  before the answer gets back. The server looks the transaction up by its
  id on a new connection: the client gets its real answer (no false 503),
  and the effect is there once.
* Connections reset at random points (mid-transaction, mid-pipeline, after
  COMMIT) under concurrent keyed writes; clients retry 503s with the same
  Idempotency-Key as the API asks. Afterwards every acknowledged write is
  there exactly once, no webhook paid twice, and reconciliation is clean.
* Redis connections cut under load: the rate limiter follows its failure
  policy, counts it, and recovers without a restart.
"""

import threading
import time
import urllib.parse

import pytest

from conftest import (ADMIN_TOKEN, backend_name, concurrent_requests, new_key, new_wallet,
                      only_responses, wait_until)
from faultproxy import FaultProxy
from test_webhooks import ENV as WEBHOOK_ENV, standard

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

pytestmark = pytest.mark.skipif(backend_name() != "pg",
                                reason="the links to PostgreSQL and Redis are scale-out's")


def via(url, proxy):
    u = urllib.parse.urlsplit(url)
    netloc = u.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    netloc = f"{netloc[0]}@{host}" if len(netloc) == 2 else host
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))


@pytest.fixture
def proxied(start_server):
    """start(env) -> (server, pg proxy, redis proxy): a server whose links to
    PostgreSQL and Redis go through fault proxies."""
    proxies = []

    def start(env=None):
        srv = start_server(env={**WEBHOOK_ENV, **(env or {})})
        assert srv.stop() == 0
        pg_url = srv.backend.url
        redis_url = srv.backend.server_env()["SETTLED_REDIS_URL"]
        pg_u, redis_u = urllib.parse.urlsplit(pg_url), urllib.parse.urlsplit(redis_url)
        pg = FaultProxy(pg_u.hostname, pg_u.port, protocol="pg", seed=7).start()
        rd = FaultProxy(redis_u.hostname, redis_u.port, seed=8).start()
        proxies.extend([pg, rd])
        srv.env["SETTLED_DATABASE_URL"] = via(pg_url, pg)
        srv.env["SETTLED_REDIS_URL"] = via(redis_url, rd)
        srv.start()
        return srv, pg, rd

    yield start
    for p in proxies:
        p.stop()


def account(server, wallet):
    r = server.get(f"/api/v2/accounts/{wallet}", headers=ADMIN)
    return r.json if r.status == 200 else None


def test_lost_commit_answer_is_resolved_not_failed(proxied):
    server, pg, _ = proxied()
    log_before = server.stdout_path.read_text()

    # A keyed register whose COMMIT's answer is lost: 201, once.
    w, k = new_wallet(), new_key("cut")
    pg.cut_after_commit(1, touching=b"INSERT INTO accounts")
    r = server.register(w, key=k)
    assert pg.commits_cut == 1
    assert r.status == 201, r
    assert r.header("X-Idempotency") == "MISS"
    again = server.register(w, key=k)
    assert again.status == 201 and again.header("X-Idempotency") == "HIT", again
    assert again.body == r.body

    # Without a key: still the real answer, and the effect happened once.
    w2 = new_wallet()
    pg.cut_after_commit(1, touching=b"INSERT INTO accounts")
    r = server.register(w2)
    assert pg.commits_cut == 2
    assert r.status == 201, r
    r = server.register(w2)
    assert r.status == 409 and r.json["error"] == "already_registered", r

    # A signed payment: stored once, credited once.
    payment = standard(w, amount="250")
    pg.cut_after_commit(1, touching=b"INSERT INTO webhook_events")
    r = payment.send(server)
    assert r.status == 200 and r.json.get("status") != "duplicate", r
    assert payment.send(server).json["status"] == "duplicate"
    wait_until(lambda: (account(server, w) or {}).get("balance") == "250", timeout=15,
               what="the payment")
    time.sleep(0.5)
    assert account(server, w)["balance"] == "250"

    def resolved():
        log = server.stdout_path.read_text()[len(log_before):]
        return log.count("a COMMIT's answer was lost; transaction") >= pg.commits_cut
    wait_until(resolved, timeout=5, what="a log line for each lost COMMIT answer")
    log = server.stdout_path.read_text()[len(log_before):]
    assert "did not commit" not in log and "is unknown" not in log


def test_lost_commit_answer_of_concurrent_writes_is_resolved_for_each(proxied):
    """Concurrent registrations share group commits (one transaction per
    batch): when a COMMIT's answer is lost, its outcome, looked up once, is
    every unit's in it. Each fresh wallet is answered 201 and exists once;
    of each repeated wallet's four requests one is 201 and three 409 (their
    failures rolled back alone, inside the batch or not)."""
    server, pg, _ = proxied()
    log_before = server.stdout_path.read_text()
    fresh = [new_wallet() for _ in range(24)]
    repeated = [new_wallet() for _ in range(2)]
    wallets = fresh + repeated * 4
    pg.cut_after_commit(1, touching=b"INSERT INTO accounts")
    reqs = [{"method": "POST", "path": "/api/register", "json_body": {"wallet": w}} for w in wallets]
    results = only_responses(concurrent_requests(server.port, reqs))
    assert pg.commits_cut == 1
    for w, r in zip(wallets, results):
        if w in fresh:
            assert r.status == 201 and r.json["wallet"] == w, r
    for w in repeated:
        statuses = sorted(r.status for x, r in zip(wallets, results) if x == w)
        assert statuses == [201, 409, 409, 409], statuses
    for w in fresh + repeated:
        assert server.register(w).status == 409, w  # there, once

    def resolved():
        return "a COMMIT's answer was lost; transaction" in server.stdout_path.read_text()[len(log_before):]
    wait_until(resolved, timeout=5, what="the lost COMMIT's log line")
    log = server.stdout_path.read_text()[len(log_before):]
    assert "did not commit" not in log and "is unknown" not in log


def keyed(server, method, fn, key, tries=40):
    """Sends fn(key) until it is not a 503, as a client following the API's
    advice ("retry with the same Idempotency-Key") does."""
    for _ in range(tries):
        r = fn(key)
        if r.status != 503:
            return r
        time.sleep(0.05)
    return r


def test_random_resets_under_load_lose_and_double_nothing(proxied):
    server, pg, _ = proxied({"RL_REGISTER_PER_HOUR": "0", "RL_REGISTER_PER_DAY_WALLET": "0",
                             "RL_WEBHOOK_PER_MIN": "0"})
    acked, paid, errors = [], [], []
    lock = threading.Lock()
    stop = time.monotonic() + 6

    def client(i):
        n = 0
        while time.monotonic() < stop:
            n += 1
            w, k = new_wallet(), f"load-{i}-{n}"
            r = keyed(server, "POST", lambda key: server.register(w, key=key), k)
            if r.status == 201:
                p = standard(w, amount="7")
                d = keyed(server, "POST", lambda key: p.send(server), None)
                with lock:
                    acked.append(w)
                    if d.status == 200:
                        paid.append(w)
                    else:
                        errors.append(("payment", d))
            else:
                with lock:
                    errors.append(("register", r))

    pg.cut_after_commit(5)
    pg.reset_randomly(0.02)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    pg.quiet()
    summary = pg.summary()
    print("link faults:", summary, "acknowledged:", len(acked), "errors:", len(errors))
    assert summary["resets"] + summary["commits_cut"] > 0, summary
    assert acked, errors[:3]
    # Clients that retried on 503 ended with an answer; what ended in an
    # error is a real refusal, never a 5xx.
    assert not [e for e in errors if e[1].status >= 500], errors[:3]

    # Every acknowledged registration is there once; every payment credited once.
    for w in paid:
        # Generous: jobs retried after the resets wait out their backoff.
        wait_until(lambda: (account(server, w) or {}).get("balance") == "7", timeout=60,
                   what=f"the payment of {w}")
    for w in acked:
        assert account(server, w) is not None, w
    r = server.post("/api/admin/reconciliation", headers=ADMIN, key=new_key("rec"))
    assert r.status in (200, 201), r
    assert r.json["ok"] is True, r.json["checks"]


def test_redis_cut_under_load_follows_policy_and_recovers(proxied):
    server, _, rd = proxied()
    codes = []
    stop = time.monotonic() + 3

    def load():
        while time.monotonic() < stop:
            codes.append(server.get("/healthz").status)
            codes.append(server.register(new_wallet(), key=new_key("rl")).status)

    t = threading.Thread(target=load)
    t.start()
    for _ in range(5):
        time.sleep(0.4)
        rd.reset_all()
    t.join(30)
    assert rd.resets > 0
    # Health fails open, registration (an abuse target) may be refused while
    # Redis is unreachable; nothing else, and nothing crashed.
    assert set(codes) <= {200, 201, 429, 503}, set(codes)
    assert codes.count(200) > 0
    # Recovered without a restart.
    wait_until(lambda: server.register(new_wallet()).status in (201, 429), timeout=10,
               what="registration after Redis came back")
    wait_until(lambda: server.get("/health/ready").status == 200, timeout=10, what="readiness")
