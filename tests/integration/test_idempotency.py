"""SPEC section 4: Idempotency-Key on every POST, exactly-once
effect, byte-for-byte replay, concurrency and crash safety."""

import json
import subprocess
import threading
import time

import pytest

from conftest import (
    HTTP_TIMEOUT,
    assert_error,
    backend_name,
    build_request,
    fund_wallet,
    concurrent_requests,
    find_samples,
    http_request,
    new_key,
    new_wallet,
    only_responses,
    param_id,
    parse_metrics,
    store_exec,
    store_rows,
)



def wallet_body(wallet=None):
    return json.dumps({"wallet": wallet or new_wallet()}).encode()


def post_register(srv, body, key, **kw):
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return srv.request("POST", "/api/register", body=body, headers=headers, **kw)


def assert_replay(first, again):
    """again is a HIT replay of first: same status, body bytes, Location."""
    assert again.status == first.status, (first, again)
    assert again.body == first.body, (first.body, again.body)
    assert again.headers.get("Location") == first.headers.get("Location")
    assert again.headers.get("X-Idempotency") == "HIT", again
    assert (again.headers.get("Idempotent-Replayed") or "").lower() == "true", again


def test_first_is_miss_and_replay_is_identical_hit(server):
    key, body = new_key(), wallet_body()
    before = server.snapshot()
    first = post_register(server, body, key)
    assert first.status == 201, first
    assert first.headers.get("X-Idempotency") == "MISS"
    after_first = server.snapshot()
    assert after_first["accounts"] == before["accounts"] + 1
    with server.unchanged():
        for _ in range(3):
            assert_replay(first, post_register(server, body, key))


def test_replay_metrics(server):
    key, body = new_key(), wallet_body()
    assert post_register(server, body, key).status == 201
    assert post_register(server, body, key).headers.get("X-Idempotency") == "HIT"
    samples = parse_metrics(server.metrics())
    assert find_samples(samples, "settled_idempotency_total", result="miss")
    hit = find_samples(samples, "settled_idempotency_total", result="hit")
    assert hit and hit[0][2] >= 1, hit


def test_same_key_different_body_is_422(server):
    key, body = new_key(), wallet_body()
    first = post_register(server, body, key)
    assert first.status == 201, first
    with server.unchanged():
        r = post_register(server, wallet_body(), key)
        assert_error(r, 422, "idempotency_key_reused")
        # the same JSON with other whitespace is another fingerprint (raw body)
        r = post_register(server, body + b" ", key)
        assert_error(r, 422, "idempotency_key_reused")
        # the original is still replayed
        assert_replay(first, post_register(server, body, key))


def test_uncached_replay_has_no_effect(server):
    """The first replay of a key is not in the process's cache (a MISS is
    never cached): on SQLite the write unit looks the key up before the
    handler's unit runs (ROUTE_KEY_CHECK_IN_UNIT), on PostgreSQL the unit's
    record insert finds it and the unit rolls back what it wrote. Either
    way: the stored answer, and nothing written."""
    key, body = new_key(), wallet_body()
    first = post_register(server, body, key)
    assert first.status == 201, first
    with server.unchanged():
        assert_replay(first, post_register(server, body, key))
    key, body = new_key(), wallet_body()
    first = post_register(server, body, key)
    with server.unchanged():
        assert_error(post_register(server, wallet_body(), key), 422, "idempotency_key_reused")
        assert_replay(first, post_register(server, body, key))


@pytest.mark.parametrize("bad", [b'{"wallet": "0x123"}', b'{"wallet": 7}', b'{"referrer": "x"}'],
                         ids=param_id)
def test_finished_key_beats_the_handlers_own_400(server, bad):
    """A finished key sent with a body its handler refuses (400
    invalid_wallet) is another request under the key: 422, as the
    finished-key check comes before the handler. On SQLite register's key
    is checked in the unit, after the handler's syntax checks; when those
    refuse, the store is asked then, and its answer comes first. Checked
    right after the MISS, so that the cache does not know the key yet."""
    key, body = new_key(), wallet_body()
    assert post_register(server, body, key).status == 201
    with server.unchanged():
        assert_error(post_register(server, bad, key), 422, "idempotency_key_reused")


def test_handlers_400_under_a_new_key_keeps_the_key_free(server):
    """The handler's own 400 under a key nobody used stores nothing: the
    key then runs a valid request once."""
    key = new_key()
    with server.unchanged():
        assert_error(post_register(server, b'{"wallet": "0x123"}', key), 400, "invalid_wallet")
    body = wallet_body()
    r = post_register(server, body, key)
    assert r.status == 201, r
    assert r.headers.get("X-Idempotency") == "MISS"
    assert_replay(r, post_register(server, body, key))


@pytest.mark.parametrize("key", [
    "",
    "k" * 256,
    "k" * 1000,
    "bad\x01key",
    "bad\x7fkey",
    "bad\tkey",
    b"cl\xc3\xa9",            # non-ASCII (UTF-8 bytes)
    b"\xff\xfe",
], ids=param_id)
def test_invalid_key_is_400(server, key):
    with server.unchanged():
        r = server.request("POST", "/api/register", body=wallet_body(),
                           headers={"Content-Type": "application/json", "Idempotency-Key": key})
        # Bytes that are not UTF-8 are refused for every header before the
        # key is looked at (http.c refuse_bad_headers).
        code = "invalid_header" if key == b"\xff\xfe" else "invalid_idempotency_key"
        assert_error(r, 400, code)


@pytest.mark.parametrize("key", ["k" * 255, "x", "~!@#$%^&*()_+{}|:<>?[];',./`= spaced"],
                         ids=param_id)
def test_boundary_keys_are_valid(server, key):
    r = post_register(server, wallet_body(), key)
    assert r.status == 201, r
    assert r.headers.get("X-Idempotency") == "MISS"


def test_conflict_answer_is_replayed(server):
    wallet = new_wallet()
    assert server.register(wallet).status == 201
    key, body = new_key(), wallet_body(wallet)
    first = post_register(server, body, key)
    assert_error(first, 409, "already_registered")
    assert first.headers.get("X-Idempotency") == "MISS"
    with server.unchanged():
        assert_replay(first, post_register(server, body, key))


@pytest.fixture
def small_server(start_server):
    return start_server(env={"SETTLED_MAX_BODY": "1024"})


@pytest.mark.parametrize("status,code,body,ctype", [
    (400, "invalid_wallet", b'{"wallet": "0x123"}', "application/json"),
    (400, "invalid_json", b'{"wallet": ', "application/json"),
    (415, "unsupported_media_type", b'{"wallet": "0x00"}', "text/plain"),
    (413, "payload_too_large", b'{"wallet": "0x00", "pad": "' + b"x" * 2000 + b'"}',
     "application/json"),
])
def test_rejected_requests_store_nothing(small_server, status, code, body, ctype):
    srv = small_server
    key = new_key()
    with srv.unchanged():
        for _ in range(2):          # not replayed either
            r = srv.request("POST", "/api/register", body=body,
                            headers={"Content-Type": ctype, "Idempotency-Key": key})
            assert_error(r, status, code)
            assert r.headers.get("X-Idempotency") != "HIT"
    # the key is still free for a valid request
    r = post_register(srv, wallet_body(), key)
    assert r.status == 201, r
    assert r.headers.get("X-Idempotency") == "MISS"


def test_key_required_on_money_routes(start_server):
    srv = start_server(env={"SETTLED_REQUIRE_IDEMPOTENCY_KEY": "1"})
    wallet = new_wallet()
    assert post_register(srv, wallet_body(wallet), new_key()).status == 201
    with srv.unchanged():
        r = srv.post("/api/claim/prepare", {"wallet": wallet, "amount": "100"})
        assert_error(r, 400, "idempotency_key_required")


def test_key_scope_is_per_route(server):
    key, wallet = new_key(), new_wallet()
    reg = post_register(server, wallet_body(wallet), key)
    assert reg.status == 201, reg
    fund_wallet(server, wallet, 100)
    claim = server.post("/api/claim/prepare", {"wallet": wallet, "amount": "100"}, key=key)
    assert claim.status == 201, claim
    assert claim.headers.get("X-Idempotency") == "MISS"
    assert claim.json.get("status") == "PENDING", claim.json
    # each route replays its own answer
    assert_replay(reg, post_register(server, wallet_body(wallet), key))
    assert_replay(claim, server.post("/api/claim/prepare",
                                     {"wallet": wallet, "amount": "100"}, key=key))


def _check_round(server, results, before, after):
    statuses = sorted(r.status for r in results)
    # A 5xx names itself and the server's warnings with it: CI keeps only
    # the log, and a bare list of statuses cannot tell a store failure from
    # a rate limiter that did not answer in time.
    failed = [(r.status, r.body[:200]) for r in results if r.status >= 500]
    assert not failed, (failed, [rec for rec in server.log_records()
                                 if isinstance(rec, dict) and rec.get("level") in ("warn", "error")][-10:])
    misses = [r for r in results if r.status == 201 and r.headers.get("X-Idempotency") == "MISS"]
    assert len(misses) == 1, f"{len(misses)} executions; statuses {statuses}"
    first = misses[0]
    for r in results:
        if r is first:
            continue
        if r.status == 409:
            assert_error(r, 409, "idempotency_key_in_use")
            assert r.headers.get("Retry-After") == "1", r
        else:
            assert r.status == 201, r
            assert_replay(first, r)
    assert after["accounts"] == before["accounts"] + 1, (before, after)


def test_concurrent_same_key_one_effect(server):
    """64 connections, same key and body, released at once; 50 rounds."""
    for _ in range(50):
        key, body = new_key(), wallet_body()
        req = {"method": "POST", "path": "/api/register", "body": body,
               "headers": {"Content-Type": "application/json", "Idempotency-Key": key}}
        before = server.snapshot()
        results = only_responses(concurrent_requests(server.port, [req] * 64))
        _check_round(server, results, before, server.snapshot())
        # once every answer is in, the key answers with the replay
        miss = next(r for r in results if r.headers.get("X-Idempotency") == "MISS")
        again = post_register(server, body, key)
        assert again.error != "idempotency_key_in_use", \
            "key still 'in use' after its 201 was delivered: the in-flight claim outlives the response"
        assert_replay(miss, again)


def test_concurrent_keyed_registrations_answer_each_their_own(server):
    """Many keyed registrations at once: on SQLite the writer takes them in
    batches and runs a batch's registrations as one merged run (a multi-row
    INSERT of the accounts, then of the keys' records), falling back to one
    unit each when any of them would fail or replay. Whatever the mix, each
    request gets its own answer: new wallets 201 MISS once each, a taken
    wallet 409 (recorded under its key), a finished key its replay, a bad
    wallet 400; and every recorded answer replays byte-for-byte."""
    taken = new_wallet()
    assert server.register(taken).status == 201
    for _ in range(5):
        done_key, done_body = new_key(), wallet_body()
        done = post_register(server, done_body, done_key)
        assert done.status == 201, done
        news = [(new_key(), wallet_body()) for _ in range(40)]
        takens = [(new_key(), wallet_body(taken)) for _ in range(8)]
        bads = [(new_key(), b'{"wallet": "0x12"}') for _ in range(4)]
        replays = [(done_key, done_body)] * 8
        jobs = news + takens + bads + replays

        def req(key, body):
            return {"method": "POST", "path": "/api/register", "body": body,
                    "headers": {"Content-Type": "application/json", "Idempotency-Key": key}}

        before = server.snapshot()
        results = only_responses(concurrent_requests(server.port, [req(k, b) for k, b in jobs]))
        after = server.snapshot()
        assert after["accounts"] == before["accounts"] + len(news), (before, after)
        for (key, body), r in zip(news, results[:40]):
            assert r.status == 201, r
            assert r.headers.get("X-Idempotency") == "MISS", r
            assert r.json["wallet"] == json.loads(body)["wallet"], r
        for r in results[40:48]:
            assert_error(r, 409, "already_registered")
            assert r.headers.get("X-Idempotency") == "MISS", r
        for r in results[48:52]:
            assert_error(r, 400, "invalid_wallet")
        for r in results[52:]:
            assert_replay(done, r)
        with server.unchanged():
            for (key, body), r in list(zip(jobs, results))[:48]:
                assert_replay(r, post_register(server, body, key))


@pytest.mark.skipif(backend_name() != "pg", reason="holds the writer with a PostgreSQL lock "
                    "(a unit alone waits for it as long as it takes)")
def test_keyed_registrations_queued_behind_a_held_writer_answer_each_their_own(start_server):
    """PostgreSQL's merged keyed registrations (one statement writing the
    keys' records and the accounts): with one writer held on a lock, keyed
    registrations queue up and the writer takes them as one batch, where
    they run as one merged run. A taken wallet among them makes the run
    short: it is rolled back and each runs alone, so every new wallet still
    gets its 201 and the taken one its own recorded 409, all replayable.
    (Whether they all made one batch depends on timing; nothing asserted
    here does.)"""
    srv = start_server(env={"SETTLED_PG_WRITE_CONNS": "1"})
    taken = new_wallet()
    assert srv.register(taken).status == 201
    news = [(new_key(), wallet_body()) for _ in range(20)]
    takens = [(new_key(), wallet_body(taken)) for _ in range(3)]
    jobs = news[:10] + takens + news[10:]

    def req(key, body):
        return build_request("POST", "/api/register", body=body, headers={
            "Content-Type": "application/json", "Idempotency-Key": key})

    before = srv.snapshot()
    locker = subprocess.Popen(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                               "-d", srv.backend.url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    conns = []
    try:
        locker.stdin.write("BEGIN;\nLOCK TABLE accounts IN SHARE ROW EXCLUSIVE MODE;\n"
                           "\\echo locked\n")
        locker.stdin.flush()
        assert locker.stdout.readline().strip() == "locked"
        first_key, first_body = new_key(), wallet_body()
        first = []
        t = threading.Thread(target=lambda: first.append(
            post_register(srv, first_body, first_key, timeout=120, check=False)), daemon=True)
        t.start()
        # The first unit, alone, waits on the lock and holds the only writer.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not store_rows(
                srv, "SELECT 1 FROM pg_locks WHERE NOT granted AND relation = 'accounts'::regclass"):
            time.sleep(0.05)
        for key, body in jobs:
            c = srv.connect_raw(timeout=120)
            conns.append(c)
            c.send(req(key, body))
        locker.stdin.write("COMMIT;\n")
        locker.stdin.close()
        locker.wait(60)
        results = [c.read_response() for c in conns]
        t.join(120)
    finally:
        for c in conns:
            c.sock.close()
        if locker.poll() is None:
            locker.kill()
            locker.wait()
    assert first and first[0].status == 201, first
    after = srv.snapshot()
    assert after["accounts"] == before["accounts"] + len(news) + 1, (before, after)
    for (key, body), r in zip(jobs, results):
        if json.loads(body)["wallet"] == taken:
            assert_error(r, 409, "already_registered")
        else:
            assert r.status == 201, r
            assert r.json["wallet"] == json.loads(body)["wallet"], r
        assert r.headers.get("X-Idempotency") == "MISS", r
    assert len({r.json["id"] for r in results if r.status == 201}) == len(news)
    with srv.unchanged():
        for (key, body), r in zip(jobs, results):
            assert_replay(r, post_register(srv, body, key))


def test_concurrent_replays_of_a_finished_key_all_hit(server):
    """Regression (found by make bench): 64 simultaneous retries of a key
    whose request has finished must all get the stored answer, never 409
    in_use: the finished-key lookup comes before the running check."""
    key, body = new_key(), wallet_body()
    first = post_register(server, body, key)
    assert first.status == 201, first
    req = {"method": "POST", "path": "/api/register", "body": body,
           "headers": {"Content-Type": "application/json", "Idempotency-Key": key}}
    for _ in range(20):
        with server.unchanged():
            results = only_responses(concurrent_requests(server.port, [req] * 64))
        assert len(results) == 64
        for r in results:
            assert r.headers.get("X-Idempotency") == "HIT", r
            assert_replay(first, r)


def test_crash_mid_flight_then_retry_every_key(start_server):
    """SIGKILL while keyed registrations are in flight; after a restart every
    key's retry yields its single effect and no key is stuck."""
    srv = start_server()
    before = srv.snapshot()
    n, threads = 200, 16
    jobs = [(new_key("crash"), wallet_body()) for _ in range(n)]
    results = [None] * n
    lock = threading.Lock()
    done = [0]
    enough = threading.Event()
    next_job = iter(range(n))

    def worker():
        while True:
            with lock:
                i = next(next_job, None)
            if i is None:
                return
            key, body = jobs[i]
            try:
                results[i] = http_request(srv.port, "POST", "/api/register", body=body, headers={
                    "Content-Type": "application/json", "Idempotency-Key": key},
                    timeout=5, check=False)
            except OSError as exc:          # refused / reset / timeout after the kill
                results[i] = exc
            with lock:
                done[0] += 1
                if done[0] >= n // 4:
                    enough.set()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    enough.wait(HTTP_TIMEOUT)
    srv.kill()
    for t in pool:
        t.join(HTTP_TIMEOUT)
    assert not any(t.is_alive() for t in pool)

    acked = {}
    for i, r in enumerate(results):
        if r is None or isinstance(r, Exception):
            continue
        assert r.status == 201, f"before the crash: {r!r}"
        acked[i] = r
    assert acked, "the server was killed before it answered anything"
    assert len(acked) < n, "every request was answered before the kill: nothing was in flight"

    srv.start()
    deadline = time.monotonic() + 15
    for i, (key, body) in enumerate(jobs):
        while True:
            r = post_register(srv, body, key)
            if r.status == 409 and r.error == "idempotency_key_in_use" and time.monotonic() < deadline:
                time.sleep(0.05)     # a lease left by the dead process may still run
                continue
            break
        assert r.status == 201, f"key {key}: {r!r}"
        assert r.headers.get("X-Idempotency") in ("HIT", "MISS"), r
        if i in acked:
            # acknowledged before the crash: durable, and replayed exactly
            assert_replay(acked[i], r)
    after = srv.snapshot()
    assert after["accounts"] == before["accounts"] + n, (before, after)
    # and every key now replays
    for key, body in jobs[:20]:
        assert post_register(srv, body, key).headers.get("X-Idempotency") == "HIT"


def test_replays_are_answered_from_the_cache(server):
    """A finished record never changes until it expires, so once a replay
    has read it, later replays come from the process's cache without the
    store: they still answer byte-for-byte with HIT even when the row is
    gone from the store (here deleted behind the server's back), and a
    different body under the key is still 422 from the cache."""
    key, body = new_key(), wallet_body()
    first = post_register(server, body, key)
    assert first.status == 201, first
    assert_replay(first, post_register(server, body, key))   # read from the store, cached
    store_exec(server, "DELETE FROM idempotency_keys WHERE idem_key = '%s'" % key)
    for _ in range(3):
        assert_replay(first, post_register(server, body, key))
    other = post_register(server, wallet_body(), key)
    assert_error(other, 422, "idempotency_key_reused")


def test_cached_replays_answer_like_the_long_way(start_server):
    """From the second replay on, a replay of the same bytes is answered
    from the cache before its body is parsed or hashed. It must answer
    exactly what the long way answers: the body-keyed limit (register's
    per-wallet budget) is still charged and shown, a wrong Content-Type is
    still 415, other bytes under the key (even the same JSON) still 422."""
    srv = start_server(env={"RL_REGISTER_PER_DAY_WALLET": "5"})
    key, body = new_key(), wallet_body()
    first = post_register(srv, body, key)
    assert first.status == 201 and first.headers.get("X-Idempotency") == "MISS", first
    assert first.headers.get("X-RateLimit-Remaining") == "4", first.headers
    for remaining in ("3", "2"):   # the store, then the cache
        again = post_register(srv, body, key)
        assert_replay(first, again)
        assert again.headers.get("X-RateLimit-Remaining") == remaining, again.headers
    # The same wallet in other bytes: another request (charged, then 422).
    spaced = post_register(srv, body + b" ", key)
    assert_error(spaced, 422, "idempotency_key_reused")
    assert spaced.headers.get("X-RateLimit-Remaining") == "1", spaced.headers
    again = post_register(srv, body, key)
    assert_replay(first, again)
    assert again.headers.get("X-RateLimit-Remaining") == "0", again.headers
    with srv.unchanged():
        limited = post_register(srv, body, key)
        body_json = assert_error(limited, 429, "rate_limited")
        assert body_json.get("policy") == "register_wallet", body_json
        r = srv.request("POST", "/api/register", body=body,
                        headers={"Content-Type": "text/plain", "Idempotency-Key": key})
        assert_error(r, 415, "unsupported_media_type")
        other = post_register(srv, wallet_body(), key)
        assert_error(other, 422, "idempotency_key_reused")


EXPIRY_TTL_S = 3


def test_cached_record_is_not_replayed_after_expiry(start_server):
    """An expired key must not replay from the cache: after the TTL the key
    is free, a different body under it runs (MISS), and from then on the
    key replays the new answer, never the old one.

    A record's TTL runs from its write, which came after its request was
    sent: checks answered within the TTL of that send are inside it. A run
    whose checks a loaded machine delayed past that may see the record
    expired: it proves nothing and is made again with a fresh key."""
    srv = start_server(env={"SETTLED_IDEMPOTENCY_TTL": f"{EXPIRY_TTL_S}s"})
    for _attempt in range(5):
        key, body_a, body_b = new_key(), wallet_body(), wallet_body()
        sent = time.monotonic()
        a = post_register(srv, body_a, key)
        # Waiting from the answer (not from the request, which a loaded
        # server may run late) is past the TTL whatever the request took.
        answered = time.monotonic()
        assert a.status == 201, a
        inside = [post_register(srv, body_a, key),        # cached
                  post_register(srv, body_a, key),        # from the cache
                  post_register(srv, body_b, key)]
        if time.monotonic() - sent >= EXPIRY_TTL_S:
            continue
        assert_replay(a, inside[0])
        assert_replay(a, inside[1])
        assert_error(inside[2], 422, "idempotency_key_reused")
        time.sleep(max(0.0, EXPIRY_TTL_S + 0.5 - (time.monotonic() - answered)))
        sent = time.monotonic()
        b = post_register(srv, body_b, key)
        assert b.status == 201, b
        assert b.headers.get("X-Idempotency") == "MISS", b
        inside = [post_register(srv, body_b, key), post_register(srv, body_a, key)]
        if time.monotonic() - sent >= EXPIRY_TTL_S:
            continue
        assert_replay(b, inside[0])
        assert_error(inside[1], 422, "idempotency_key_reused")
        return
    pytest.fail(f"every run's checks came more than {EXPIRY_TTL_S} s after their record")
