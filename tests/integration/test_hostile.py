"""Issue 11: hostile clients. Each test attacks the real binary over raw
sockets and then checks three things: the answer (or the cut-off), that
the server is still alive and answering others, and that nothing was
written (snapshot) wherever the request was refused.

  * timeouts — slowloris headers and slow bodies are cut off by the request
    deadline (SETTLED_CONN_TIMEOUT, src/reaper.h) while other clients are
    served; an idle keep-alive client that sends whole requests is not;
  * connection floods — 2,000 connections opened and abandoned or held
    (10,000 with SETTLED_SLOW_TESTS=1);
  * a 1 GB Content-Length is refused with 413 before any body is sent;
  * request smuggling — Content-Length with Transfer-Encoding, two
    Content-Length lines, odd Transfer-Encodings: one 400, connection
    closed, the smuggled request never runs;
  * bytes — header names that are no token, header values and bodies that
    are not UTF-8 or carry NULs: 400, never a crash or a 5xx;
  * SQL metacharacters in every string field: refused where the field has
    a grammar, stored and returned verbatim where it is free text.
"""

import os
import resource
import select
import socket
import sqlite3
import struct
import threading
import time
import urllib.parse

import pytest

from conftest import (
    ADMIN_TOKEN,
    REQUEST_ID_RE,
    SqliteBackend,
    fund_wallet,
    assert_common_headers,
    assert_error,
    build_request,
    new_key,
    new_wallet,
    param_id,
)

JSON = {"Content-Type": "application/json"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TIMEOUT_S = 2          # SETTLED_CONN_TIMEOUT for the timeout tests
# A hang guard, not a measure: by then a connection the timeout should cut
# has not been cut at all. That the deadline is kept to within one reaper
# tick (250 ms) is test_reaper's to show (tests/unit/test_reaper.c), where
# load cannot blur it: here the server stopped 5 s by a loaded machine cut
# the clients 5.3 s after they came, past the old "timeout + 2.5 s". It
# stays below the ~55 s in which a client sending a byte a second would
# finish its request (and be answered), so it is not scaled.
CUT_GUARD_S = 30

slow = pytest.mark.skipif(not os.environ.get("SETTLED_SLOW_TESTS"),
                          reason="slow: set SETTLED_SLOW_TESTS=1")


@pytest.fixture
def timeout_server(start_server):
    return start_server(env={"SETTLED_CONN_TIMEOUT": f"{TIMEOUT_S}s"})


def assert_alive(server):
    r = server.get("/healthz")
    assert r.status == 200, r


def register_body(wallet=None):
    return b'{"wallet": "%s"}' % (wallet or new_wallet()).encode()


def raise_fd_limit(want):
    """Raises this process's RLIMIT_NOFILE to want (+ margin) if the hard
    limit allows; skips the test otherwise."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = want + 256
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def connect(port, timeout=10):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def wait_closed(sock, deadline):
    """Reads (and drops) whatever the server sends until it closes the
    connection; returns (seconds waited, bytes received), or (None, bytes)
    when still open at the deadline."""
    start = time.monotonic()
    got = b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start, got
        if not chunk:
            return time.monotonic() - start, got
        got += chunk
    return None, got


def read_to_eof(conn, timeout=15.0):
    """After read_response(): whatever else the server sends before it
    closes. Fails the test if it keeps the connection open: the guard is
    half the default 30 s idle timeout (which would close it anyway), so a
    server stopped for seconds by a loaded machine does not fail it."""
    deadline = time.monotonic() + timeout
    data = conn.buf
    conn.buf = b""
    while not conn.eof:
        if time.monotonic() > deadline:
            pytest.fail("the server kept the connection open after refusing the request")
        if conn.readable(0.1):
            data += conn.buf
            conn.buf = b""
            conn._fill()
            data += conn.buf
            conn.buf = b""
    return data


class Dribbler(threading.Thread):
    """Sends prefix at once, then data one byte every interval seconds until
    the server cuts the connection; records when (seconds from just before
    it connected) and what came back."""

    def __init__(self, port, data, interval=1.0, prefix=b""):
        super().__init__(daemon=True)
        self.port, self.data, self.interval, self.prefix = port, data, interval, prefix
        self.cut_after = None
        self.sent = 0
        self.received = b""

    def run(self):
        # Taken before the connect: the server's deadline starts when it
        # accepts, after the handshake connect() waits for, so a client
        # stalled between connect() and this line (a loaded machine) could
        # otherwise measure a cut at the timeout as early.
        start = time.monotonic()
        sock = connect(self.port)
        try:
            sock.sendall(self.prefix)
            for b in self.data:
                try:
                    sock.sendall(bytes([b]))
                except (BrokenPipeError, ConnectionResetError):
                    self.cut_after = time.monotonic() - start
                    return
                self.sent += 1
                r, _, _ = select.select([sock], [], [], self.interval)
                if r:
                    try:
                        chunk = sock.recv(65536)
                    except ConnectionResetError:
                        chunk = b""
                    self.received += chunk
                    if not chunk:
                        self.cut_after = time.monotonic() - start
                        return
        finally:
            sock.close()


def serve_others_while(server, threads, seconds):
    """Other clients' requests while threads (slow clients the server will
    cut) run; returns how many were answered while every slow client was
    still connected. That order, not a time per answer, shows the server
    did not wait for the slow clients: a server held by them answers
    nobody until it cuts them. (Five answers in the ~2 s before the cut,
    each within a second, held only while an answer and the client's
    0.2 s pause took under ~0.4 s: a wall-clock bound that a loaded
    machine, ASan and the other suites sharing two cores, can break.)"""
    deadline = time.monotonic() + seconds
    during = 0
    while time.monotonic() < deadline and any(t.is_alive() for t in threads):
        r = server.get("/healthz")
        assert r.status == 200, r
        if all(t.cut_after is None for t in threads):
            during += 1
        time.sleep(0.2)
    return during


def served_beside_slow_clients(server, start_clients, check_clients, tries=5):
    """serve_others_while() for a fresh set of slow clients until at least
    two answers came while all of them were connected. A loaded machine
    that keeps the server (or this test) off the CPU for the ~2 s before
    the cut leaves no room for them: that run proves nothing and is made
    again; a server the slow clients hold answers nobody in any run.
    check_clients(clients) asserts each run's cuts."""
    counts = []
    for _ in range(tries):
        clients = start_clients()
        served = serve_others_while(server, clients, CUT_GUARD_S)
        for t in clients:
            t.join(CUT_GUARD_S)
        check_clients(clients)
        if served >= 2:
            return
        counts.append(served)
    pytest.fail(f"{counts} answers while the slow clients were connected, in {tries} runs")


# ---- timeouts ---------------------------------------------------------------

def test_slowloris_headers_are_cut_off_while_others_are_served(timeout_server):
    srv = timeout_server
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 64 + b"\r\n\r\n"

    def start():
        lorises = [Dribbler(srv.port, head) for _ in range(3)]
        for t in lorises:
            t.start()
        return lorises

    def check(lorises):
        for t in lorises:
            assert t.cut_after is not None, f"slowloris still connected after {t.sent} bytes"
            assert TIMEOUT_S - 0.5 <= t.cut_after <= CUT_GUARD_S, f"cut after {t.cut_after:.2f}s"
            assert t.sent < len(head)
            assert b"HTTP/1.1" not in t.received, t.received

    served_beside_slow_clients(srv, start, check)
    assert_alive(srv)


def test_slow_body_is_cut_off_and_nothing_is_written(timeout_server):
    srv = timeout_server
    body = register_body()
    head = build_request("POST", "/api/register", headers={**JSON, "Content-Length": str(len(body))})
    with srv.unchanged():
        sock = connect(srv.port)
        try:
            sock.sendall(head)
            start = time.monotonic()
            cut = None
            for b in body:
                try:
                    sock.sendall(bytes([b]))
                except (BrokenPipeError, ConnectionResetError):
                    cut = time.monotonic() - start
                    break
                waited, got = wait_closed(sock, time.monotonic() + 1.0)
                assert b"HTTP/1.1" not in got, got
                if waited is not None:
                    cut = time.monotonic() - start
                    break
            assert cut is not None, "slow body never cut off"
            assert cut <= CUT_GUARD_S, f"cut after {cut:.2f}s"
        finally:
            sock.close()
        assert_alive(srv)


def test_slow_bodies_do_not_starve_other_clients(timeout_server):
    """Eight clients send their headers at once and then a body byte a
    second; all are cut off, the others are served meanwhile."""
    srv = timeout_server
    body = register_body()
    head = build_request("POST", "/api/register", headers={**JSON, "Content-Length": str(len(body))})

    def start():
        slow_clients = [Dribbler(srv.port, body, prefix=head) for _ in range(8)]
        for t in slow_clients:
            t.start()
        return slow_clients

    def check(slow_clients):
        for t in slow_clients:
            assert t.cut_after is not None and t.cut_after <= CUT_GUARD_S, t.cut_after
            assert t.sent < len(body)
            assert b"HTTP/1.1" not in t.received, t.received

    with srv.unchanged():
        served_beside_slow_clients(srv, start, check)
    assert_alive(srv)


# The keep-alive test's own timeout: its pauses are a quarter of it, so a
# request the server is slow to read still has three quarters in hand.
KEEPALIVE_TIMEOUT_S = 6


def test_keepalive_client_with_pauses_is_not_cut_off(start_server):
    """Each request restarts the deadline: whole requests sent with pauses
    shorter than the timeout keep one connection going for several times
    the timeout. The server's deadline for the next request starts after it
    got the last one, so a pause is measured from the last send: one that a
    stalled client (a loaded machine) stretched to the timeout or more
    entitles the server to cut; that run proves nothing and is made again."""
    srv = start_server(env={"SETTLED_CONN_TIMEOUT": f"{KEEPALIVE_TIMEOUT_S}s"})
    req = build_request("GET", "/healthz")
    for _attempt in range(5):
        with srv.connect_raw() as c:
            start = last_sent = time.monotonic()
            c.send(req)
            assert c.read_response(method="GET").status == 200
            while time.monotonic() - start <= 2 * KEEPALIVE_TIMEOUT_S:
                time.sleep(KEEPALIVE_TIMEOUT_S / 4)
                if time.monotonic() - last_sent >= KEEPALIVE_TIMEOUT_S:
                    break                   # stalled past the timeout: no verdict
                last_sent = time.monotonic()
                c.send(req)
                r = c.read_response(method="GET")
                assert r.status == 200, r
            else:
                return
    pytest.fail("every run stalled past the timeout between two requests")


def test_idle_connections_are_closed_by_the_timeout(timeout_server):
    srv = timeout_server
    socks = [connect(srv.port) for _ in range(50)]
    try:
        assert_alive(srv)
        deadline = time.monotonic() + CUT_GUARD_S
        for s in socks:
            waited, got = wait_closed(s, deadline)
            assert waited is not None, "idle connection still open after the timeout"
            assert got == b""
    finally:
        for s in socks:
            s.close()
    assert_alive(srv)


# ---- connection floods ----------------------------------------------------------

def _abandon(port, n):
    """Opens n connections and walks away from each in one of four ways:
    close at once, close after half a request line, reset (SO_LINGER 0)
    after partial headers, close after a whole request without reading."""
    raise_fd_limit(n)
    socks = []
    whole = build_request("GET", "/healthz")
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(s)
            kind = i % 4
            try:
                if kind == 1:
                    s.send(b"GET /heal")
                elif kind == 2:
                    s.send(b"POST /api/register HTTP/1.1\r\nContent-Len")
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif kind == 3:
                    s.send(whole)
            except OSError:
                pass
    finally:
        for s in socks:
            s.close()


def test_two_thousand_abandoned_connections(server):
    with server.unchanged():
        _abandon(server.port, 2000)
        assert_alive(server)
    r = server.post("/api/register", body=register_body(), headers=JSON)
    assert r.status == 201, r


@slow
def test_ten_thousand_abandoned_connections(server):
    _abandon(server.port, 10000)
    assert_alive(server)


def _hold(srv, n):
    """Opens n idle connections, checks the server answers others while they
    are open, then that the timeout closes all of them."""
    raise_fd_limit(n)
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
        assert_alive(srv)
        poller = select.poll()
        for s in socks:
            poller.register(s, select.POLLIN)
        open_fds = {s.fileno(): s for s in socks}
        deadline = time.monotonic() + CUT_GUARD_S
        while open_fds and time.monotonic() < deadline:
            for fd, _ in poller.poll(200):
                try:
                    data = open_fds[fd].recv(1024)
                except ConnectionResetError:
                    data = b""
                assert data == b"", data
                poller.unregister(fd)
                del open_fds[fd]
        assert not open_fds, f"{len(open_fds)} of {n} idle connections still open"
    finally:
        for s in socks:
            s.close()
    assert_alive(srv)


def test_two_thousand_held_connections_then_timed_out(timeout_server):
    _hold(timeout_server, 2000)


@slow
def test_ten_thousand_held_connections_then_timed_out(timeout_server):
    _hold(timeout_server, 10000)


# ---- body size ------------------------------------------------------------------

def test_one_gigabyte_content_length_is_refused_before_reading(server):
    head = build_request("POST", "/api/register",
                         headers={**JSON, "Content-Length": str(1 << 30)})
    with server.unchanged():
        # Not one byte of the body is sent: an answer at all (the read
        # times out otherwise) shows the refusal came before reading it.
        with server.connect_raw() as c:
            c.send(head)
            r = c.read_response()
            assert_error(r, 413, "payload_too_large")
            assert read_to_eof(c) == b""
    assert_alive(server)


# ---- request smuggling --------------------------------------------------------------

def _smuggled(wallet):
    """A complete second request, hidden in the first one's body."""
    return build_request("POST", "/api/register", register_body(wallet), JSON)


def _head(lines):
    return ("\r\n".join(["POST /api/register HTTP/1.1", "Host: 127.0.0.1",
                         "Content-Type: application/json", *lines]) + "\r\n\r\n").encode("latin-1")


def _smuggling_cases():
    w1, w2 = new_wallet(), new_wallet()
    inner = _smuggled(w2)
    chunked_then_inner = b"0\r\n\r\n" + inner        # CL.TE: chunks end at once
    body1 = register_body(w1)
    chunked_body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body1), body1)
    return {
        "cl-then-te": _head([f"Content-Length: {len(chunked_then_inner)}",
                             "Transfer-Encoding: chunked"]) + chunked_then_inner,
        "te-then-cl": _head(["Transfer-Encoding: chunked", "Content-Length: 4"]) + chunked_body + inner,
        "cl-twice-differ": _head([f"Content-Length: {len(body1)}",
                                  f"Content-Length: {len(body1) + len(inner)}"]) + body1 + inner,
        "cl-twice-differ-short-first": _head(["Content-Length: 5",
                                              f"Content-Length: {len(body1)}"]) + body1,
        "cl-twice-same": _head([f"Content-Length: {len(body1)}"] * 2) + body1,
        "te-twice": _head(["Transfer-Encoding: chunked"] * 2) + chunked_body,
        "te-gzip-chunked": _head(["Transfer-Encoding: gzip, chunked"]) + chunked_body,
        "te-identity-with-cl": _head(["Transfer-Encoding: identity",
                                      f"Content-Length: {len(body1)}"]) + body1,
        "te-chunked-trailing-blank": _head(["Transfer-Encoding: chunked "]) + chunked_body,
        "te-blank-before-colon": _head(["Transfer-Encoding : chunked",
                                        f"Content-Length: {len(body1)}"]) + body1,
        "cl-blank-before-colon": _head([f"Content-Length : {len(body1) + len(inner)}",
                                        "Transfer-Encoding: chunked"]) + chunked_body + inner,
    }


SMUGGLING = list(_smuggling_cases())


@pytest.mark.parametrize("case", SMUGGLING)
def test_request_smuggling_is_refused_and_runs_nothing(server, case):
    data = _smuggling_cases()[case]
    with server.unchanged():
        with server.connect_raw() as c:
            c.send(data, ignore_reset=True)
            r = c.read_response()
            assert_error(r, 400, {"invalid_framing", "invalid_header"})
            assert (r.headers.get("Connection") or "").lower() == "close", r
            # Exactly one answer: the hidden request was never parsed.
            rest = read_to_eof(c)
            assert b"HTTP/1.1" not in rest, rest
    assert_alive(server)


@pytest.mark.parametrize("value", ["5, 5", "-1", "+5", "0x10", "5 5", "99999999999999999999999"])
def test_malformed_content_length_is_400_from_libmicrohttpd(server, value):
    """libmicrohttpd refuses these itself, before settled sees the request:
    a plain HTML 400 without settled's headers, then the connection closes.
    (0.9.75 writes its header block twice on this path, so the second copy
    arrives as part of the 138-byte body; a client sees one 400.)"""
    body = register_body()
    data = _head([f"Content-Length: {value}"]) + body
    with server.unchanged():
        with server.connect_raw() as c:
            c.send(data, ignore_reset=True)
            r = c.read_response(check=False)
            assert r.status in (400, 413), r
            assert b"HTTP/1.1" not in read_to_eof(c)
    assert_alive(server)


# ---- header and body bytes --------------------------------------------------------

@pytest.mark.parametrize("line", [
    b"X-Note: \xff\xfe",                    # not UTF-8
    b"X-Note: caf\xc3",                     # cut sequence
    b"X-Note: \xc0\xaf",                    # overlong '/'
    b"X-Note: \xed\xa0\x80",                # surrogate
    b"X-Request-Id: \xff",
    b"Idempotency-Key: \xff\xfe",
    b"X-N\xffote: 1",                       # name not a token
    b"X-Note : 1",                          # blank before the colon
    b"X-\xc3\xa9: 1",                       # UTF-8 is not a token either
], ids=param_id)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_bad_header_bytes_are_400(server, line, method):
    if method == "GET":
        data = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + line + b"\r\n\r\n"
    else:
        body = register_body()
        data = (b"POST /api/register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + line + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    with server.unchanged():
        r = server.raw(data)
        assert_error(r, 400, "invalid_header")
    assert_alive(server)


def test_utf8_header_values_are_accepted(server):
    r = server.get("/healthz", headers={"X-Note": "café €".encode()})
    assert r.status == 200, r
    r = server.post("/api/register", body=register_body(),
                    headers={**JSON, "X-Note": "naïve 😀".encode()})
    assert r.status == 201, r


@pytest.mark.parametrize("line", [b"X-Note: a\x00b", b"X-Request-Id: ab\x00cd"], ids=param_id)
def test_nul_in_header_value_is_400(server, line):
    """libmicrohttpd 0.9.75 measures header values with strlen(), so a NUL
    ends the value early ("ab\\0cd" reads as "ab"); settled finds it from
    the buffer's layout (src/hdr_layout.h) and refuses the request, so
    nothing after a NUL is ever used (test_framing.py has more cases)."""
    data = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + line + b"\r\n\r\n"
    r = server.raw(data, method="GET")
    assert_error(r, 400, "invalid_header")
    rid = r.headers.get("X-Request-Id")
    assert rid == "ab" or (len(rid) == 32 and rid != "abcd"), rid
    assert_alive(server)


@pytest.mark.parametrize("body", [
    b'{"wallet": "\xff"}',                   # not UTF-8
    b'{"wallet": "\xc0\xaf"}',               # overlong
    b'{"wallet": "\xed\xa0\x80"}',           # surrogate
    b'{"wallet": "0x\xc3"}',                 # cut sequence
    b'{"wallet\xfe": "x"}',                  # in a key
    b'{"wallet": "a\x00b"}',                 # raw NUL in a string
    b'{"wallet": "a\\u0000b"}',              # escaped NUL: no JSON_ALLOW_NUL
    b'{"wal\\u0000let": "x"}',               # escaped NUL in a key
    b'{"wallet": "0x00"}\x00',               # NUL after the document
    b'\x00{"wallet": "0x00"}',
    b'{"wallet": "\\ud800"}',                # lone surrogate escape
    b'\xef\xbb\xbf{"wallet": "0x00"}',       # BOM
    # Found by fuzz_body: jansson quotes the input near a bad escape and cut
    # the 2-byte character in two; the invalid UTF-8 message made json_pack
    # fail and the answer a 500 (src/dispatch.c parse_body).
    b'{"wallet":"0xab\\u00e\xc8\x9d"}',
    b'{"wallet":"\\u12\xe2\x82\xac\xe2\x82\xac"}',
], ids=param_id)
def test_bad_body_bytes_are_400_invalid_json(server, body):
    with server.unchanged():
        r = server.post("/api/register", body=body, headers=JSON, key=new_key())
        err = assert_error(r, 400, "invalid_json")
    assert isinstance(err.get("line"), int) and isinstance(err.get("column"), int), err
    assert_alive(server)


# ---- SQL metacharacters -----------------------------------------------------------

METAS = ["'", '"', ";--", "%", "_", "\\", "' OR '1'='1", "'; DROP TABLE accounts;--",
         "%_\\'\";--", "\\'", "''", "\\\\%"]


def stored_strings(server, table, column):
    """Every value of table.column as str, read straight from the store."""
    b = server.backend
    if isinstance(b, SqliteBackend):
        uri = "file:" + urllib.parse.quote(str(b.path)) + "?mode=ro"
        con = sqlite3.connect(uri, uri=True, timeout=10)
        try:
            return [r[0] for r in con.execute(f'SELECT "{column}" FROM "{table}"')]
        finally:
            con.close()
    if hasattr(b, "psql"):
        out = b.psql(f"SELECT encode(convert_to({column}, 'UTF8'), 'hex') FROM {table}")
        return [bytes.fromhex(line).decode() for line in out.splitlines() if line]
    pytest.skip(f"no direct reader for backend {b.name}")


@pytest.mark.parametrize("meta", METAS, ids=param_id)
def test_idempotency_key_with_sql_metacharacters_replays(server, meta):
    key = f"k-{meta}-{new_key()}"
    body = register_body()
    first = server.post("/api/register", body=body, headers=JSON, key=key)
    assert first.status == 201, first
    with server.unchanged():
        again = server.post("/api/register", body=body, headers=JSON, key=key)
    assert again.status == 201, again
    assert again.body == first.body
    assert again.headers.get("X-Idempotency") == "HIT"
    assert key in stored_strings(server, "idempotency_keys", "idem_key")


def test_like_wildcards_in_keys_do_not_match_other_keys(server):
    """'%' and '_' are literal: "k%" is not a pattern matching "kX"."""
    base = new_key()
    r1 = server.post("/api/register", body=register_body(), headers=JSON, key=base + "AB")
    assert r1.status == 201, r1
    for key in (base + "%", base + "_B", base + "A_", base + "__"):
        r = server.post("/api/register", body=register_body(), headers=JSON, key=key)
        assert r.status == 201, f"{key!r}: {r!r}"
        assert r.headers.get("X-Idempotency") != "HIT"


@pytest.mark.parametrize("meta", METAS + ["a;b", "a b", "a/b", "a%20b"], ids=param_id)
def test_request_id_with_sql_metacharacters_is_replaced(server, meta):
    """Only [A-Za-z0-9._-] is kept ("r_" is a valid id and comes back as
    sent); anything else is replaced by a generated id."""
    rid = f"r{meta}"
    r = server.get("/healthz", headers={"X-Request-Id": rid})
    assert r.status == 200
    got = r.headers["X-Request-Id"]
    assert REQUEST_ID_RE.match(got), got
    assert (got == rid) == bool(REQUEST_ID_RE.match(rid)), got


def test_request_id_with_like_wildcard_is_stored_verbatim(server):
    """'_', '-' and '.' are allowed in request ids; the id is stored as the
    actor of the intent's transitions exactly as sent."""
    wallet = new_wallet()
    fund_wallet(server, wallet, 5, register=True)
    rid = f"a_b-c.d_{new_key().replace('-', '_')}"
    r = server.post("/api/claim/prepare", {"wallet": wallet, "amount": "5"},
                    headers={"X-Request-Id": rid}, key=new_key())
    assert r.status == 201, r
    assert r.headers["X-Request-Id"] == rid
    assert f"req:{rid}" in stored_strings(server, "intent_transitions", "actor")


@pytest.mark.parametrize("meta", METAS, ids=param_id)
@pytest.mark.parametrize("field", ["wallet", "referrer"])
def test_wallet_fields_with_sql_metacharacters_are_400(server, field, meta):
    good = new_wallet()
    for bad in (meta, good[:-len(meta)] + meta, good + meta, "0x" + meta * 40):
        body = {"wallet": good, field: bad} if field == "referrer" else {"wallet": bad}
        with server.unchanged():
            r = server.post("/api/register", body, key=new_key())
            assert_error(r, 400, "invalid_wallet", field=field)


@pytest.mark.parametrize("meta", METAS, ids=param_id)
def test_claim_fields_with_sql_metacharacters_are_refused(server, meta):
    """No Idempotency-Key on these: a 404 decided inside the write unit is
    a final answer the key would record (SPEC section 4), which is a write."""
    wallet = new_wallet()
    assert server.register(wallet).status == 201
    with server.unchanged():
        r = server.post("/api/claim/prepare", {"wallet": wallet, "amount": "1" + meta})
        assert_error(r, 400, "invalid_amount", field="amount")
        r = server.post("/api/claim/record",
                        {"intent_id": "int_" + meta, "tx_hash": "0x" + "ab" * 32})
        assert_error(r, 404, "intent_not_found", field="intent_id")
        r = server.post("/api/claim/record", {"intent_id": "int_x", "tx_hash": "0x" + meta})
        assert r.status in (400, 404), r
        assert r.error in ("invalid_tx_hash", "intent_not_found"), r


@pytest.mark.parametrize("meta", METAS, ids=param_id)
def test_path_and_query_with_sql_metacharacters(server, meta):
    q = urllib.parse.quote(meta, safe="")
    with server.unchanged():
        r = server.get(f"/api/v2/accounts/{q}", headers=ADMIN)
        assert r.status in (400, 404), r
        assert_common_headers(r)
        r = server.get(f"/api/v2/intents/int_{q}", headers=ADMIN)
        assert_error(r, 404, "intent_not_found")
        r = server.get(f"/api/v2/ledger/transactions?account={q}", headers=ADMIN)
        assert r.status in (400, 404), r
        r = server.get(f"/api/v2/ledger/transactions?after=1{q}", headers=ADMIN)
        assert_error(r, 400, "invalid_parameter", field="after")


@pytest.mark.parametrize("meta", METAS, ids=param_id)
def test_api_key_name_with_sql_metacharacters_is_stored_verbatim(server, meta):
    name = f"n{meta}x{meta}"
    key = new_key()
    r = server.post("/api/admin/api-keys", {"name": name}, headers=ADMIN, key=key)
    assert r.status == 201, r
    assert r.json["name"] == name
    again = server.post("/api/admin/api-keys", {"name": name}, headers=ADMIN, key=key)
    assert again.status == 201 and again.json["name"] == name, again
    assert name in stored_strings(server, "api_keys", "name")


def test_payout_reference_with_sql_metacharacters_is_stored_verbatim(server):
    r = server.post("/api/admin/api-keys", {"name": "payouts"}, headers=ADMIN, key=new_key())
    assert r.status == 201, r
    auth = {"Authorization": f"Bearer {r.json['key']}"}
    for meta in METAS:
        ref = f"ref{meta}{new_key()}{meta}"
        body = {"reference": ref, "items": [{"wallet": new_wallet(), "amount": "5"}]}
        r = server.post("/api/v2/payouts/batch", body, headers=auth, key=new_key())
        assert r.status == 201, r
        assert r.json["reference"] == ref
        got = server.get(f"/api/v2/payouts/batch/{r.json['id']}", headers=auth)
        assert got.status == 200 and got.json["reference"] == ref, got
