"""SPEC sections 8 (health, metrics) and 11 (metrics, logs)."""

import http.client
import json
import re
import subprocess
import threading
import time

import pytest

from conftest import (
    ADMIN_TOKEN,
    _send,
    backend_name,
    concurrent_requests,
    find_samples,
    new_wallet,
    only_responses,
    parse_metrics,
    store_scalar,
    wait_until,
)


@pytest.mark.parametrize("path", ["/healthz", "/health/live", "/health/ready"])
def test_health_endpoints_answer_200_json(server, path):
    with server.unchanged():
        r = server.get(path)
    assert r.status == 200, r
    assert (r.headers.get("Content-Type") or "").startswith("application/json")
    assert isinstance(r.json, dict), r.body


def test_head_healthz(server):
    r = server.request("HEAD", "/healthz")
    assert r.status == 200, r
    assert r.body == b""


def _metrics_samples(srv):
    r = srv.get("/metrics")
    assert r.status == 200, r
    ctype = r.headers.get("Content-Type") or ""
    assert ctype.startswith("text/plain"), ctype
    assert "0.0.4" in ctype, ctype
    return r.body.decode(), parse_metrics(r.body.decode())


def test_metrics_exposition(server):
    server.get("/healthz")
    # A request is counted when libmicrohttpd reports it completed, which can
    # be just after the client has read the whole answer.
    wait_until(lambda: find_samples(_metrics_samples(server)[1],
                                    "http_request_duration_seconds_bucket", le="+Inf"),
               what="the /healthz request in the histogram")
    text, samples = _metrics_samples(server)
    assert "# TYPE http_requests_total counter" in text
    assert "# TYPE http_request_duration_seconds histogram" in text
    assert find_samples(samples, "http_request_duration_seconds_bucket", le="+Inf")
    assert find_samples(samples, "http_request_duration_seconds_count")
    assert find_samples(samples, "http_request_duration_seconds_sum")
    rss = find_samples(samples, "process_resident_memory_bytes")
    assert rss and rss[0][2] > 0
    start = find_samples(samples, "process_start_time_seconds")
    assert start and abs(start[0][2] - time.time()) < 3600, start
    assert find_samples(samples, "process_cpu_seconds_total")
    assert find_samples(samples, "process_open_fds")


def _commit_units(srv):
    """settled_store_commit_units: (count, sum, {le: cumulative count})."""
    _, samples = _metrics_samples(srv)
    count = find_samples(samples, "settled_store_commit_units_count")
    total = find_samples(samples, "settled_store_commit_units_sum")
    assert count and total, "settled_store_commit_units is not exported"
    buckets = {s[1]["le"]: s[2] for s in find_samples(samples, "settled_store_commit_units_bucket")}
    return count[0][2], total[0][2], buckets


def test_commit_units_count_the_durable_units_of_each_commit(server):
    """Group commit's batch size: every COMMIT that made write units durable
    is one observation of how many (a unit alone is 1), so the sum grows by
    at least the units the requests wrote (background units add their own)
    and the commits are no more than the units."""
    count0, sum0, _ = _commit_units(server)
    n = 24
    reqs = [{"method": "POST", "path": "/api/register", "json_body": {"wallet": new_wallet()},
             "headers": {"Idempotency-Key": "commit-units-%d-%d" % (i, time.time_ns())}}
            for i in range(n)]
    results = only_responses(concurrent_requests(server.port, reqs))
    assert [r.status for r in results] == [201] * n, [r.status for r in results]
    # Observed after the COMMIT, before the unit's answer: already counted.
    count1, sum1, buckets = _commit_units(server)
    assert sum1 - sum0 >= n, (sum0, sum1)
    assert 1 <= count1 - count0 <= sum1 - sum0, (count0, count1, sum0, sum1)
    assert buckets["+Inf"] == count1, buckets
    les = sorted((float(k), v) for k, v in buckets.items() if k != "+Inf")
    assert [le for le, _ in les][:2] == [1.0, 2.0], les
    assert all(a[1] <= b[1] for a, b in zip(les, les[1:])), les


def test_unit_retries_are_exported_by_cause(server):
    """settled_store_unit_retries_total: the units the store ran again, one
    series per cause from the start (an alert sees 0 before the first).
    The embedded store never runs a unit twice: all stay 0 there."""
    server.post("/api/register", {"wallet": new_wallet()})
    text, samples = _metrics_samples(server)
    assert "# TYPE settled_store_unit_retries_total counter" in text
    got = {s[1]["cause"]: s[2] for s in find_samples(samples, "settled_store_unit_retries_total")}
    assert sorted(got) == ["batch", "busy", "connection", "deadlock", "lock_timeout",
                           "serialization"], got
    assert all(v >= 0 for v in got.values()), got
    if backend_name() == "sqlite":
        assert all(v == 0 for v in got.values()), got


def _gather_waits(srv):
    """settled_store_gather_waits_total: {end: count}."""
    text, samples = _metrics_samples(srv)
    assert "# TYPE settled_store_gather_waits_total counter" in text
    return {s[1]["end"]: s[2] for s in find_samples(samples, "settled_store_gather_waits_total")}


def test_gather_waits_are_exported_by_end(server):
    """settled_store_gather_waits_total{end}: the batches a PostgreSQL
    writer took after holding them back to gather (SETTLED_PG_GATHER_US),
    by whether the wait ran to its bound; both series from the start. The
    embedded store never holds: 0 there."""
    server.post("/api/register", {"wallet": new_wallet()})
    got = _gather_waits(server)
    assert sorted(got) == ["deadline", "woken"], got
    assert all(v >= 0 for v in got.values()), got
    if backend_name() == "sqlite":
        assert got == {"deadline": 0, "woken": 0}, got


@pytest.mark.skipif(backend_name() != "pg", reason="PostgreSQL's writers gather; a PostgreSQL "
                    "lock keeps one busy (a unit alone waits for it as long as it takes)")
def test_no_gathering_wait_with_pg_gather_us_0(start_server):
    """SETTLED_PG_GATHER_US=0 turns the gathering off: with a writer
    busy (its unit waits on a table lock an outside transaction holds), a
    unit pushed then is taken by the free writer at once, and no wait is
    counted. (The other way round is not asserted here: whether a free
    writer holds depends on it running before the bound has passed, which
    a loaded machine does not promise; test_store.c covers the rule and
    how a hold's end is reported.) Counts are compared with a baseline
    taken once the first unit waits; nothing here depends on timing.
    Three writers, not two: the ticker's hot-account fold (an UPDATE of
    accounts, every second, on its one thread) waits on the table lock too
    and keeps a writer while it does; with two, a fold landing before the
    second registration left that registration queued with no free writer,
    and the test timed out."""
    srv = start_server(env={"SETTLED_PG_WRITE_CONNS": "3", "SETTLED_PG_GATHER_US": "0"})
    # Registrations' units waiting on the lock (not a background unit that might).
    waiting = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
               "AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO accounts%'")
    locker = subprocess.Popen(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                               "-d", srv.backend.url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    answers = []
    threads = []

    def register():
        answers.append(srv.post("/api/register", {"wallet": new_wallet()}, timeout=120))

    try:
        locker.stdin.write("BEGIN;\nLOCK TABLE accounts IN SHARE ROW EXCLUSIVE MODE;\n"
                           "\\echo locked\n")
        locker.stdin.flush()
        assert locker.stdout.readline().strip() == "locked"
        for n in (1, 2):
            if n == 2:
                before = _gather_waits(srv)
            t = threading.Thread(target=register, daemon=True)
            t.start()
            threads.append(t)
            # Its unit has been taken (held first or not) and waits on the lock.
            wait_until(lambda: store_scalar(srv, waiting) >= n, timeout=60,
                       what=f"{n} registration(s) waiting on the lock")
        after = _gather_waits(srv)
        locker.stdin.write("COMMIT;\n")
        locker.stdin.close()
        locker.wait(60)
        for t in threads:
            t.join(120)
    finally:
        if locker.poll() is None:
            locker.kill()
            locker.wait()
    assert [r.status for r in answers] == [201, 201], answers
    assert after == before, (before, after)


def test_metrics_label_by_route_template(server):
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    r = server.get("/api/v2/intents/abc", headers=auth)
    assert r.status != 405
    server.get("/no-such-route-xyz-123")
    server.get("/healthz")

    # A request is counted when libmicrohttpd reports it complete, which
    # can come after the client has read the answer: wait for both series.
    def labelled():
        text, samples = _metrics_samples(server)
        hits = find_samples(samples, "http_requests_total",
                            route="/api/v2/intents/{id}", method="GET")
        health = find_samples(samples, "http_requests_total", route="/healthz", method="GET")
        return (text, hits, samples) if hits and health else None

    text, hits, samples = wait_until(labelled, what='http_requests_total for /api/v2/intents/{id} and /healthz')
    assert all("status" in s[1] for s in hits), hits
    assert any(s[1]["status"] == str(r.status) for s in hits), (r.status, hits)
    assert find_samples(samples, "http_request_duration_seconds_bucket",
                        route="/api/v2/intents/{id}", method="GET")
    assert find_samples(samples, "http_requests_total", route="/healthz", method="GET")
    # raw paths never become label values: cardinality stays bounded
    assert "/api/v2/intents/abc" not in text
    assert "no-such-route-xyz-123" not in text


def _is_json_object_line(line):
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_logs_are_json_lines_with_request_ids_and_no_secrets(server):
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    secret = {"Authorization": "Bearer secret-token-abc"}
    server.get("/healthz", headers={"X-Request-Id": "log-health-1", **secret})
    r = server.post("/api/register", {"wallet": new_wallet()},
                    headers={"X-Request-Id": "log-register-1", "traceparent": tp, **secret})
    assert r.status == 201, r
    server.post("/api/register", {"wallet": "alice@example.com"},
                headers={"X-Request-Id": "log-bad-1", **secret})
    server.get("/api/v2/intents/x", headers={"X-Request-Id": "log-v2-1", **secret})

    for rid in ("log-health-1", "log-register-1", "log-bad-1", "log-v2-1"):
        server.wait_for_log(lambda rec, rid=rid: rec.get("request_id") == rid,
                            what=f"a log line with request_id {rid}")
    reg = server.wait_for_log(lambda rec: rec.get("request_id") == "log-register-1")
    assert reg.get("trace_id") == "0af7651916cd43dd8448eb211c80319c", reg

    assert server.stop() == 0
    lines = server.log_lines()
    assert lines, "nothing logged on stdout"
    for ln in lines:
        assert _is_json_object_line(ln), f"stdout line is not a JSON object: {ln[:300]!r}"
        rec = json.loads(ln)
        for field in ("ts", "level", "msg"):
            assert isinstance(rec.get(field), str) and rec[field], f"{field} missing: {rec}"
        # a line about one of our requests carries its id as request_id
        for rid in ("log-health-1", "log-register-1", "log-bad-1", "log-v2-1"):
            if rid in ln.decode() and rec.get("request_id") != rid:
                pytest.fail(f"line mentions {rid} but its request_id is {rec.get('request_id')!r}: {rec}")

    everything = server.stdout() + server.stderr()
    assert b"secret-token-abc" not in everything, "the Authorization header was logged"
    assert b"alice@example.com" not in everything, "an e-mail address was logged unredacted"


def test_unknown_methods_share_one_metric_label(server):
    """A made-up method is counted as _OTHER (OpenTelemetry's convention),
    so random methods cannot grow /metrics: 60 of them add no series."""
    server.get("/healthz")
    before = len(server.metrics())
    methods = [f"X{i:02d}{'Q' * 40}" for i in range(60)]
    for m in methods:
        r = server.raw(f"{m} /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),
                       method="GET")
        assert r.status in (400, 404, 405), r
        r = server.raw(f"{m} /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),
                       method="GET")
        assert r.status in (400, 404, 405), r
    text = server.metrics()
    for m in methods:
        assert m not in text
    assert 'method="_OTHER"' in text
    # Two new label sets (405 on /healthz, 404 unmatched) in two families,
    # not 120: far below one series per method.
    assert len(text) - before < 8000, len(text) - before
    for line in text.splitlines():
        if line.startswith("http_requests_total{"):
            assert re.search(r'method="(GET|HEAD|POST|PUT|DELETE|CONNECT|OPTIONS|TRACE|PATCH|_OTHER)"',
                             line), line


def test_pii_in_paths_and_queries_never_reaches_logs(server):
    """Phone numbers and e-mail addresses in a path or a query string are
    masked in the request's log line, percent-encoded or not, while ids,
    wallets and amounts stay readable (src/log_redact.c, log_redact_target)."""
    srv = server
    wallet = "0x" + "ab" * 20
    targets = {
        "pii-1": "/x/+306912345678",
        "pii-2": "/u/alice%40example.com/orders",
        "pii-3": "/lookup/020%207946%200958?email=bob%40example.org&phone=%2B447946095812",
        "pii-4": "/api/v2/accounts/+306912345678",
        "keep-1": f"/api/v2/accounts/{wallet}?after=1234567890&limit=100",
    }
    for rid, path in targets.items():
        r = srv.get(path, headers={"X-Request-Id": rid, "Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert r.status < 500, r
    for rid in targets:
        srv.wait_for_log(lambda rec, rid=rid: rec.get("request_id") == rid and "path" in rec,
                         what=f"the request line of {rid}")
    recs = {rec["request_id"]: rec for rec in srv.log_records()
            if isinstance(rec, dict) and "path" in rec and rec.get("request_id") in targets}
    assert recs["pii-1"]["path"] == "/x/[phone]", recs["pii-1"]
    assert recs["pii-2"]["path"] == "/u/[email]/orders", recs["pii-2"]
    assert recs["pii-3"]["path"] == "/lookup/[phone]", recs["pii-3"]
    assert recs["pii-4"]["path"] == "/api/v2/accounts/[phone]", recs["pii-4"]
    assert recs["keep-1"]["path"] == f"/api/v2/accounts/{wallet}", recs["keep-1"]
    assert srv.stop() == 0
    everything = srv.stdout() + srv.stderr()
    for leak in (b"306912345678", b"alice", b"7946", b"bob", b"447946095812"):
        assert leak not in everything, f"{leak!r} reached the logs"


def test_keepalive_requests_are_counted_under_their_own_labels(server):
    """A connection's requests reuse the series of the one before when the
    labels match (http.c): each still lands under its own route and status."""
    def count(route, status):
        _, samples = _metrics_samples(server)
        hits = find_samples(samples, "http_requests_total", route=route, method="GET", status=status)
        return sum(float(s[2]) for s in hits)

    before = {k: count(*k) for k in [("/healthz", "200"), ("/health/live", "200"),
                                      ("/healthz", "429")]}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        for path in ["/healthz", "/healthz", "/health/live", "/healthz", "/health/live", "/healthz"]:
            assert _send(conn, "GET", path, None, {}).status == 200
    finally:
        conn.close()
    want = {("/healthz", "200"): 4, ("/health/live", "200"): 2, ("/healthz", "429"): 0}

    def counted():
        got = {k: count(*k) - before[k] for k in want}
        return got if got == want else None

    wait_until(counted, what="the keep-alive requests counted: %r" % want)
