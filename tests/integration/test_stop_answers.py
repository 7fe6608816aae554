"""A stop never closes a committed write's connection before its answer.

Runs against the faultsim build (make faultsim), whose send_resp() wrapper
holds the answer of a resumed connection (its write unit was queued and is
committed) until the server is stopping, then three seconds more
(SETTLED_FAULTSIM_HOLD_ANSWER; tests/faultsim/faultsim.c). That is the
window a loaded machine opened now and then: the store resumed the
connection, the stop found no unit queued and stopped the daemon before the
connection's thread sent the answer, and the client, whose write had
committed, saw the connection closed unanswered. http_stop now waits (5 s at
most) for the answers of the requests it resumed (struct http answering).
"""

import os
import signal

import pytest

from conftest import build_request, new_wallet

pytestmark = pytest.mark.skipif(not os.environ.get("SETTLED_FAULTSIM"),
                                reason="needs the faultsim build (make faultsim)")


def test_sigterm_sends_the_answer_of_a_resumed_write(start_server):
    # The shortest grace: the stop is past it (1 s) before the held answer
    # goes out (3 s), and still inside its wait for the answers (5 s).
    srv = start_server(env={"SETTLED_SHUTDOWN_GRACE": "1s", "SETTLED_FAULTSIM_HOLD_ANSWER": "1"})
    wallet = new_wallet()
    body = b'{"wallet": "%s"}' % wallet.encode()
    with srv.connect_raw(timeout=60) as c:
        c.send(build_request("POST", "/api/register", body,
                             {"Content-Type": "application/json"}))
        # Committed and resumed; its answer is held until the stop.
        srv.wait_for_log(lambda r: r.get("msg", "").startswith("faultsim: holding"),
                         timeout=30, what="the held answer")
        srv.send_signal(signal.SIGTERM)
        r = c.read_response()
    assert r.status == 201, r
    assert r.json["wallet"] == wallet, r.json
    assert srv.wait_exit(30) == 0
