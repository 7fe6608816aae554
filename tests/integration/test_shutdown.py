"""SPEC section 3: SIGTERM/SIGINT stop accepting, finish in-flight requests,
close the store and exit 0; nothing acknowledged is lost."""

import json
import signal
import subprocess
import threading
import time

import pytest

from conftest import (TIME_FACTOR, assert_error, backend_name, build_request, new_wallet, store_rows,
                      wait_until)

# The grace of the tests that wait it out (SETTLED_SHUTDOWN_GRACE; 30 s by
# default, which the other tests keep: their in-flight request must finish
# whatever the machine's load).
SHORT_GRACE_S = 2
# The grace of the tests whose in-flight requests all end, and the wait for
# their exit: a server that waited out its grace anyway (nothing left in
# flight) is still told apart, with a minute for a loaded machine (10 s
# failed with the server stopped 11 s meanwhile).
LONG_GRACE_S = 300
EXIT_GUARD_S = 60 * TIME_FACTOR


def _shutdown_logged(srv, timeout=30.0):
    """Sync point: waits for a log line saying the server got the signal
    ("signal 15: finishing in-flight requests"). Not an assertion: the
    wording is the server's. The server refuses new requests before it
    logs that line, so a request sent after it is answered 503. Only the
    message is searched: the start-up line's fields name the setting
    shutdown_grace. The wait is long because it is the synchronisation
    the tests rely on: a loaded machine can take seconds to run the
    handler and flush the buffered line, and a 2 s best effort let a
    request sent meanwhile be answered 200 instead of 503."""
    deadline = time.monotonic() + timeout * TIME_FACTOR
    while time.monotonic() < deadline:
        for rec in srv.log_records():
            if isinstance(rec, dict):
                msg = str(rec.get("msg", "")).lower()
                if any(w in msg for w in ("sigterm", "signal", "shutting", "stopping", "shutdown")):
                    return True
        time.sleep(0.02)
    return False


def test_sigterm_finishes_in_flight_request(start_server):
    srv = start_server(env={"SETTLED_SHUTDOWN_GRACE": f"{LONG_GRACE_S}s"})
    before = srv.snapshot()
    wallet = new_wallet()
    body = json.dumps({"wallet": wallet}).encode()
    head = build_request("POST", "/api/register", headers={
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Expect": "100-continue",
        "X-Request-Id": "in-flight-1",
    })
    half = len(body) // 2
    with srv.connect_raw(timeout=15) as c:
        c.send(head)
        # 100 Continue proves the server has parsed the headers: the request
        # is in flight. (A server that does not send it is still tested.)
        if c.readable(30.0):   # 100 Continue: headers parsed, in flight
            interim = c.read_response(interim=True, check=False)
            assert interim.status == 100, interim
        c.send(body[:half])
        time.sleep(0.1)                 # let the server read the first half
        srv.send_signal(signal.SIGTERM)
        _shutdown_logged(srv)
        c.send(body[half:])
        r = c.read_response()
    assert r.status == 201, r
    assert r.json["wallet"] == wallet
    rc = srv.wait_exit(EXIT_GUARD_S)
    assert rc == 0, f"exit code {rc} after SIGTERM"
    # acknowledged means durable
    after = srv.snapshot()
    assert after["accounts"] == before["accounts"] + 1


def test_sigterm_idle_exits_0_and_keeps_data(start_server):
    srv = start_server()
    wallet = new_wallet()
    assert srv.register(wallet).status == 201
    assert srv.stop(signal.SIGTERM) == 0
    srv.start()
    assert_error(srv.register(wallet), 409, "already_registered")


def test_sigint_exits_0(start_server):
    srv = start_server()
    assert srv.get("/healthz").status == 200
    assert srv.stop(signal.SIGINT) == 0


def test_sigterm_under_load_exits_0_every_time(start_server):
    """Regression: libmicrohttpd's MHD_quiesce_daemon() races its epoll
    workers for the listen socket and aborts the process when it loses
    ("Failed to remove listen FD from epoll set", exit -6), which a test
    teardown hit once. settled no longer quiesces; new requests after the
    signal get 503 `unavailable` with Connection: close instead. Ten
    SIGTERMs, each with eight clients sending requests over new and
    kept-alive connections at the moment it lands."""
    import http.client
    import threading

    srv = start_server(env={"SETTLED_SHUTDOWN_GRACE": f"{LONG_GRACE_S}s"})
    for round_ in range(10):
        stop = threading.Event()
        statuses, problems = [], []

        def client():
            while not stop.is_set():
                try:
                    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
                    for _ in range(5):
                        c.request("GET", "/healthz")
                        r = c.getresponse()
                        r.read()
                        statuses.append(r.status)
                        if r.status == 503:
                            if (r.getheader("Connection") or "").lower() != "close":
                                problems.append("503 without Connection: close")
                            break
                    c.close()
                except (OSError, http.client.HTTPException):
                    time.sleep(0.005)   # refused or cut: the server is going away

        threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
        for t in threads:
            t.start()
        # The signal lands while the clients are busy: once one was
        # answered (a fixed 0.2 s could pass before any was, with the
        # server or the clients held by a loaded machine).
        wait_until(lambda: 200 in statuses, timeout=30, what="a first answer before SIGTERM")
        srv.send_signal(signal.SIGTERM)
        rc = srv.wait_exit(EXIT_GUARD_S)
        stop.set()
        for t in threads:
            t.join(10)
        err = srv.stderr(all_runs=False)
        assert rc == 0, f"round {round_}: exit code {rc} after SIGTERM\n{err[-2000:]!r}"
        assert not problems, problems
        assert set(statuses) <= {200, 503}, set(statuses)
        assert statuses.count(200) > 0
        if round_ < 9:
            srv.start()


def test_new_requests_during_shutdown_get_503_and_close(start_server):
    """While an in-flight request holds the shutdown open, a new request on
    an already open connection is answered 503 `unavailable` with
    Connection: close, and the in-flight one still completes."""
    srv = start_server(env={"SETTLED_SHUTDOWN_GRACE": f"{LONG_GRACE_S}s"})
    wallet = new_wallet()
    body = json.dumps({"wallet": wallet}).encode()
    head = build_request("POST", "/api/register", headers={
        "Content-Type": "application/json", "Content-Length": str(len(body)),
        "Expect": "100-continue"})
    with srv.connect_raw(timeout=15) as held, srv.connect_raw(timeout=15) as other:
        other.send(build_request("GET", "/healthz"))
        assert other.read_response().status == 200          # kept alive
        held.send(head)
        if held.readable(30.0):
            assert held.read_response(interim=True, check=False).status == 100
        held.send(body[:5])
        time.sleep(0.1)
        srv.send_signal(signal.SIGTERM)
        _shutdown_logged(srv)
        other.send(build_request("GET", "/healthz"))
        r = other.read_response()
        assert_error(r, 503, "unavailable")
        assert (r.headers.get("Connection") or "").lower() == "close", r
        held.send(body[5:])
        assert held.read_response().status == 201
    assert srv.wait_exit(EXIT_GUARD_S) == 0


@pytest.mark.skipif(backend_name() != "pg", reason="needs a write unit held past the grace: "
                    "a PostgreSQL lock (a unit alone waits for it as long as it takes)")
def test_sigterm_waits_past_the_grace_for_a_queued_write(start_server):
    """A request whose write unit is still queued when the grace ends:
    its connection is suspended and the store's thread holds the request.
    The server waits for the unit, answers it and exits 0 (it used to stop
    the HTTP daemon anyway: libmicrohttpd aborts on a suspended connection)."""
    srv = start_server(env={"SETTLED_SHUTDOWN_GRACE": f"{SHORT_GRACE_S}s"})
    wallet = new_wallet()
    locker = subprocess.Popen(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                               "-d", srv.backend.url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        locker.stdin.write("BEGIN;\nLOCK TABLE accounts IN SHARE ROW EXCLUSIVE MODE;\n"
                           "\\echo locked\n")
        locker.stdin.flush()
        assert locker.stdout.readline().strip() == "locked"
        answers = []
        t = threading.Thread(target=lambda: answers.append(
            srv.post("/api/register", json_body={"wallet": wallet}, timeout=90, check=False)),
            daemon=True)
        t.start()
        # The unit waits on the lock: the request is suspended, not answered.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not store_rows(
                srv, "SELECT 1 FROM pg_locks WHERE NOT granted AND relation = 'accounts'::regclass"):
            time.sleep(0.1)
        assert not answers
        srv.send_signal(signal.SIGTERM)
        time.sleep(SHORT_GRACE_S + 5)  # past the grace, the unit still waiting
        assert srv.proc.poll() is None, f"exited {srv.proc.returncode} with a write queued"
        locker.stdin.write("COMMIT;\n")
        locker.stdin.close()
        locker.wait(30)
        t.join(60)
        assert answers and answers[0].status == 201, answers
        assert srv.wait_exit(30) == 0
    finally:
        if locker.poll() is None:
            locker.kill()
            locker.wait()
    assert store_rows(srv, f"SELECT count(*) FROM accounts WHERE wallet = '{wallet}'") == [("1",)]


def test_sigterm_closes_a_request_still_arriving_after_the_grace(start_server):
    """SETTLED_SHUTDOWN_GRACE bounds the wait for in-flight requests: a
    client that sent half a body and then nothing keeps the server only
    until the grace ends. Its connection is closed without an answer (it
    was never acknowledged), nothing is written, and the server exits 0
    (with the default 30 s grace it would still be waiting when this test's
    wait ends)."""
    srv = start_server(env={"SETTLED_SHUTDOWN_GRACE": f"{SHORT_GRACE_S}s"})
    before = srv.snapshot()
    body = json.dumps({"wallet": new_wallet()}).encode()
    head = build_request("POST", "/api/register", headers={
        "Content-Type": "application/json", "Content-Length": str(len(body)),
        "Expect": "100-continue"})
    with srv.connect_raw(timeout=60) as c:
        c.send(head)
        if c.readable(30.0):   # 100 Continue: headers parsed, in flight
            assert c.read_response(interim=True, check=False).status == 100
        c.send(body[:5])
        time.sleep(0.1)
        srv.send_signal(signal.SIGTERM)
        rc = srv.wait_exit(20)
        assert rc == 0, f"exit code {rc} after SIGTERM"
        assert c.readable(5.0)
        try:
            rest = c.sock.recv(4096)
        except ConnectionResetError:
            rest = b""
        assert rest == b"", f"an answer to a request that never arrived: {rest!r}"
    srv.start()
    assert srv.snapshot() == before
