"""Header-section framing over raw sockets: what libmicrohttpd 0.9.75's
parser hides from settled (docs/internals/http-framing.md).

Each refused request gets exactly one answer: 400 invalid_header, settled's
JSON body and security headers, Connection: close, and nothing after it on
the connection. A smuggled request hidden behind the refused one never runs
(nothing written, no second answer carrying its X-Request-Id).
"""

import select
import time

import pytest

from conftest import (
    ADMIN_TOKEN,
    assert_common_headers,
    assert_error,
    build_request,
    new_wallet,
    param_id,
)

JSON = {"Content-Type": "application/json"}


def read_to_eof(conn, timeout=15.0):
    """Everything the server sends until it closes the connection. The
    guard is half the default 30 s idle timeout (which would close it
    anyway): a server a loaded machine stopped for seconds still passes."""
    deadline = time.monotonic() + timeout
    data = conn.buf
    conn.buf = b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([conn.sock], [], [], deadline - time.monotonic())
        if not r:
            break
        try:
            chunk = conn.sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"connection still open after {timeout} s: {data[:200]!r}")


def register_body(wallet=None):
    return b'{"wallet": "%s"}' % (wallet or new_wallet()).encode()


def smuggled(rid="smuggled-1"):
    """A whole request that writes (a registration), to hide in a body."""
    return build_request("POST", "/api/register", register_body(),
                         {**JSON, "X-Request-Id": rid})


def head(lines, method="POST", path="/api/register", version="HTTP/1.1"):
    return ("\r\n".join([f"{method} {path} {version}", *lines]) + "\r\n\r\n").encode("latin-1")


def _cases():
    inner = smuggled()
    n = len(inner)
    clean = ["Host: 127.0.0.1", "Content-Type: application/json"]
    return {
        # The finding: the fold makes Content-Length vanish, the body is
        # read as the next request.
        "cl-folded-sp": head([*clean, "Content-Length:", f" {n}"]) + inner,
        "cl-folded-tab": head([*clean, "Content-Length:", f"\t{n}"]) + inner,
        "cl-value-folded": head([*clean, "Content-Length: 1", f" {n}"]) + inner,
        "te-folded": head([*clean, "Transfer-Encoding:", " chunked"]) + b"0\r\n\r\n" + inner,
        "other-folded": head([*clean, "X-Note: a", " b", f"Content-Length: {n}"]) + inner,
        "folded-twice": head([*clean, "X-Note: a", " b", "\tc", f"Content-Length: {n}"]) + inner,
        "fold-after-host": head(["Host: 127.0.0.1", " evil.example", *clean[1:],
                                 f"Content-Length: {n}"]) + inner,
        # NUL and CR inside lines, LF without CR.
        "nul-in-value": head([*clean, "X-Note: a\x00b", f"Content-Length: {n}"]) + inner,
        "nul-ends-value": head([*clean, "X-Note: ab\x00", f"Content-Length: {n}"]) + inner,
        "nul-hides-cl": head([*clean, f"X-Note: a\x00Content-Length: {n}"]) + inner,
        "nul-last-line": head([*clean, f"Content-Length: {n}", "X-Note: a\x00b"]) + inner,
        "bare-cr-in-value": head([*clean, "X-Note: a\rb", f"Content-Length: {n}"]) + inner,
        "bare-cr-hides-cl": head([*clean, f"X-Note: a\rContent-Length: {n}"]) + inner,
        "bare-cr-at-end": head([*clean, "X-Note: a\r", f"Content-Length: {n}"]) + inner,
        "bare-lf-line": (head(clean)[:-4] + f"\r\nX-Note: a\nContent-Length: {n}\r\n\r\n"
                         .encode()) + inner,
        "bare-lf-request-line": (f"POST /api/register HTTP/1.1\nHost: 127.0.0.1\r\n"
                                 f"Content-Type: application/json\r\nContent-Length: {n}\r\n\r\n"
                                 .encode()) + inner,
        "bare-lf-end": (head([*clean, f"Content-Length: {n}"])[:-4] + b"\n\n") + inner,
        # Two credentials, two hosts, none.
        "two-authorization": head([*clean, f"Authorization: Bearer {ADMIN_TOKEN}",
                                   "Authorization: Bearer other", f"Content-Length: {n}"]) + inner,
        "two-host": head([*clean, "Host: evil.example", f"Content-Length: {n}"]) + inner,
        "no-host": head(["Content-Type: application/json", f"Content-Length: {n}"]) + inner,
    }


CASES = list(_cases())


@pytest.mark.parametrize("case", CASES)
def test_hidden_framing_is_refused_once_and_runs_nothing(server, case):
    data = _cases()[case]
    with server.unchanged():
        with server.connect_raw() as c:
            c.send(data, ignore_reset=True)
            r = c.read_response()
            assert_error(r, 400, "invalid_header")
            assert (r.headers.get("Connection") or "").lower() == "close", r
            assert r.headers.get("X-Request-Id") != "smuggled-1", r
            rest = read_to_eof(c)
            assert b"HTTP/1." not in rest, rest
    assert server.get("/healthz").status == 200


@pytest.mark.parametrize("line", [
    b"X-Note: a\x00b", b"X-Note: a\rb", b"X-Note: a\r\n b", b"X-A: 1\r\nAuthorization: x\r\nAuthorization: y",
], ids=param_id)
def test_hidden_framing_on_get_is_refused(server, line):
    data = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + line + b"\r\n\r\n"
    r = server.raw(data, method="GET")
    assert_error(r, 400, "invalid_header")
    assert (r.headers.get("Connection") or "").lower() == "close", r


@pytest.mark.parametrize("line", [
    b"GET /healthz\x00/../api/admin/dlq HTTP/1.1",   # the path is cut at the NUL
    b"GET /api/v2/accounts/treasury\x00x HTTP/1.1",
    b"GET /healthz?a=1\x00b HTTP/1.1",
    b"GET /healthz?\x00a=1 HTTP/1.1",
    b"GET\x00X /healthz HTTP/1.1",                   # the method is cut at the NUL
    b"GET  /healthz HTTP/1.1",                       # two spaces
], ids=param_id)
def test_nul_or_odd_spacing_in_the_request_line_is_400(server, line):
    r = server.raw(line + b"\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + ADMIN_TOKEN.encode()
                   + b"\r\n\r\n", method="GET")
    assert_error(r, 400, "invalid_header")
    assert (r.headers.get("Connection") or "").lower() == "close", r


@pytest.mark.parametrize("target", ["/healthz?", "/healthz?a=1&b&c=&=d&&", "/healthz?a=1=2+3&x=%41"])
def test_odd_but_clean_queries_are_accepted(server, target):
    r = server.raw(head(["Host: 127.0.0.1"], method="GET", path=target), method="GET")
    assert r.status == 200, r


def test_http10_without_host_is_accepted(server):
    r = server.raw(b"GET /healthz HTTP/1.0\r\n\r\n", method="GET")
    assert r.status == 200, r


@pytest.mark.parametrize("lines", [
    ["Host: 127.0.0.1"],
    ["Host: 127.0.0.1", "X-Empty:", "X-Blank:   ", "X-Tab:\tv", "X-Trail: v  "],
    ["Host: 127.0.0.1", "Cookie: a=b; c=d", "Accept: */*", "User-Agent: t/1"],
    ["Host: 127.0.0.1", *[f"X-H{i}: {'v' * (i % 7)}" for i in range(60)]],
    ["Host: 127.0.0.1", "X-Long: " + "x" * 3000],
    ["host: 127.0.0.1", "authorization: Bearer nothing"],
], ids=["host", "odd-blanks", "common", "many", "long", "lower-case"])
def test_clean_header_sections_are_accepted(server, lines):
    for path in ("/healthz", "/healthz?x=1&y=%41"):
        r = server.raw(head(lines, method="GET", path=path), method="GET")
        assert r.status == 200, r
        assert r.headers.get("Connection") is None, r


def test_keepalive_requests_after_a_clean_one_are_checked_too(server):
    """The second request on a connection gets the same checks."""
    with server.connect_raw() as c:
        c.send(head(["Host: 127.0.0.1"], method="GET", path="/healthz"))
        assert c.read_response(method="GET").status == 200
        c.send(head(["Host: 127.0.0.1", "X-Note: a", " b"], method="GET", path="/healthz"))
        r = c.read_response(method="GET")
        assert_error(r, 400, "invalid_header")
        assert b"HTTP/1." not in read_to_eof(c)


def test_smuggled_request_after_fold_never_answers(server):
    """The finding as reported: before, two answers came back, the second
    with the smuggled request's X-Request-Id."""
    inner = build_request("GET", "/healthz", headers={"X-Request-Id": "smuggled-2"})
    data = head(["Host: 127.0.0.1", "Content-Type: application/json", "Content-Length:",
                 f" {len(inner)}"]) + inner
    with server.connect_raw() as c:
        c.send(data, ignore_reset=True)
        r = c.read_response()
        assert_common_headers(r)
        assert r.status == 400, r
        rest = read_to_eof(c)
        assert b"smuggled-2" not in rest and b"HTTP/1." not in rest, rest


# ---- paths: routed as sent, parameters decoded after --------------------------------

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.mark.parametrize("path", ["/api/%61dmin/dlq", "/api/admin/%64lq", "/%61pi/admin/dlq",
                                  "/healthz%2F", "/api/admin%2Fdlq"])
def test_encoded_route_segments_never_reach_the_route(server, path):
    """A proxy's rule on /api/admin/ sees these as other paths: so does the
    router (404), or the path is refused (encoded '/': 400)."""
    with server.unchanged():
        r = server.get(path, headers=ADMIN)
    assert r.status in (400, 404), r
    assert r.error in ("not_found", "invalid_path"), r


@pytest.mark.parametrize("path", [
    "/api/v2/accounts/treasury%00", "/api/v2/accounts/%00treasury", "/api/v2/accounts/a%2Fb",
    "/api/v2/accounts/a%2fb", "/api/v2/accounts/treasury%0a", "/api/v2/accounts/treasury%7F",
    "/api/v2/accounts/%ff", "/api/v2/accounts/tr%zzeasury", "/api/v2/accounts/treasury%",
    "/api/v2/intents/int_%01",
])
def test_bad_escapes_and_control_characters_in_paths_are_400(server, path):
    with server.unchanged():
        r = server.get(path, headers=ADMIN)
    assert_error(r, 400, "invalid_path")


def test_raw_bytes_in_paths_are_400(server):
    for path in (b"/api/v2/accounts/tre\x01asury", b"/api/v2/accounts/caf\xc3\xa9",
                 b"/api/v2/accounts/a\x7f"):
        data = b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " \
            + ADMIN_TOKEN.encode() + b"\r\n\r\n"
        r = server.raw(data, method="GET")
        assert_error(r, 400, "invalid_path")


def test_parameters_are_decoded_after_matching(server):
    r = server.get("/api/v2/accounts/tre%61sury", headers=ADMIN)
    assert r.status == 200, r
    assert r.json["id"] == "treasury", r.json


@pytest.mark.parametrize("query", ["account=%00", "account=a%0Db", "limit=%ff", "after=%zz",
                                   "%00=1"])
def test_bad_query_arguments_are_400(server, query):
    with server.unchanged():
        r = server.get(f"/api/v2/ledger/transactions?{query}", headers=ADMIN)
    assert_error(r, 400, "invalid_query")


def test_query_arguments_are_decoded(server):
    r = server.get("/api/v2/ledger/transactions?account=tre%61sury&lim%69t=1", headers=ADMIN)
    assert r.status == 200, r
    assert len(r.json["data"]) == 1 and r.json["data"][0]["account"] == "treasury", r.json
    # names compare without case, as before
    r = server.get("/api/v2/ledger/transactions?account=treasury&LIMIT=1", headers=ADMIN)
    assert r.status == 200 and len(r.json["data"]) == 1, r


def test_idempotency_scope_is_the_decoded_path(server):
    """/x/id and /x/%69d are the same resource: a retry through either
    spelling replays the first answer instead of running again."""
    created = server.post("/api/admin/api-keys", {"name": "enc"}, headers=ADMIN,
                          key=f"k-{time.monotonic_ns()}")
    assert created.status == 201, created
    key_id = created.json["id"]
    idem = f"rot-{time.monotonic_ns()}"
    first = server.post(f"/api/admin/api-keys/{key_id}/rotate", headers=ADMIN, key=idem)
    assert first.status in (200, 201), first
    spelled = "%" + format(ord(key_id[0]), "02X") + key_id[1:]
    with server.unchanged():
        again = server.post(f"/api/admin/api-keys/{spelled}/rotate", headers=ADMIN, key=idem)
    assert again.status == first.status, again
    assert again.headers.get("X-Idempotency") == "HIT", again
    # (a replay shows the new secret redacted: compare the key, not the bytes)
    assert again.json["id"] == first.json["id"], again


# ---- the connection's memory: request targets and header sections ---------------------
#
# libmicrohttpd keeps the request line, the header fields and the query
# arguments in an 8 KiB pool per connection (http.c HTTP_CONN_MEMORY). 0.9.75
# left a query whose arguments outgrew it unanswered until the connection
# timed out; settled refuses what would come near the pool's end itself.

def refused_and_closed(c, status, code, method="POST"):
    """One answer (settled's JSON error, Connection: close), then EOF."""
    r = c.read_response(method=method)
    assert_error(r, status, code)
    assert (r.headers.get("Connection") or "").lower() == "close", r
    assert b"HTTP/1." not in read_to_eof(c)
    return r


TOO_LONG_TARGETS = {
    "amp-33": "/healthz?" + "&" * 32,
    "amp-200": "/healthz?" + "&" * 200,
    "amp-2000": "/healthz?" + "&" * 2000,
    "args-300": "/healthz?" + "&".join(["a=1"] * 300),
    "long-query": "/healthz?a=" + "a" * 3000,
    "long-path": "/" + "a" * 3000,
}


@pytest.mark.parametrize("target", TOO_LONG_TARGETS.values(), ids=TOO_LONG_TARGETS.keys())
def test_too_long_request_targets_are_414(server, target):
    """Before, a query of 116+ arguments left the connection waiting,
    unanswered, until SETTLED_CONN_TIMEOUT closed it."""
    with server.connect_raw() as c:
        c.send(head(["Host: 127.0.0.1"], method="GET", path=target))
        refused_and_closed(c, 414, "uri_too_long", method="GET")
    assert server.get("/healthz").status == 200


def test_too_long_target_of_a_write_is_414_and_writes_nothing(server):
    body = register_body()
    data = head(["Host: 127.0.0.1", "Content-Type: application/json",
                 f"Content-Length: {len(body)}"], path="/api/register?" + "&" * 200) + body
    with server.unchanged():
        with server.connect_raw() as c:
            c.send(data, ignore_reset=True)
            refused_and_closed(c, 414, "uri_too_long")


def test_targets_at_the_limits_are_accepted(server):
    """2048 bytes and 32 arguments are still taken."""
    args = "&".join(f"k{i:02d}=v" for i in range(32))
    target = "/healthz?" + args
    target += "x" * (2048 - len(target))  # the last argument's value grows
    assert len(target) == 2048
    r = server.raw(head(["Host: 127.0.0.1"], method="GET", path=target), method="GET")
    assert r.status == 200, r
    r = server.raw(head(["Host: 127.0.0.1"], method="GET", path="/healthz?" + "&" * 31),
                   method="GET")
    assert r.status == 200, r


# Over the 6 KiB settled takes (bytes and 64 bytes a field, argument or
# cookie), and short enough of the pool's end for the refusal to fit.
LARGE_SECTIONS = {
    "90-fields": [f"X-H-{i}: v" for i in range(90)],
    "one-6500": ["X-A: " + "a" * 6500],
    "18x300": [f"X-H-{i}: {'v' * 300}" for i in range(18)],
    "cookies": ["Cookie: " + "a=b; " * 90],
    # libmicrohttpd 0.9.75 splits a Cookie value at ',' as at ';'
    "comma-cookies": ["Cookie: " + ",".join(["a=b"] * 100)],
    "fields-and-args": [f"X-H-{i}: v" for i in range(60)],
}


@pytest.mark.parametrize("name", LARGE_SECTIONS.keys())
def test_large_header_sections_are_431_and_write_nothing(server, name):
    """Before, these ran (a write committed) and libmicrohttpd then closed
    the connection unanswered: the answer's headers no longer fit the pool."""
    body = register_body()
    path = "/api/register" + ("?" + "&".join(["a=1"] * 30) if name == "fields-and-args" else "")
    data = head(["Host: 127.0.0.1", "Content-Type: application/json",
                 f"Content-Length: {len(body)}", *LARGE_SECTIONS[name]], path=path) + body
    with server.unchanged():
        with server.connect_raw() as c:
            c.send(data, ignore_reset=True)
            refused_and_closed(c, 431, "headers_too_large")


def answered_or_closed(c):
    """The first status line, or None when the server closed without one.
    A connection left waiting fails on the socket timeout."""
    data = read_to_eof(c, timeout=c.sock.gettimeout())
    return int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else None


def test_no_request_near_the_pool_end_is_left_waiting(start_server):
    """Sweeps targets and sections up to past the pool: each gets an answer
    at once, or (within a few hundred bytes of the pool's end, where not
    even the refusal's headers fit) the connection closed at once; none
    waits for the connection timeout, set far beyond the socket's here."""
    srv = start_server(env={"SETTLED_CONN_TIMEOUT": "600"})
    seen = {}
    requests = []
    for n in range(0, 300, 9):
        requests.append(("amp", n, head(["Host: 127.0.0.1", "Connection: close"], method="GET",
                                        path="/healthz?" + "&" * n)))
    for n in range(1000, 8400, 150):
        requests.append(("query", n, head(["Host: 127.0.0.1", "Connection: close"], method="GET",
                                          path="/healthz?" + "&".join(["a=1"] * 20) + "&b=" + "b" * n)))
        requests.append(("field", n, head(["Host: 127.0.0.1", "Connection: close",
                                           "X-A: " + "a" * n], method="GET", path="/healthz")))
    for kind, n, data in requests:
        with srv.connect_raw() as c:
            c.send(data, ignore_reset=True)
            status = answered_or_closed(c)
        assert status in (200, 414, 431, None), (kind, n, status)
        seen.setdefault(kind, set()).add(status)
    assert {200, 414} <= seen["amp"], seen
    assert {200, 414, 431} <= seen["query"] | seen["field"], seen
    assert srv.get("/healthz").status == 200


def test_a_write_whose_answer_would_not_fit_never_runs(server):
    """Before, a registration whose header section left the pool too little
    for the answer's headers ran, committed, and was closed unanswered. Now
    it is refused before it runs: a 431, or, within a few hundred bytes of
    the pool's end, the connection closed at once; never a row."""
    statuses = set()
    with server.unchanged():
        for n in range(6000, 8300, 100):
            body = register_body()
            data = head(["Host: 127.0.0.1", "Connection: close", "Content-Type: application/json",
                         f"Content-Length: {len(body)}", "X-A: " + "a" * n]) + body
            with server.connect_raw() as c:
                c.send(data, ignore_reset=True)
                statuses.add(answered_or_closed(c))
    assert statuses <= {431, None} and 431 in statuses, statuses


def test_a_chunked_write_whose_trailers_fill_the_pool_never_runs(server):
    """The trailer fields of a chunked body are filed in the pool after the
    header section was estimated: before, a registration with ~70-100 of
    them ran, committed and was closed unanswered (its answer's headers no
    longer fit). Now the trailers count too: a 431 before it runs, or the
    library's own refusal; never a row without its answer."""
    statuses = set()
    for n, size in [(n, size) for n in range(0, 120, 6) for size in (1, 40)]:
        body = register_body()
        trailers = "".join(f"X-T-{i}: {'t' * size}\r\n" for i in range(n)).encode()
        data = head(["Host: 127.0.0.1", "Connection: close", "Content-Type: application/json",
                     "Transfer-Encoding: chunked"]) + \
            b"%x\r\n" % len(body) + body + b"\r\n0\r\n" + trailers + b"\r\n"
        before = server.snapshot()
        with server.connect_raw() as c:
            c.send(data, ignore_reset=True)
            status = answered_or_closed(c)
        if status != 201:
            assert server.snapshot() == before, (n, size, status)
        statuses.add(status)
    assert {201, 431} <= statuses, statuses
