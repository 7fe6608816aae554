"""Issue 7, SPEC sections 1 and 5: rate limits in Redis, shared by instances.

Every test here runs its own Redis (the private_redis fixture: redisctl in
the test's tmp dir), so stopping it disturbs nothing else, and points its
servers at it with SETTLED_REDIS_URL. Runs on either store backend: the
limiter is independent of the store.

- Two, then four instances on one Redis share one quota: 200 concurrent
  registrations spread over them against 50/hour let exactly 50 through.
- Redis stopped under load: money-moving routes fail closed (503
  rate_limiter_unavailable), health fails open, /health/ready is 503 naming
  redis, settled_rate_limit_backend_errors_total counts both; nothing is
  written and no server dies. Redis started again: everything recovers
  within a few seconds with no server restart.
"""

import http.client
import json
import os
import re
import secrets
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import (
    TEST_REDIS_TIMEOUT,
    PrivateRedis,
    assert_error,
    barrier_run,
    find_samples,
    http_request,
    new_key,
    new_wallet,
    only_responses,
    parse_metrics,
    run_settled,
    wait_until,
)


def redis_env(redis, prefix=None, **extra):
    # The harness's long Redis timeout (conftest.TEST_REDIS_TIMEOUT): a test
    # about shared quotas must not see a Redis starved of CPU for 200 ms on
    # a loaded machine as down (200 concurrent registrations against 50/hour
    # with the test's Redis stopped 300 ms every 0.35 s: 0 of 50 passed at
    # 200 ms). The outage tests pass SETTLED_REDIS_TIMEOUT=None: they are
    # about what the product's default does.
    env = {"SETTLED_REDIS_URL": redis.url,
           "SETTLED_REDIS_PREFIX": prefix or f"it:{secrets.token_hex(6)}:",
           "SETTLED_REDIS_TIMEOUT": TEST_REDIS_TIMEOUT}
    env.update({k: None if v is None else str(v) for k, v in extra.items()})
    return env


def register_on(port, wallet=None, check=True):
    return http_request(port, "POST", "/api/register", json_body={"wallet": wallet or new_wallet()},
                        headers={"Idempotency-Key": new_key("r")}, check=check)


def register_201(port):
    """A registration that gets 201, made again while the server answers
    503 rate_limiter_unavailable: the setup step of the outage tests,
    whose servers keep the product's 200 ms Redis timeout, so a Redis
    starved of CPU for longer on a loaded machine refuses it. A refusal
    writes nothing (test_redis_stalled_past_the_timeout_is_unavailable)."""
    def attempt():
        r = register_on(port, check=False)
        if r.status == 503 and r.error == "rate_limiter_unavailable":
            return None
        assert r.status == 201, r
        return r
    return wait_until(attempt, timeout=30, interval=0.1, what="a registration's 201")


def backend_errors(srv, policy, decision):
    s = find_samples(parse_metrics(srv.metrics()), "settled_rate_limit_backend_errors_total",
                     policy=policy, decision=decision)
    return sum(v for _, _, v in s)


def ready(srv):
    return srv.get("/health/ready")


# --------------------------------------------------------------------------
# One quota across instances


@pytest.mark.parametrize("instances", [2, 4])
def test_instances_share_a_limit_of_50(start_server, private_redis, instances):
    env = redis_env(private_redis, RL_REGISTER_PER_HOUR=50)
    servers = [start_server(env=env) for _ in range(instances)]
    for srv in servers:
        r = ready(srv)
        assert r.status == 200, r
        assert r.json["checks"]["redis"] == {"status": "ok"}, r.json

    def make(port):
        body = {"wallet": new_wallet()}

        def fn(release):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.connect()
                release()
                conn.request("POST", "/api/register", body=json.dumps(body),
                             headers={"Content-Type": "application/json",
                                      "Idempotency-Key": new_key("c")})
                resp = conn.getresponse()
                return port, resp.status, dict(resp.getheaders()), resp.read()
            finally:
                conn.close()
        return fn

    results = only_responses(barrier_run([make(servers[i % instances].port) for i in range(200)],
                                         timeout=120))
    passed = [r for r in results if r[1] == 201]
    limited = [r for r in results if r[1] == 429]
    assert len(passed) == 50, sorted(r[1] for r in results)
    assert len(limited) == 150
    # One shared state, whichever instance answered.
    assert_one_sequence([int(r[2]["X-RateLimit-Remaining"]) for r in passed], 50)
    assert len({r[0] for r in passed}) >= 2, "the passes came from several instances"
    for _, _, headers, _ in limited:
        assert headers["X-RateLimit-Remaining"] == "0"
        assert int(headers["Retry-After"]) >= 1
    # the limit holds for a later request on every instance
    for srv in servers:
        assert_error(register_on(srv.port), 429, "rate_limited")


def assert_one_sequence(remaining, limit):
    """The X-RateLimit-Remaining values of the passes of one key decided
    in one shared state: the j-th decision to reach it (j = 1..limit)
    reports limit - j, or limit - j - 1 when its request read the clock
    (now_ms, taken before the Redis call) earlier than the first decision
    did. That happens when a thread is descheduled between its clock read
    and its call while a later request overtakes it: GCRA then sees the
    same TAT from an earlier now, one interval less room (shown with a
    gdb-held thread: [.., 47, 47, 49]; correct, not a lost update). The
    values never rise in the order the decisions were made, so sorted
    from the top the j-th is limit - j or one less, and the first is
    limit - 1. Two states (or a lost update) would repeat a value from
    the top, or let more than limit through."""
    got = sorted(remaining, reverse=True)
    assert len(got) == limit, got
    assert got[0] == limit - 1, got
    for j, v in enumerate(got, start=1):
        assert v in (limit - j, limit - j - 1), (j, got)


def script_calls(redis):
    """EVALSHA + EVAL calls Redis has run (INFO commandstats)."""
    host, port = redis.url[len("redis://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
        data = b""
        while not data.endswith(b"\r\n") or data.count(b"\r\n") < 2 or \
                len(data) < int(data.split(b"\r\n", 1)[0][1:]) + 4:
            data += s.recv(65536)
    calls = 0
    for line in data.decode().splitlines():
        if line.startswith(("cmdstat_evalsha:", "cmdstat_eval:")):
            calls += int(line.split("calls=", 1)[1].split(",", 1)[0])
    return calls


def test_a_registration_decides_its_two_limits_in_one_call(start_server, private_redis):
    # Register's address and wallet limits are decided by one script call
    # (one round trip to Redis, not one a limit), in route order: a wallet
    # past its limit still charges the address, an address past its limit
    # charges no wallet, and a malformed body, whose wallet is unknown,
    # still charges the address (its own call) and is refused by it.
    srv = start_server(env=redis_env(private_redis, RL_REGISTER_PER_HOUR=4,
                                     RL_REGISTER_PER_DAY_WALLET=1,
                                     SETTLED_TRUST_PROXY="127.0.0.1"))

    def reg(addr, wallet):
        return http_request(srv.port, "POST", "/api/register", json_body={"wallet": wallet},
                            headers={"Idempotency-Key": new_key("r"),
                                     "X-Forwarded-For": addr}, check=False)

    def bad(addr):
        return http_request(srv.port, "POST", "/api/register", body=b"{not json",
                            headers={"Content-Type": "application/json",
                                     "X-Forwarded-For": addr}, check=False)

    w1, w2, w3 = new_wallet(), new_wallet(), new_wallet()
    # Redis learns the script first (NOSCRIPT, then EVAL: two calls once).
    assert reg("203.0.113.9", new_wallet()).status == 201
    before = script_calls(private_redis)
    assert reg("203.0.113.1", w1).status == 201
    assert script_calls(private_redis) - before == 1, "two limits, one call"
    body = assert_error(reg("203.0.113.1", w1), 429, "rate_limited")
    assert body["policy"] == "register_wallet", body
    r = bad("203.0.113.1")
    assert r.status == 400, r
    assert r.headers["X-RateLimit-Remaining"] == "1", "the address charged 3 times of 4"
    assert script_calls(private_redis) - before == 3
    assert reg("203.0.113.1", w2).status == 201
    body = assert_error(reg("203.0.113.1", w3), 429, "rate_limited")
    assert body["policy"] == "register_ip", body
    assert_error(bad("203.0.113.1"), 429, "rate_limited")
    assert script_calls(private_redis) - before == 6
    # w3 was not charged by the refusal of its address: from another
    # address it registers (its limit is 1 a day).
    assert reg("203.0.113.2", w3).status == 201


def test_instances_with_other_prefixes_do_not_share(start_server, private_redis):
    a = start_server(env=redis_env(private_redis, RL_REGISTER_PER_HOUR=2))
    b = start_server(env=redis_env(private_redis, RL_REGISTER_PER_HOUR=2))
    for srv in (a, b):
        assert [register_on(srv.port).status for _ in range(3)] == [201, 201, 429]


# --------------------------------------------------------------------------
# Redis down, and back


def test_redis_stopped_under_load_fails_closed_then_recovers(start_server, private_redis):
    env = redis_env(private_redis, SETTLED_REDIS_TIMEOUT=None)
    servers = [start_server(env=env), start_server(env=env)]
    pids = [s.proc.pid for s in servers]
    for srv in servers:
        register_201(srv.port)

    stop = threading.Event()
    seen = {}            # status -> count, from the load threads
    problems = []
    lock = threading.Lock()

    def load(srv):
        while not stop.is_set():
            try:
                r = register_on(srv.port)
                code = (r.status, r.error)
            except Exception as exc:  # noqa: BLE001 - a dead server shows here
                problems.append(repr(exc))
                return
            with lock:
                seen[code] = seen.get(code, 0) + 1
            if code not in ((201, None), (503, "rate_limiter_unavailable")):
                problems.append(f"unexpected {r!r}")

    threads = [threading.Thread(target=load, args=(s,), daemon=True)
               for s in servers for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        private_redis.halt()
        t_down = time.monotonic()
        for srv in servers:
            # Money-moving: fail closed, fast, and nothing written.
            # (That a refusal does not wait for Redis is counted by
            # test_redisc and test_rl_redis: one connect tried, then
            # refusals at once during the backoff. No wall-clock ceiling
            # here: a server descheduled for a second fails "< 1 s".)
            before = srv.snapshot()
            r = register_on(srv.port)
            body = assert_error(r, 503, "rate_limiter_unavailable")
            assert "retry_after" not in body
            after = srv.snapshot()
            assert after.get("accounts") == before.get("accounts")
            # Health: fails open.
            assert srv.get("/healthz").status == 200
            # Readiness: 503, naming redis.
            r = ready(srv)
            assert r.status == 503, r
            assert "redis" in r.json["failing"], r.json
            assert r.json["checks"]["redis"]["status"] == "unavailable"
            assert r.json["checks"]["redis"]["error"], r.json
            assert r.json["checks"]["store"]["status"] == "ok"
            # Counted, per policy and decision.
            assert backend_errors(srv, "register_ip", "closed") >= 1
            assert backend_errors(srv, "health", "open") >= 1
        time.sleep(1.0)        # a while under load with Redis down
        # The load met the outage (waited for, not assumed from the sleep:
        # a starved load thread may not have finished a request in it).
        wait_until(lambda: seen.get((503, "rate_limiter_unavailable"), 0) > 0, timeout=30,
                   what="a load thread's refusal while Redis is down")
        private_redis.start()

        # Found again within the backoff cap (1 s): while a server is not
        # ready yet, the wait its pool names ("next attempt in N ms") is at
        # most the cap; test_redisc shows the first call after that wait
        # finds the server. The pool's own figure, not a wall-clock
        # ceiling ("< 5 s" included Redis's and the servers' scheduling).
        waits = []

        def recovered():
            for s in servers:
                r = ready(s)
                if r.status != 200:
                    m = re.search(r"next attempt in (\d+) ms",
                                  (r.json or {}).get("checks", {}).get("redis", {}).get("error", ""))
                    if m:
                        waits.append(int(m.group(1)))
                    return False
                if register_on(s.port).status != 201:
                    return False
            return True
        wait_until(recovered, timeout=30, interval=0.1, what="recovery after Redis restarted")
        assert all(w <= 1000 for w in waits), f"a wait past the 1 s backoff cap: {waits}"
        # The load got through again after the recovery (so 201 and 503
        # both came from the load threads themselves).
        ok_before = seen.get((201, None), 0)
        wait_until(lambda: seen.get((201, None), 0) > ok_before, timeout=30,
                   what="a load thread's 201 after Redis came back")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not problems, problems[:5]
    assert seen.get((503, "rate_limiter_unavailable"), 0) > 0, seen
    assert seen.get((201, None), 0) > 0, seen
    assert [s.proc.pid for s in servers] == pids and all(s.running for s in servers), \
        "no server restarted or died"
    assert time.monotonic() - t_down > 1.0
    for srv in servers:
        r = ready(srv)
        assert r.status == 200 and r.json["checks"]["redis"]["status"] == "ok", r


def unread_bytes(port):
    """Bytes waiting unread in the receive queues of the connections
    accepted on 127.0.0.1:port (/proc/net/tcp): a command sent to a Redis
    that is not running yet."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            local, state, queues = cols[1], cols[3], cols[4]
            if local == f"0100007F:{port:04X}" and state == "01":
                n += int(queues.split(":")[1], 16)
    return n


@pytest.mark.parametrize("timeout,status", [(None, 503), (TEST_REDIS_TIMEOUT, 201)])
def test_redis_stalled_past_the_timeout_is_unavailable(start_server, private_redis, timeout,
                                                       status):
    """SETTLED_REDIS_TIMEOUT bounds how long a command waits for Redis.
    Redis is stopped (SIGSTOP: its connections stay open, nothing answers,
    as a Redis starved of CPU on a loaded machine) until a registration's
    script call is sent, then for 0.6 s more: longer than the default
    200 ms, so that refuses (503: money routes fail closed); far shorter
    than the harness's timeout (the one every PostgreSQL-suite server
    gets), under which the same stall is only a slower 201."""
    srv = start_server(env=redis_env(private_redis, SETTLED_REDIS_TIMEOUT=timeout))
    register_201(srv.port)                           # the pool's connection is open
    pid = int((Path(private_redis.dir) / "redis.pid").read_text())
    port = int(private_redis.url.rsplit(":", 1)[1])
    answer = {}
    before = srv.snapshot()
    os.kill(pid, signal.SIGSTOP)
    try:
        t = threading.Thread(target=lambda: answer.update(r=register_on(srv.port, check=False)))
        t.start()
        wait_until(lambda: unread_bytes(port) > 0 or not t.is_alive(), timeout=30,
                   what="the registration's command waiting in Redis's socket")
        if status == 503:
            # Stalled until the server answers: the 200 ms timeout must
            # end the wait while Redis still cannot answer. (A fixed
            # 0.6 s stall let a server thread starved past it find the
            # reply in its socket once Redis resumed, and answer 201.)
            t.join(60)
        else:
            time.sleep(0.6)
    finally:
        os.kill(pid, signal.SIGCONT)
    t.join(60)
    r = answer["r"]
    assert r.status == status, r
    if status == 503:
        assert_error(r, 503, "rate_limiter_unavailable")
        assert srv.snapshot() == before, "a refusal writes nothing"
    else:
        assert srv.snapshot()["accounts"] == before["accounts"] + 1


def test_server_starts_while_redis_is_down(start_server, tmp_path):
    redis = PrivateRedis(tmp_path / "redis")
    try:
        redis.halt()
        srv = start_server(env=redis_env(redis, SETTLED_REDIS_TIMEOUT=None))
        r = ready(srv)
        assert r.status == 503 and r.json["failing"] == ["redis"], r
        assert_error(register_on(srv.port), 503, "rate_limiter_unavailable")
        assert any("Redis is not reachable" in (rec or {}).get("msg", "")
                   for rec in srv.log_records()), "a warning at start"
        redis.start()
        # Recovery without a restart is the claim; the time also holds Redis's
        # own start, which under `make asan` with five suites side by side
        # took longer than 5 s once.
        wait_until(lambda: ready(srv).status == 200, timeout=15.0, interval=0.1,
                   what="readiness once Redis is up")
        register_201(srv.port)
    finally:
        redis.stop()


def test_fail_open_lets_money_routes_through(start_server, private_redis):
    srv = start_server(env=redis_env(private_redis, SETTLED_RL_FAIL="open",
                                     SETTLED_REDIS_TIMEOUT=None))
    private_redis.halt()
    r = register_on(srv.port)
    assert r.status == 201, r
    assert r.headers.get("RateLimit") is None, "no decision, no RateLimit headers"
    assert backend_errors(srv, "register_ip", "open") >= 1
    assert ready(srv).status == 503


# --------------------------------------------------------------------------
# Configuration and secrets


def test_password_is_used_and_never_logged(start_server, tmp_path):
    redis = PrivateRedis(tmp_path / "redis", "--requirepass", "pw-0123456789")
    try:
        host = redis.url[len("redis://"):]
        good = start_server(env={"SETTLED_REDIS_URL": f"redis://:pw-0123456789@{host}/1",
                                 "SETTLED_REDIS_PREFIX": "it:pw:",
                                 "SETTLED_REDIS_TIMEOUT": TEST_REDIS_TIMEOUT})
        assert ready(good).status == 200
        assert register_on(good.port).status == 201
        bad = start_server(env={"SETTLED_REDIS_URL": f"redis://:wrong-9876543210@{host}",
                                "SETTLED_REDIS_PREFIX": "it:pw:"})
        r = ready(bad)
        assert r.status == 503, r
        assert "AUTH" in r.json["checks"]["redis"]["error"], r.json
        assert_error(register_on(bad.port), 503, "rate_limiter_unavailable")
        for srv in (good, bad):
            out = srv.stdout() + srv.stderr()
            assert b"pw-0123456789" not in out and b"wrong-9876543210" not in out
        assert b"wrong-9876543210" not in r.body
    finally:
        redis.stop()


@pytest.mark.parametrize("url", ["rediss://h:6379", "redis://h:99999", "redis://h/x",
                                 "redis://:pw@", "redis://:s3cret@h?x=1"])
def test_bad_redis_url_is_a_config_error(url):
    code, out, err = run_settled([], env={"SETTLED_REDIS_URL": url})
    assert code == 2, (code, err)
    assert "SETTLED_REDIS_URL" in err, err
    assert "s3cret" not in err + out


def test_in_process_limiter_has_no_redis_check(start_server):
    r = ready(start_server(env={"SETTLED_REDIS_URL": None}))
    assert r.status == 200
    assert "redis" not in r.json["checks"], r.json
