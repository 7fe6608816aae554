"""Every path that moves a job to the dead-letter queue gives its kind its
on_dead in the same write unit (src/worker.h, job_dead_fn).

A webhook.process job's on_dead marks its event `failed`. Before, only the
crash guard's count and (in a unit of its own, before the job's failure was
written) the handler's last failure did; a lease swept at its last attempt
(the ticker's sweep: on PostgreSQL every job is leased, so a webhook job
whose workers kept dying; the embedded start-up sweep of jobs left
running) left the job dead and its event `stored` for ever.

"The same unit" is checked twice. A trigger the test adds records the
job's state as the statement marking its event failed sees it: `dead`
means the job's death was already written in that transaction or an
earlier one (the old handler path marked the event first, in a unit of its
own, and the trigger saw the job still running or available). And the
store's clock: tx_now_ms is fixed for a whole transaction and both writes
stamp it (the job's finished_at, the event's processed_at), so equal stamps
mean one transaction. The
leases are forced to expire by writing the job row as a lost worker left
it (running, an expired lease, one attempt left), as test_jobs' sweeper
tests do: no worker is killed, nothing is timed.
"""

import pytest

from conftest import (ADMIN_TOKEN, backend_name, concurrent_requests, new_wallet, payment_delivery,
                      store_exec,
                      store_rows, wait_until)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SWEPT = "lease expired: the worker running it was lost"
MAX_ATTEMPTS = 3


def pay(srv, wallet, amount):
    path, body, headers = payment_delivery(srv, wallet, amount)
    r = srv.post(path, body=body, headers=headers)
    assert r.status == 200, r
    return headers["webhook-id"]


def job_and_event(srv, event_id):
    """(state, attempts, last_error, finished_at) of the event's job and
    (status, error, processed_at) of the event."""
    jobs = store_rows(srv, "SELECT state, attempts, coalesce(last_error, ''),"
                           " coalesce(finished_at, 0) FROM jobs"
                           f" WHERE kind = 'webhook.process' AND payload LIKE '%{event_id}%'")
    events = store_rows(srv, "SELECT status, coalesce(error, ''), coalesce(processed_at, 0)"
                             f" FROM webhook_events WHERE event_id = '{event_id}'")
    assert len(jobs) == 1 and len(events) == 1, (jobs, events)
    return jobs[0], events[0]


def watch_event_marks(srv):
    """Adds test_marks: a row (event_id, the job's state then) each time an
    event is marked failed, written by the marking statement itself."""
    seen = ("SELECT state FROM jobs WHERE kind = 'webhook.process'"
            " AND payload LIKE '%' || NEW.event_id || '%'")
    if backend_name() == "pg":
        srv.backend.psql(
            "CREATE TABLE test_marks (event_id TEXT, job_state TEXT)",
            "CREATE FUNCTION test_mark_seen() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" INSERT INTO test_marks VALUES (NEW.event_id, ({seen})); RETURN NEW; END $$",
            "CREATE TRIGGER test_mark_seen AFTER UPDATE ON webhook_events FOR EACH ROW"
            " WHEN (NEW.status = 'failed') EXECUTE FUNCTION test_mark_seen()")
        return
    store_exec(srv, "CREATE TABLE test_marks (event_id TEXT, job_state TEXT)")
    store_exec(srv, "CREATE TRIGGER test_mark_seen AFTER UPDATE ON webhook_events"
                    " WHEN NEW.status = 'failed' BEGIN"
                    f" INSERT INTO test_marks VALUES (NEW.event_id, ({seen})); END")


def marks_seen(srv, event_id):
    return [r[0] for r in store_rows(srv, "SELECT job_state FROM test_marks"
                                          f" WHERE event_id = '{event_id}'")]


def lose_the_worker(srv, event_id, lease_expires_at):
    """The job as a worker that died on its last attempt left it."""
    store_exec(srv, "UPDATE jobs SET state = 'running', lease_owner = 'gone#1',"
                    f" lease_expires_at = {lease_expires_at}, attempts = {MAX_ATTEMPTS - 1}"
                    f" WHERE kind = 'webhook.process' AND payload LIKE '%{event_id}%'")


def assert_dead_with_its_event(srv, event_id, error):
    (state, attempts, last_error, finished_at), (status, ev_error, processed_at) = \
        job_and_event(srv, event_id)
    assert (state, int(attempts), last_error) == ("dead", MAX_ATTEMPTS, error)
    assert (status, ev_error) == ("failed", error), (status, ev_error)
    # One transaction wrote both (its clock stamped both), the job's death
    # first.
    assert int(finished_at) > 0 and processed_at == finished_at, (finished_at, processed_at)
    assert marks_seen(srv, event_id) == ["dead"]


def test_a_lease_swept_at_its_last_attempt_marks_its_event_failed(start_server):
    """The ticker's sweep (both backends)."""
    srv = start_server(env={"SETTLED_WORKERS": "0",
                            "SETTLED_JOB_MAX_ATTEMPTS": str(MAX_ATTEMPTS)})
    watch_event_marks(srv)
    w = new_wallet()
    assert srv.register(w).status == 201
    event_id = pay(srv, w, 25)
    other = pay(srv, w, 26)         # stays as it is: no worker runs
    lose_the_worker(srv, event_id, 1)
    wait_until(lambda: job_and_event(srv, event_id)[0][0] != "running", timeout=30,
               what="the lease sweeper")
    assert_dead_with_its_event(srv, event_id, SWEPT)
    (state, attempts, _, _), (status, _, _) = job_and_event(srv, other)
    assert (state, attempts, status) == ("available", "0", "stored")
    srv.wait_for_log(lambda rec: "expired job leases taken back (1 now dead)" in rec.get("msg", ""),
                     what="the sweeper's log line")
    r = srv.get("/api/admin/dlq", headers=ADMIN)
    assert r.status == 200, r
    assert [j["last_error"] for j in r.json["data"]] == [SWEPT], r.json

    # An operator retry runs it (workers now): the event is processed.
    assert srv.stop() == 0
    srv.env["SETTLED_WORKERS"] = "1"
    srv.start()
    job_id = r.json["data"][0]["id"]
    assert srv.post(f"/api/admin/dlq/{job_id}/retry", headers=ADMIN).status == 200
    wait_until(lambda: job_and_event(srv, event_id)[1][0] == "processed", timeout=30,
               what="the retried event processed")


@pytest.mark.skipif(backend_name() != "sqlite", reason="embedded mode's start-up sweep")
def test_a_job_left_running_at_its_last_attempt_marks_its_event_failed_at_start(start_server):
    """The embedded start-up sweep: every running job is the dead
    predecessor's, whatever its lease."""
    srv = start_server(env={"SETTLED_WORKERS": "0",
                            "SETTLED_JOB_MAX_ATTEMPTS": str(MAX_ATTEMPTS)})
    watch_event_marks(srv)
    w = new_wallet()
    assert srv.register(w).status == 201
    event_id = pay(srv, w, 31)
    assert srv.stop() == 0
    lose_the_worker(srv, event_id, 2 ** 62)   # a lease far from expiry
    srv.start()
    assert_dead_with_its_event(srv, event_id, SWEPT)
    srv.wait_for_log(lambda rec: "left running by the previous process (1 now dead)"
                     in rec.get("msg", ""), what="the start-up sweep's log line")


def test_a_handlers_permanent_failure_marks_its_event_failed_in_its_unit(start_server):
    """The handler's path: an unknown wallet fails the job permanently; the
    event is marked failed in the unit that moves the job to dead (before,
    in a unit of its own ahead of it)."""
    srv = start_server(env={"SETTLED_WORKERS": "1",
                            "SETTLED_JOB_MAX_ATTEMPTS": str(MAX_ATTEMPTS)})
    watch_event_marks(srv)
    w = new_wallet()                                # never registered
    event_id = pay(srv, w, 41)
    wait_until(lambda: job_and_event(srv, event_id)[0][0] == "dead", timeout=30,
               what="the job in the DLQ")
    (state, attempts, last_error, finished_at), (status, ev_error, processed_at) = \
        job_and_event(srv, event_id)
    assert last_error.startswith("unknown_wallet") and int(attempts) == 1, last_error
    assert (status, ev_error) == ("failed", last_error)
    assert marks_seen(srv, event_id) == ["dead"]
    assert int(finished_at) > 0 and processed_at == finished_at, (finished_at, processed_at)


def test_racing_retries_and_deletes_of_a_dead_job_act_once(start_server):
    """A dead job retried and deleted from eight connections at once: one
    200, every other 409 job_not_dead (a retry won: the job is available)
    or 404 job_not_found (a delete won), never 500. On PostgreSQL (each
    unit its own transaction on four writers) the losers' guarded UPDATE or
    DELETE waits for the winner's commit and changes no row; the unit reads
    why (queue.c's why_not_dead)."""
    pg = backend_name() == "pg"
    srv = start_server(env={"SETTLED_WORKERS": "0",
                            **({"SETTLED_PG_BATCH_MAX": "1", "SETTLED_PG_WRITE_CONNS": "4"}
                               if pg else {})})
    w = new_wallet()
    assert srv.register(w).status == 201
    for rnd in range(4):
        event_id = pay(srv, w, 25 + rnd)
        store_exec(srv, "UPDATE jobs SET state = 'dead', finished_at = 1"
                        f" WHERE kind = 'webhook.process' AND payload LIKE '%{event_id}%'")
        job_id = store_rows(srv, "SELECT id FROM jobs WHERE kind = 'webhook.process'"
                                 f" AND payload LIKE '%{event_id}%'")[0][0]
        reqs = [{"method": "POST" if i % 2 == 0 else "DELETE",
                 "path": f"/api/admin/dlq/{job_id}" + ("/retry" if i % 2 == 0 else ""),
                 "headers": ADMIN} for i in range(8)]
        results = concurrent_requests(srv.port, reqs)
        won = [(i, r) for i, r in enumerate(results) if r.status == 200]
        assert len(won) == 1, [(r.status, r.json) for r in results]
        retried = won[0][0] % 2 == 0
        for i, r in enumerate(results):
            if i == won[0][0]:
                continue
            if retried:
                assert r.json["error"] == "job_not_dead" and r.status == 409, (r.status, r.json)
                assert r.json["state"] == "available", r.json
            else:
                assert r.json["error"] == "job_not_found" and r.status == 404, (r.status, r.json)
        left = store_rows(srv, f"SELECT state, attempts FROM jobs WHERE id = {job_id}")
        assert left == ([("available", "0")] if retried else []), left
