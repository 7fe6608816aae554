"""SPEC section 3: HTTP conventions. Every error answer is checked for its
status, its error code, the error body shape, the common headers, and that
nothing was written to the store."""

import http.client
import json

import pytest

from conftest import (
    ADMIN_TOKEN,
    TRACEPARENT_RE,
    RawConnection,
    assert_common_headers,
    assert_error,
    bearer,
    _send,
    build_request,
    new_wallet,
    param_id,
)

JSON = {"Content-Type": "application/json"}


# ---- routing ------------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("GET", "/nope"),
    ("GET", "/api/registerx"),
    ("GET", "/healthz/"),            # trailing slash is another path
    ("GET", "/api/v2/intents"),      # template needs its {id} segment
    ("GET", "//healthz"),
])
def test_unknown_route_get_is_404(server, method, path):
    with server.unchanged():
        assert_error(server.request(method, path), 404, "not_found")


def test_unknown_route_post_is_404_and_writes_nothing(server):
    with server.unchanged():
        r = server.post("/api/nope", {"wallet": new_wallet()})
        assert_error(r, 404, "not_found")


@pytest.mark.parametrize("method,path,allowed", [
    ("GET", "/api/register", "POST"),
    ("PUT", "/api/register", "POST"),
    ("DELETE", "/api/register", "POST"),
    ("POST", "/healthz", "GET"),
    ("DELETE", "/metrics", "GET"),
])
def test_wrong_method_is_405_with_allow(server, method, path, allowed):
    body = b'{"wallet": "%s"}' % new_wallet().encode() if method in ("POST", "PUT") else None
    with server.unchanged():
        r = server.request(method, path, body=body, headers=JSON if body else None)
        assert_error(r, 405, "method_not_allowed")
    allow = [m.strip().upper() for m in (r.headers.get("Allow") or "").split(",")]
    assert allowed in allow, f"Allow: {r.headers.get('Allow')!r}"
    assert method not in allow


# ---- body: JSON, media type, size ---------------------------------------

@pytest.mark.parametrize("body,line", [
    (b'{"wallet": }', 1),
    (b'{"wallet": "0x00', 1),
    (b"{'wallet': 1}", 1),
    (b'{"wallet": "0x0000000000000000000000000000000000000000",}', 1),
    (b'{\n  "wallet": "x",\n  "referrer": oops\n}', 3),
    (b'{"wallet": "\xff\xfe"}', 1),          # invalid UTF-8
])
def test_malformed_json_is_400_with_line_and_column(server, body, line):
    with server.unchanged():
        r = server.post("/api/register", body=body, headers=JSON)
        err = assert_error(r, 400, "invalid_json")
    assert isinstance(err.get("line"), int) and not isinstance(err.get("line"), bool), err
    assert isinstance(err.get("column"), int) and not isinstance(err.get("column"), bool), err
    assert err["line"] == line, err
    assert err["column"] >= 0, err


def test_empty_json_body_is_400(server):
    with server.unchanged():
        r = server.post("/api/register", body=b"", headers=JSON)
        assert_error(r, 400, {"invalid_json", "invalid_body"})


@pytest.mark.parametrize("body", [b"[1, 2]", b'"0x00"', b"42", b"null", b"true"])
def test_json_top_level_not_an_object_is_400(server, body):
    with server.unchanged():
        r = server.post("/api/register", body=body, headers=JSON)
        assert_error(r, 400, {"invalid_json", "invalid_body"})


@pytest.mark.parametrize("ctype", [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    None,                     # a body without any Content-Type
])
def test_non_json_content_type_is_415(server, ctype):
    body = b'{"wallet": "%s"}' % new_wallet().encode()
    with server.unchanged():
        r = server.post("/api/register", body=body, headers={"Content-Type": ctype})
        assert_error(r, 415, "unsupported_media_type")


def test_json_content_type_with_charset_is_accepted(server):
    body = b'{"wallet": "%s"}' % new_wallet().encode()
    r = server.post("/api/register", body=body,
                    headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status == 201, r


@pytest.fixture
def small_server(start_server):
    return start_server(env={"SETTLED_MAX_BODY": "1024"})


def padded_body(size):
    """A valid register body of exactly size bytes (JSON whitespace pad)."""
    body = b'{"wallet": "%s"}' % new_wallet().encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def test_body_at_limit_is_accepted(small_server):
    r = small_server.post("/api/register", body=padded_body(1024), headers=JSON)
    assert r.status == 201, r


def test_body_over_limit_with_content_length_is_413(small_server):
    with small_server.unchanged():
        r = small_server.post("/api/register", body=padded_body(1025), headers=JSON)
        assert_error(r, 413, "payload_too_large")
        r = small_server.post("/api/register", body=padded_body(64 * 1024), headers=JSON)
        assert_error(r, 413, "payload_too_large")


def test_body_over_limit_is_refused_before_it_is_read(small_server):
    """Content-Length announces 10 MB; only the headers and a little body are
    sent. The 413 must come without the server waiting for the rest."""
    head = build_request("POST", "/api/register", headers={
        "Content-Type": "application/json", "Content-Length": str(10 * 1024 * 1024)})
    with small_server.unchanged():
        with small_server.connect_raw(timeout=10) as c:
            c.send(head + b'{"wallet": "')
            r = c.read_response()
        assert_error(r, 413, "payload_too_large")


def _send_chunked(conn, total, chunk=256):
    """Streams a chunked JSON body of about total bytes, stopping early once
    the server has answered (it may close without reading the rest)."""
    head = build_request("POST", "/api/register", headers={
        "Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    conn.send(head)
    # padded with whitespace: a "pad" member would be 400 unknown_field
    payload = b'{"wallet": "%s"' % new_wallet().encode()
    payload += b" " * max(0, total - len(payload) - 1) + b"}"
    for i in range(0, len(payload), chunk):
        part = payload[i:i + chunk]
        if not conn.send(b"%x\r\n%s\r\n" % (len(part), part), ignore_reset=True):
            return
        if conn.readable(0.01):
            return
    conn.send(b"0\r\n\r\n", ignore_reset=True)


def test_chunked_body_over_limit_is_413(small_server):
    with small_server.unchanged():
        with small_server.connect_raw(timeout=10) as c:
            _send_chunked(c, 64 * 1024)
            r = c.read_response()
        assert_error(r, 413, "payload_too_large")


def test_chunked_body_under_limit_is_accepted(small_server):
    with small_server.connect_raw(timeout=10) as c:
        _send_chunked(c, 200, chunk=50)
        r = c.read_response()
    assert r.status == 201, r


# ---- request ids and tracing --------------------------------------------

@pytest.mark.parametrize("rid", ["abc-123", "A.b_c-9", "x", "r" * 128], ids=param_id)
def test_valid_request_id_is_echoed(server, rid):
    r = server.get("/healthz", headers={"X-Request-Id": rid})
    assert r.status == 200
    assert r.headers["X-Request-Id"] == rid
    r = server.post("/api/register", {"wallet": "bad"}, headers={"X-Request-Id": rid})
    assert_error(r, 400, "invalid_wallet")
    assert r.headers["X-Request-Id"] == rid


@pytest.mark.parametrize("rid", [
    "r" * 129, "has space", "a/b", "semi;colon", "quote\"d", b"caf\xc3\xa9", "",
], ids=param_id)
def test_invalid_request_id_is_replaced(server, rid):
    r = server.get("/healthz", headers={"X-Request-Id": rid})
    assert r.status == 200
    got = r.headers["X-Request-Id"]      # format checked by assert_common_headers
    sent = rid.decode("latin-1") if isinstance(rid, bytes) else rid
    assert got != sent


def test_generated_request_ids_differ(server):
    ids = {server.get("/healthz").headers["X-Request-Id"] for _ in range(5)}
    assert len(ids) == 5


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
VALID_TP = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def test_valid_traceparent_is_propagated(server):
    r = server.get("/healthz", headers={"traceparent": VALID_TP})
    assert r.status == 200
    tp = r.headers.get("traceparent")
    assert tp, "no traceparent on the response"
    m = TRACEPARENT_RE.match(tp)
    assert m, tp
    assert m.group(2) == TRACE_ID


@pytest.mark.parametrize("tp", [
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   # zero trace id
    f"00-{TRACE_ID}-0000000000000000-01",                        # zero parent id
    f"ff-{TRACE_ID}-00f067aa0ba902b7-01",                        # version ff
    f"00-{TRACE_ID[:-1]}-00f067aa0ba902b7-01",                   # short trace id
    f"00-{TRACE_ID.upper()}-00F067AA0BA902B7-01",                # upper-case hex
    f"00-{TRACE_ID}-00f067aa0ba902b7",                           # no flags
    "garbage",
])
def test_invalid_traceparent_is_ignored(server, tp):
    r = server.get("/healthz", headers={"traceparent": tp})
    assert r.status == 200
    got = r.headers.get("traceparent")
    assert got, "no traceparent on the response"
    m = TRACEPARENT_RE.match(got)
    assert m, got
    assert m.group(2) != TRACE_ID and m.group(2) != "0" * 32, got


# ---- security headers ----------------------------------------------------

def test_security_headers_on_every_kind_of_answer(server):
    answers = [
        server.get("/healthz"),
        server.get("/nope"),
        server.request("DELETE", "/healthz"),
        server.post("/api/register", body=b"{", headers=JSON),
        server.post("/api/register", {"wallet": new_wallet()}),
    ]
    for r in answers:
        assert_common_headers(r)
    # and on an answer the server writes for a request it cannot parse as ours
    r = server.raw(build_request("POST", "/api/register", b"[]", JSON))
    assert_common_headers(r)


# ---- CORS ----------------------------------------------------------------

ORIGIN = "https://app.example"


@pytest.fixture
def cors_server(start_server):
    return start_server(env={"SETTLED_CORS_ORIGINS": ORIGIN})


def _preflight(srv, origin):
    return srv.request("OPTIONS", "/api/register", headers={
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, idempotency-key",
    })


def _tokens(value):
    return {t.strip().lower() for t in (value or "").split(",") if t.strip()}


def test_cors_preflight_from_allowed_origin(cors_server):
    with cors_server.unchanged():
        r = _preflight(cors_server, ORIGIN)
    assert r.status == 204, r
    assert r.headers.get("Access-Control-Allow-Origin") == ORIGIN
    assert r.headers.get("Access-Control-Max-Age") == "86400"
    assert "post" in _tokens(r.headers.get("Access-Control-Allow-Methods"))
    allowed = _tokens(r.headers.get("Access-Control-Allow-Headers"))
    assert {"content-type", "idempotency-key"} <= allowed, allowed
    assert r.body == b""


def test_cors_actual_request_from_allowed_origin(cors_server):
    r = cors_server.get("/healthz", headers={"Origin": ORIGIN})
    assert r.status == 200
    assert r.headers.get("Access-Control-Allow-Origin") == ORIGIN
    assert "origin" in _tokens(r.headers.get("Vary"))


@pytest.mark.parametrize("origin", [
    "https://evil.example", "https://app.example.evil", "http://app.example", "null",
])
def test_cors_other_origin_gets_no_cors_headers(cors_server, origin):
    with cors_server.unchanged():
        r = _preflight(cors_server, origin)
    assert r.status < 500, r
    for name in ("Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
                 "Access-Control-Allow-Headers", "Access-Control-Allow-Credentials"):
        assert r.headers.get(name) is None, f"{name} sent to {origin}"
    r = cors_server.get("/healthz", headers={"Origin": origin})
    assert r.status == 200
    assert r.headers.get("Access-Control-Allow-Origin") is None


def test_cors_vary_origin_on_every_answer_of_a_listed_server(cors_server):
    """With a list of origins the answer depends on Origin, also when the
    request has none or an unlisted one: a cache must not hand the answer
    without Access-Control-Allow-Origin to the listed origin (or back)."""
    for headers in ({}, {"Origin": "https://evil.example"}, {"Origin": ORIGIN}):
        r = cors_server.get("/healthz", headers=headers)
        assert r.status == 200, r
        assert "origin" in _tokens(r.headers.get("Vary")), (headers, r)
    r = cors_server.get("/nope", headers={"Origin": ORIGIN})
    assert r.status == 404 and "origin" in _tokens(r.headers.get("Vary")), r
    r = _preflight(cors_server, "https://evil.example")
    assert "origin" in _tokens(r.headers.get("Vary")), r


@pytest.fixture
def wildcard_server(start_server):
    return start_server(env={"SETTLED_CORS_ORIGINS": "*"})


@pytest.mark.parametrize("origin", [ORIGIN, "https://other.example", "null", None])
def test_cors_wildcard_allows_every_origin_without_credentials(wildcard_server, origin):
    headers = {"Origin": origin} if origin else {}
    r = wildcard_server.get("/healthz", headers=headers)
    assert r.status == 200, r
    assert r.headers.get("Access-Control-Allow-Origin") == "*", r
    assert r.headers.get("Access-Control-Allow-Credentials") is None, r
    # "*" is the same answer for every origin: nothing to vary on.
    assert "origin" not in _tokens(r.headers.get("Vary")), r
    assert "x-request-id" in _tokens(r.headers.get("Access-Control-Expose-Headers"))
    if origin:
        with wildcard_server.unchanged():
            r = _preflight(wildcard_server, origin)
        assert r.status == 204, r
        assert r.headers.get("Access-Control-Allow-Origin") == "*", r
        assert r.headers.get("Access-Control-Allow-Credentials") is None, r
        assert r.headers.get("Access-Control-Max-Age") == "86400"
        assert "post" in _tokens(r.headers.get("Access-Control-Allow-Methods"))
        assert "origin" not in _tokens(r.headers.get("Vary")), r


def test_cors_wildcard_among_origins_wins(start_server):
    srv = start_server(env={"SETTLED_CORS_ORIGINS": f"{ORIGIN},*"})
    r = srv.get("/healthz", headers={"Origin": "https://other.example"})
    assert r.headers.get("Access-Control-Allow-Origin") == "*", r


def test_cors_off_by_default(server):
    r = _preflight(server, ORIGIN)
    assert r.status < 500, r
    assert r.headers.get("Access-Control-Allow-Origin") is None
    r = server.get("/healthz", headers={"Origin": ORIGIN})
    assert r.headers.get("Access-Control-Allow-Origin") is None
    assert "origin" not in _tokens(r.headers.get("Vary")), r


# ---- keep-alive: answers on one connection -------------------------------
# A connection's answers with the same small body and headers reuse one
# libmicrohttpd response (response.c): each must still carry its own
# request id, trace context and rate-limit counts, and nothing of the
# answers before it.

PER_REQUEST = {"x-request-id", "traceparent", "ratelimit", "x-ratelimit-remaining",
               "x-ratelimit-reset", "date"}


def _keepalive(srv):
    return http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)


def _fixed_headers(r):
    return sorted((k.lower(), v) for k, v in r.headers.items() if k.lower() not in PER_REQUEST)


def test_keepalive_answers_carry_their_own_ids_trace_and_counts(start_server):
    srv = start_server(env={"RL_HEALTH_PER_MIN": "600"})
    fresh = srv.get("/healthz")
    conn = _keepalive(srv)
    seen_ids, seen_traces, remaining = set(), set(), []
    try:
        for i in range(6):
            hdrs = {"X-Request-Id": f"ka-{i}"} if i % 2 == 0 else {}
            if i == 2:
                hdrs["traceparent"] = VALID_TP
            r = _send(conn, "GET", "/healthz", None, hdrs)
            assert r.status == 200 and r.json == {"status": "ok"}, r
            assert_common_headers(r)
            assert _fixed_headers(r) == _fixed_headers(fresh), r
            assert len(r.headers.get_all("X-Request-Id")) == 1, r
            assert len(r.headers.get_all("traceparent")) == 1, r
            rid = r.headers["X-Request-Id"]
            if i % 2 == 0:
                assert rid == f"ka-{i}", r
            assert rid not in seen_ids, r
            seen_ids.add(rid)
            m = TRACEPARENT_RE.match(r.headers["traceparent"])
            assert m, r
            if i == 2:
                assert m.group(2) == TRACE_ID, r
            else:
                assert m.group(2) != TRACE_ID and m.group(2) not in seen_traces, r
            seen_traces.add(m.group(2))
            remaining.append(int(r.headers["X-RateLimit-Remaining"]))
            assert f"remaining={remaining[-1]}," in r.headers["RateLimit"], r
        assert remaining == sorted(remaining, reverse=True) and remaining[0] > remaining[-1], remaining
    finally:
        conn.close()


def test_keepalive_counts_that_change_length_are_replaced(start_server):
    """A kept answer's header values that change are replaced (response.c
    cache_reuse): remaining 11 -> 10 -> 9 changes length twice, ids and
    trace contexts change in place, and each answer carries its own
    values, once."""
    srv = start_server(env={"RL_HEALTH_PER_MIN": "12"})
    conn = _keepalive(srv)
    try:
        for i in range(6):
            r = _send(conn, "GET", "/healthz", None, {"X-Request-Id": "len-%d" % i} if i == 3 else {})
            assert r.status == 200 and r.json == {"status": "ok"}, r
            for name in PER_REQUEST - {"date"}:
                assert len(r.headers.get_all(name)) == 1, (name, r)
            assert r.headers["X-RateLimit-Remaining"] == str(11 - i), r
            assert r.headers["RateLimit"].startswith("limit=12, remaining=%d, reset=" % (11 - i)), r
            if i == 3:
                assert r.headers["X-Request-Id"] == "len-3", r
    finally:
        conn.close()


def test_keepalive_other_answers_in_between_keep_their_own_headers(start_server):
    srv = start_server(env={"RL_HEALTH_PER_MIN": "6"})
    conn = _keepalive(srv)
    try:
        # the same headers, another body: each answer its own
        for path in ["/healthz", "/health/ready", "/health/live"]:
            r = _send(conn, "GET", path, None, {})
            assert r.status == 200, r
            assert r.json["status"] == ("ready" if path == "/health/ready" else "ok"), r
        for i in range(3):
            r = _send(conn, "GET", "/healthz", None, {"X-Request-Id": f"a-{i}"})
            assert r.status == 200 and r.headers["X-Request-Id"] == f"a-{i}", r
            assert r.headers["X-RateLimit-Remaining"] == str(2 - i), r
            assert r.headers.get("Retry-After") is None, r
        r = _send(conn, "GET", "/healthz", None, {"X-Request-Id": "limited"})
        assert_error(r, 429, "rate_limited")
        assert r.headers["X-Request-Id"] == "limited" and r.headers.get("Retry-After"), r
        r = _send(conn, "GET", "/api/docs/openapi.json", None, {"X-Request-Id": "other"})
        assert r.headers["X-Request-Id"] == "other", r
        assert r.headers.get("Retry-After") is None and r.headers.get("RateLimit") is None, r
        assert_common_headers(r)
    finally:
        conn.close()


def test_keepalive_registrations_carry_their_own_body_location_and_key_result(server):
    """Answers of the same length on one connection reuse one response whose
    body is written over (response.c cache_reuse): each 201 must still be
    its own registration, with its own Location and X-Idempotency, and a
    replay, an unkeyed 201 and a 409 in between must be their own too."""
    conn = _keepalive(server)
    ids, bodies = [], []

    def register(wallet, key=None):
        hdrs = dict(JSON)
        if key:
            hdrs["Idempotency-Key"] = key
        return _send(conn, "POST", "/api/register", '{"wallet":"%s"}' % wallet, hdrs)

    def check_201(r, wallet, idem):
        assert r.status == 201, r
        assert r.json["wallet"] == wallet and r.json["id"] not in ids, r
        assert r.headers["Location"] == "/api/v2/accounts/" + wallet, r
        assert len(r.headers.get_all("Location")) == 1, r
        assert r.headers.get("X-Idempotency") == idem, r
        assert r.headers.get("Idempotent-Replayed") is None, r
        assert_common_headers(r)
        ids.append(r.json["id"])
        bodies.append(r.body)

    try:
        wallets = [new_wallet() for _ in range(6)]
        first_key = "ka-reg-" + wallets[0]
        for i, w in enumerate(wallets[:3]):
            check_201(register(w, "ka-reg-" + w), w, "MISS")
        # the same length each time: the reused answer's body was written over
        assert len({len(b) for b in bodies}) == 1 and len(set(bodies)) == 3, bodies
        r = register(wallets[0], first_key)
        assert r.status == 201 and r.body == bodies[0], r
        assert r.headers["X-Idempotency"] == "HIT" and r.headers["Idempotent-Replayed"] == "true", r
        assert r.headers["Location"] == "/api/v2/accounts/" + wallets[0], r
        for w in wallets[3:5]:
            check_201(register(w), w, None)
        r = register(wallets[1])
        assert_error(r, 409, "already_registered")
        assert r.headers.get("Location") is None and r.headers.get("X-Idempotency") is None, r
        check_201(register(wallets[5], "ka-reg-" + wallets[5]), wallets[5], "MISS")
    finally:
        conn.close()
    for w, i in zip(wallets, ids):
        r = server.get("/api/v2/accounts/" + w, headers=bearer(ADMIN_TOKEN))
        assert r.status == 200 and r.json["id"] == i, r


def test_pipelined_answers_on_one_connection_are_each_their_own(server):
    """Requests sent at once on one connection (HTTP/1.1 pipelining): the
    kept answer's body and header values are written over in place for the
    next answer (response.c cache_reuse), which is right only if
    libmicrohttpd has sent an answer in full before it hands us the next
    request. Each answer must be its own request's, byte for byte: keyed,
    replayed, unkeyed and refused registrations (bodies of one length),
    HEAD and GET probes in between, request ids of changing lengths."""
    kinds = ("keyed", "unkeyed", "replay", "dup", "get", "keyed", "head", "unkeyed")
    keyed, n = [], 0
    with RawConnection(server.port) as c:
        for _ in range(4):
            sent, data = [], b""
            for kind in kinds * 3:
                n += 1
                rid = "pl-%d%s" % (n, "x" * (n % 7))
                hdrs = {"X-Request-Id": rid}
                if kind in ("get", "head"):
                    method = kind.upper()
                    data += build_request(method, "/healthz", headers=hdrs)
                    sent.append((kind, rid, method, None, None))
                    continue
                if kind == "replay" and keyed:
                    key, wallet, _ = keyed[n % len(keyed)]
                elif kind == "dup" and keyed:
                    key, wallet = None, keyed[n % len(keyed)][1]
                else:
                    kind = "keyed" if kind in ("replay", "dup") else kind
                    wallet = new_wallet()
                    key = "pl-" + wallet if kind == "keyed" else None
                hdrs["Content-Type"] = "application/json"
                if key:
                    hdrs["Idempotency-Key"] = key
                data += build_request("POST", "/api/register",
                                      json.dumps({"wallet": wallet}).encode(), hdrs)
                sent.append((kind, rid, "POST", key, wallet))
            c.send(data)   # every request of the round in one send
            for kind, rid, method, key, wallet in sent:
                r = c.read_response(method=method)
                assert r.headers["X-Request-Id"] == rid, (kind, rid, r)
                if kind in ("get", "head"):
                    assert r.status == 200 and r.body == (b"" if kind == "head" else b'{"status":"ok"}'), r
                    assert r.headers.get("Location") is None, r
                    continue
                if kind == "dup":
                    assert_error(r, 409, "already_registered")
                    assert r.headers.get("Location") is None, r
                    assert r.headers.get("X-Idempotency") is None, r
                    continue
                assert r.status == 201 and r.json["wallet"] == wallet, (kind, wallet, r)
                assert r.headers["Location"] == "/api/v2/accounts/" + wallet, r
                assert r.headers.get("X-Idempotency") == {"keyed": "MISS", "replay": "HIT"}.get(kind), r
                assert r.headers.get("Idempotent-Replayed") == ("true" if kind == "replay" else None), r
                if kind == "keyed":
                    keyed.append((key, wallet, r.body))
                if kind == "replay":
                    assert r.body == next(b for k, _, b in keyed if k == key), r


def test_keepalive_cors_answers_follow_each_origin(cors_server, wildcard_server):
    conn = _keepalive(cors_server)
    try:
        for origin in [ORIGIN, None, ORIGIN, "https://evil.example", ORIGIN]:
            r = _send(conn, "GET", "/healthz", None, {"Origin": origin} if origin else {})
            assert r.status == 200, r
            assert r.headers.get("Access-Control-Allow-Origin") == (ORIGIN if origin == ORIGIN else None), r
            assert "origin" in _tokens(r.headers.get("Vary")), r
    finally:
        conn.close()
    conn = _keepalive(wildcard_server)
    try:
        for i in range(3):
            r = _send(conn, "GET", "/healthz", None, {"Origin": f"https://o{i}.example"})
            assert r.status == 200 and r.headers.get("Access-Control-Allow-Origin") == "*", r
            assert len(r.headers.get_all("Access-Control-Allow-Origin")) == 1, r
    finally:
        conn.close()
