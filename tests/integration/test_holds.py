"""Holds of the Ledger API (SPEC sections 6 and 13; routes_holds.c):
create, capture (all or part), void, expiry; each exactly once, owner-only,
on both backends and under concurrency.

The payer in most tests is a client's account (shop:N:credits) that the
operator funded from the treasury (an admin hold captured into it); the
client then reserves on it and captures to revenue or a wallet.
"""

import sqlite3
import time

import pytest

from conftest import (ADMIN_TOKEN, account_figures as balances, assert_error, backend_name, bearer,
                      concurrent_requests, find_samples, new_key, new_wallet, only_responses,
                      parse_metrics, start_settled, wait_until)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# --------------------------------------------------------------------------
# helpers


def start(start_server, **env):
    return start_settled(start_server, env)


def hold(srv, body, headers=ADMIN, key=None):
    return srv.post("/api/v2/holds", body, headers=headers, key=key)


def capture(srv, hold_id, amount=None, headers=ADMIN, key=None):
    body = None if amount is None else {"amount": str(amount)}
    return srv.post(f"/api/v2/holds/{hold_id}/capture", body, headers=headers, key=key)


def void(srv, hold_id, headers=ADMIN, key=None):
    return srv.post(f"/api/v2/holds/{hold_id}/void", None, headers=headers, key=key)


def get_hold(srv, hold_id, headers=ADMIN):
    return srv.get(f"/api/v2/holds/{hold_id}", headers=headers)


class Client:
    """One API client (a key) of a server."""

    def __init__(self, srv, name="partner"):
        r = srv.post("/api/admin/api-keys", {"name": name}, headers=ADMIN, key=new_key())
        assert r.status == 201, r
        self.srv, self.id, self.key = srv, r.json["client_id"], r.json["key"]
        self.h = bearer(self.key)

    def account(self, name, **fields):
        r = self.srv.post("/api/v2/accounts", {"name": name, **fields}, headers=self.h,
                          key=new_key())
        assert r.status == 201, r
        return r.json

    def q(self, name):
        """How the admin token names this client's account."""
        return f"{self.id}/{name}"


def operator_pays(srv, to, amount):
    """The operator moves amount from the treasury to `to` (a hold captured whole)."""
    r = hold(srv, {"from": "treasury", "to": to, "amount": str(amount)})
    assert r.status == 201, r
    r = capture(srv, r.json["id"])
    assert r.status == 200 and r.json["state"] == "CAPTURED", r


_n = [0]


def funded_account(srv, amount, client=None):
    """(client, name): a client's account holding exactly amount."""
    client = client or Client(srv)
    _n[0] += 1
    name = f"shop:{_n[0]}:credits"
    client.account(name)
    operator_pays(srv, client.q(name), amount)
    assert balances(srv, client.q(name)) == {"balance": amount, "held": 0, "available": amount}
    return client, name


def funded_wallet(srv, amount):
    """A registered wallet holding exactly amount, moved from the treasury
    by the operator (a hold captured whole)."""
    w = new_wallet()
    assert srv.register(w).status == 201
    operator_pays(srv, w, amount)
    assert balances(srv, w) == {"balance": amount, "held": 0, "available": amount}
    return w


def reconcile(srv):
    r = srv.post("/api/admin/reconciliation", None, headers=ADMIN, key=new_key())
    assert r.status in (200, 201), r
    rep = r.json
    bad = {k: v for k, v in rep["checks"].items() if not v["ok"]}
    assert not bad, bad
    return rep


@pytest.fixture
def srv(start_server):
    return start(start_server)


# --------------------------------------------------------------------------
# the life of a hold


def test_create_reserves_without_moving_the_balance(srv):
    c, name = funded_account(srv, 1000)
    w = new_wallet()
    assert srv.register(w).status == 201
    r = hold(srv, {"from": name, "to": w, "amount": "300", "expires_in": 600,
                   "metadata": {"campaign": "spring", "n": 3}}, headers=c.h)
    assert r.status == 201, r
    h = r.json
    assert h["state"] == "PENDING" and h["amount"] == "300" and h["captured"] == "0"
    assert h["from"] == name and h["to"] == w
    assert h["metadata"] == {"campaign": "spring", "n": 3}
    assert h["id"].startswith("hold_") and r.header("Location") == f"/api/v2/holds/{h['id']}"
    assert h["resolved_at"] is None and h["expires_at"] and h["created_at"]
    assert balances(srv, c.q(name)) == {"balance": 1000, "held": 300, "available": 700}
    g = get_hold(srv, h["id"], headers=c.h)
    assert g.status == 200 and g.json == h
    # The operator sees the same hold, naming the account as it would.
    g = get_hold(srv, h["id"])
    assert g.status == 200 and g.json["from"] == c.q(name)


def test_the_operator_holds_on_any_account(srv):
    w = funded_wallet(srv, 1000)
    before = balances(srv, "treasury")
    r = hold(srv, {"from": "treasury", "to": w, "amount": "300"})
    assert r.status == 201 and r.json["from"] == "treasury", r
    after = balances(srv, "treasury")
    assert after["balance"] == before["balance"] and after["held"] == before["held"] + 300
    r = hold(srv, {"from": w, "to": "revenue", "amount": "1000"})
    assert r.status == 201, r
    assert balances(srv, w) == {"balance": 1000, "held": 1000, "available": 0}


def test_default_expiry_is_the_hold_timeout(start_server):
    srv = start(start_server, SETTLED_HOLD_TIMEOUT="90s")
    w = new_wallet()
    assert srv.register(w).status == 201
    r = hold(srv, {"from": "treasury", "to": w, "amount": "5"})
    assert r.status == 201, r

    def ms(t):
        return time.mktime(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S")) * 1000 + int(t[20:23])
    assert ms(r.json["expires_at"]) - ms(r.json["created_at"]) == 90_000


def test_capture_part_releases_the_rest_exactly_once(srv):
    c, name = funded_account(srv, 1000)
    r = hold(srv, {"from": name, "to": "revenue", "amount": "500"}, headers=c.h)
    assert r.status == 201, r
    hid = r.json["id"]
    assert balances(srv, c.q(name)) == {"balance": 1000, "held": 500, "available": 500}
    rev = balances(srv, "revenue")["balance"]

    r = capture(srv, hid, 320, headers=c.h)
    assert r.status == 200, r
    assert r.json["state"] == "CAPTURED" and r.json["captured"] == "320" and r.json["resolved_at"]
    assert balances(srv, c.q(name)) == {"balance": 680, "held": 0, "available": 680}
    assert balances(srv, "revenue")["balance"] == rev + 320

    for again in (lambda: capture(srv, hid, 180, headers=c.h), lambda: capture(srv, hid, headers=c.h),
                  lambda: void(srv, hid, headers=c.h), lambda: void(srv, hid)):
        with srv.unchanged():
            r = again()
        assert_error(r, 409, "hold_not_pending")
        assert r.json["state"] == "CAPTURED"
    assert get_hold(srv, hid, headers=c.h).json["state"] == "CAPTURED"
    assert balances(srv, c.q(name)) == {"balance": 680, "held": 0, "available": 680}
    assert balances(srv, "revenue")["balance"] == rev + 320
    reconcile(srv)


def test_capture_without_amount_takes_all(srv):
    c, name = funded_account(srv, 100)
    w = new_wallet()
    assert srv.register(w).status == 201
    hid = hold(srv, {"from": name, "to": w, "amount": "100"}, headers=c.h).json["id"]
    r = capture(srv, hid, headers=c.h)
    assert r.status == 200 and r.json["captured"] == "100", r
    assert balances(srv, c.q(name)) == {"balance": 0, "held": 0, "available": 0}
    assert balances(srv, w)["balance"] == 100


def test_void_releases_once(srv):
    c, name = funded_account(srv, 100)
    hid = hold(srv, {"from": name, "to": "revenue", "amount": "60"}, headers=c.h).json["id"]
    r = void(srv, hid, headers=c.h)
    assert r.status == 200 and r.json["state"] == "VOIDED" and r.json["captured"] == "0", r
    assert balances(srv, c.q(name)) == {"balance": 100, "held": 0, "available": 100}
    for again in (lambda: void(srv, hid, headers=c.h), lambda: capture(srv, hid, headers=c.h)):
        with srv.unchanged():
            r = again()
        assert_error(r, 409, "hold_not_pending")
        assert r.json["state"] == "VOIDED"
    assert balances(srv, c.q(name)) == {"balance": 100, "held": 0, "available": 100}


def test_a_replayed_capture_is_the_same_answer(srv):
    c, name = funded_account(srv, 100)
    hid = hold(srv, {"from": name, "to": "revenue", "amount": "60"}, headers=c.h).json["id"]
    k = new_key()
    first = capture(srv, hid, 10, headers=c.h, key=k)
    assert first.status == 200
    with srv.unchanged():
        again = capture(srv, hid, 10, headers=c.h, key=k)
    assert again.status == 200 and again.body == first.body
    assert again.header("Idempotent-Replayed") == "true"
    assert balances(srv, c.q(name))["balance"] == 90


def test_a_replayed_create_is_the_same_hold_held_once(srv):
    """The first replay of a create is not in the process's cache: on
    PostgreSQL no read answers it before the handler (ROUTE_KEY_CHECK_BY_RECORD),
    the handler's unit runs again and the key's record insert finds the
    record: the hold it opened is rolled back with the unit. Both with
    funds left for a second hold and without: the same answer, one hold,
    held once; another body under the key is 422 and writes nothing."""
    c, name = funded_account(srv, 100)
    for amount in ("30", "100"):     # leaves 70 (a second would fit) / leaves 0
        k = new_key()
        body = {"from": name, "to": "revenue", "amount": amount}
        first = hold(srv, body, headers=c.h, key=k)
        assert first.status == 201 and first.header("X-Idempotency") == "MISS", first
        with srv.unchanged():
            again = hold(srv, body, headers=c.h, key=k)
            assert again.status == 201 and again.body == first.body, again
            assert again.header("X-Idempotency") == "HIT", again
            other = hold(srv, {**body, "amount": "1"}, headers=c.h, key=k)
            assert_error(other, 422, "idempotency_key_reused")
        assert balances(srv, c.q(name))["held"] == int(amount)
        r = void(srv, first.json["id"], headers=c.h)
        assert r.status == 200, r


def test_expiry_releases_once_and_refuses_a_late_capture(srv):
    c, name = funded_account(srv, 100)
    a = hold(srv, {"from": name, "to": "revenue", "amount": "30", "expires_in": 1},
             headers=c.h).json["id"]
    b = hold(srv, {"from": name, "to": "revenue", "amount": "20", "expires_in": 1},
             headers=c.h).json["id"]
    assert balances(srv, c.q(name))["held"] == 50
    time.sleep(1.05)
    # Whichever comes first, the sweep or this capture: EXPIRED, never captured.
    r = capture(srv, a, headers=c.h)
    assert_error(r, 409, "hold_not_pending")
    assert r.json["state"] == "EXPIRED"
    wait_until(lambda: get_hold(srv, b, headers=c.h).json["state"] == "EXPIRED", timeout=10,
               what="the sweep to expire the hold")
    assert balances(srv, c.q(name)) == {"balance": 100, "held": 0, "available": 100}
    for hid in (a, b):
        with srv.unchanged():
            r = void(srv, hid, headers=c.h)
        assert_error(r, 409, "hold_not_pending")
        assert r.json["state"] == "EXPIRED"
    assert get_hold(srv, a, headers=c.h).json["captured"] == "0"
    rep = reconcile(srv)
    assert rep["counts"]["holds"]["expired"] >= 2


def test_metrics_count_holds_by_state(srv):
    c, name = funded_account(srv, 100)
    hold(srv, {"from": name, "to": "revenue", "amount": "7"}, headers=c.h)
    hid = hold(srv, {"from": name, "to": "revenue", "amount": "3"}, headers=c.h).json["id"]
    void(srv, hid, headers=c.h)
    rep = reconcile(srv)
    m = parse_metrics(srv.metrics())
    states = {lab["state"]: v for _, lab, v in find_samples(m, "settled_holds")}
    assert set(states) == {"PENDING", "CAPTURED", "VOIDED", "EXPIRED"}
    assert states["PENDING"] == rep["counts"]["holds"]["pending"] >= 1
    assert states["VOIDED"] == rep["counts"]["holds"]["released"] >= 1
    assert states["CAPTURED"] == rep["counts"]["holds"]["captured"] >= 1   # the funding
    held = find_samples(m, "settled_held_amount")[0][2]
    assert held == int(rep["counts"]["held_total"]) == 7


def test_list_is_the_callers_filtered_by_state_and_paged(srv):
    c, name = funded_account(srv, 100)
    other, oname = funded_account(srv, 100)
    ids = [hold(srv, {"from": name, "to": "revenue", "amount": "1"}, headers=c.h).json["id"]
           for _ in range(5)]
    theirs = hold(srv, {"from": oname, "to": "revenue", "amount": "1"}, headers=other.h).json["id"]
    void(srv, ids[0], headers=c.h)
    seen, after = [], None
    while True:
        q = "/api/v2/holds?state=PENDING&limit=2" + (f"&after={after}" if after else "")
        r = srv.get(q, headers=c.h)
        assert r.status == 200, r
        assert len(r.json["data"]) <= 2
        seen += [h["id"] for h in r.json["data"]]
        assert all(h["state"] == "PENDING" for h in r.json["data"])
        after = r.json["next_after"]
        if not after:
            break
    assert seen == sorted(ids[1:])   # id order: creation time, then random within a ms
    everyone = srv.get("/api/v2/holds?state=PENDING&limit=100", headers=ADMIN).json["data"]
    assert set(ids[1:]) | {theirs} <= {h["id"] for h in everyone}


# --------------------------------------------------------------------------
# refusals: status, code, nothing written


def test_insufficient_funds_names_the_account(srv):
    c, name = funded_account(srv, 100)
    hold(srv, {"from": name, "to": "revenue", "amount": "80"}, headers=c.h)
    with srv.unchanged():
        r = hold(srv, {"from": name, "to": "revenue", "amount": "21"}, headers=c.h)
    assert_error(r, 422, "insufficient_funds")
    assert r.json["account"] == name
    assert balances(srv, c.q(name)) == {"balance": 100, "held": 80, "available": 20}
    # An overdraft account may go below zero.
    c.account("float", overdraft=True)
    r = hold(srv, {"from": "float", "to": "revenue", "amount": "500"}, headers=c.h)
    assert r.status == 201, r


@pytest.mark.parametrize("patch,code,field", [
    ({"amount": "0"}, "invalid_amount", "amount"),
    ({"amount": "-5"}, "invalid_amount", "amount"),
    ({"amount": 5}, "invalid_amount", "amount"),
    ({"amount": "1.5"}, "invalid_amount", "amount"),
    ({"amount": "+5"}, "invalid_amount", "amount"),
    ({"amount": "9223372036854775808"}, "invalid_amount", "amount"),
    ({"expires_in": 0}, "invalid_expires_in", "expires_in"),
    ({"expires_in": -1}, "invalid_expires_in", "expires_in"),
    ({"expires_in": "60"}, "invalid_expires_in", "expires_in"),
    ({"expires_in": 1.5}, "invalid_expires_in", "expires_in"),
    ({"expires_in": 31536001}, "invalid_expires_in", "expires_in"),
    ({"metadata": [1]}, "invalid_metadata", "metadata"),
    ({"metadata": "x"}, "invalid_metadata", "metadata"),
    ({"metadata": {"k": "v" * 5000}}, "invalid_metadata", "metadata"),
    ({"from": ""}, "invalid_account", "from"),
    ({"to": 7}, "invalid_account", "to"),
    ({"colour": "red"}, "unknown_field", "colour"),
])
def test_bad_create_bodies_are_400(srv, patch, code, field):
    c, name = funded_account(srv, 100)
    body = {"from": name, "to": "revenue", "amount": "10"}
    body.update(patch)
    with srv.unchanged():
        assert_error(hold(srv, body, headers=c.h), 400, code, field=field)
    assert balances(srv, c.q(name)) == {"balance": 100, "held": 0, "available": 100}


def test_accounts_a_client_may_not_use_are_unknown(srv):
    c, name = funded_account(srv, 100)
    other, oname = funded_account(srv, 100)
    w = funded_wallet(srv, 100)
    cases = [
        ({"from": "nope", "to": "revenue"}, "from"),          # no such account
        ({"from": oname, "to": "revenue"}, "from"),           # the other client's name is not mine
        ({"from": other.q(oname), "to": "revenue"}, "from"),  # nor its qualified name
        ({"from": w, "to": "revenue"}, "from"),               # a wallet: only its own claim
        ({"from": "treasury", "to": name}, "from"),           # the operator's
        ({"from": name, "to": "treasury"}, "to"),             # not a destination for a client
        ({"from": name, "to": other.q(oname)}, "to"),
        ({"from": name, "to": new_wallet()}, "to"),           # not registered
    ]
    for body, field in cases:
        with srv.unchanged():
            r = hold(srv, {**body, "amount": "1"}, headers=c.h)
        assert_error(r, 422, "unknown_account", field=field)
    with srv.unchanged():
        assert_error(hold(srv, {"from": name, "to": name, "amount": "1"}, headers=c.h), 400,
                     "invalid_account", field="to")
    for acct in (c.q(name), other.q(oname), w, "treasury"):
        assert balances(srv, acct)["held"] == 0


def test_capture_refusals(srv):
    c, name = funded_account(srv, 100)
    hid = hold(srv, {"from": name, "to": "revenue", "amount": "50"}, headers=c.h).json["id"]
    with srv.unchanged():
        assert_error(capture(srv, hid, 51, headers=c.h), 400, "invalid_amount", field="amount")
        assert_error(capture(srv, hid, 0, headers=c.h), 400, "invalid_amount", field="amount")
        r = srv.post(f"/api/v2/holds/{hid}/capture", {"amount": "5", "x": 1}, headers=c.h)
        assert_error(r, 400, "unknown_field", field="x")
        r = srv.post(f"/api/v2/holds/{hid}/void", {"amount": "5"}, headers=c.h)
        assert_error(r, 400, "unknown_field", field="amount")
        for f in (lambda: capture(srv, "hold_nope", headers=c.h),
                  lambda: void(srv, "hold_nope", headers=c.h),
                  lambda: get_hold(srv, "hold_nope", headers=c.h),
                  lambda: get_hold(srv, "x" * 300, headers=c.h)):
            assert_error(f(), 404, "not_found")
    assert get_hold(srv, hid, headers=c.h).json["state"] == "PENDING"
    assert balances(srv, c.q(name)) == {"balance": 100, "held": 50, "available": 50}


def refuse_resolving(srv, hold_id, on=True):
    """A trigger on the store that refuses to move hold_id out of pending
    (installed behind the server's back, as test_tampering.py goes around
    the store): the store refuses the resolution while the hold stays
    pending, which no race can do."""
    if backend_name() == "sqlite":
        con = sqlite3.connect(str(srv.backend.path), timeout=30, isolation_level=None)
        try:
            con.execute("DROP TRIGGER IF EXISTS test_refuse_resolving")
            if on:
                con.execute(f"CREATE TRIGGER test_refuse_resolving BEFORE UPDATE OF status ON holds"
                            f" WHEN OLD.id = '{hold_id}' AND NEW.status <> 'pending'"
                            f" BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        finally:
            con.close()
        return
    cmds = ["DROP TRIGGER IF EXISTS test_refuse_resolving ON holds"]
    if on:
        cmds += ["CREATE OR REPLACE FUNCTION test_refuse_resolving() RETURNS trigger LANGUAGE plpgsql"
                 " AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
                 f"CREATE TRIGGER test_refuse_resolving BEFORE UPDATE OF status ON holds FOR EACH ROW"
                 f" WHEN (OLD.id = '{hold_id}' AND NEW.status <> 'pending')"
                 f" EXECUTE FUNCTION test_refuse_resolving()"]
    srv.backend.psql(*cmds)


def test_a_resolution_refused_while_pending_is_an_internal_error(srv):
    """The store refusing to resolve a hold that is still pending is no
    conflict a client caused: 500 internal_error (documented), never the
    undocumented 409 "conflict" of a bare result code; nothing is written
    and the Idempotency-Key is released, so the same request succeeds once
    the fault is gone."""
    c, name = funded_account(srv, 100)
    hid = hold(srv, {"from": name, "to": "revenue", "amount": "50"}, headers=c.h).json["id"]
    keys = {"capture": new_key(), "void": new_key()}
    refuse_resolving(srv, hid)
    with srv.unchanged():
        assert_error(capture(srv, hid, 20, headers=c.h, key=keys["capture"]), 500, "internal_error")
        assert_error(void(srv, hid, headers=c.h, key=keys["void"]), 500, "internal_error")
    assert get_hold(srv, hid, headers=c.h).json["state"] == "PENDING"
    assert balances(srv, c.q(name)) == {"balance": 100, "held": 50, "available": 50}
    refuse_resolving(srv, hid, on=False)
    r = capture(srv, hid, 20, headers=c.h, key=keys["capture"])
    assert r.status == 200 and r.json["state"] == "CAPTURED" and r.json["captured"] == "20", r
    assert balances(srv, c.q(name)) == {"balance": 80, "held": 0, "available": 80}
    reconcile(srv)


def test_bad_list_parameters_are_400(srv):
    for q, code, field in (("state=pending", "invalid_state", "state"),
                           ("state=RELEASED", "invalid_state", "state"),
                           ("limit=0", "invalid_parameter", "limit"),
                           ("limit=x", "invalid_parameter", "limit"),
                           ("after=" + "h" * 60, "invalid_cursor", "after")):
        assert_error(srv.get(f"/api/v2/holds?{q}", headers=ADMIN), 400, code, field=field)


def test_another_clients_hold_is_not_found(srv):
    c, name = funded_account(srv, 100)
    hid = hold(srv, {"from": name, "to": "revenue", "amount": "10"}, headers=c.h).json["id"]
    op_hold = hold(srv, {"from": "treasury", "to": "revenue", "amount": "1"}).json["id"]
    other = Client(srv, "other")
    for h in (hid, op_hold):
        with srv.unchanged():
            for f in (lambda: get_hold(srv, h, headers=other.h),
                      lambda: capture(srv, h, headers=other.h),
                      lambda: void(srv, h, headers=other.h)):
                assert_error(f(), 404, "not_found")
    r = srv.get("/api/v2/holds", headers=other.h)
    assert r.status == 200 and r.json["data"] == [], r
    assert get_hold(srv, hid, headers=c.h).json["state"] == "PENDING"
    assert balances(srv, c.q(name))["held"] == 10
    # The operator acts on the client's hold, which stays the client's.
    r = capture(srv, hid, 4)
    assert r.status == 200 and r.json["captured"] == "4", r
    assert get_hold(srv, hid, headers=c.h).json["state"] == "CAPTURED"


def test_the_operator_holding_on_a_clients_account_makes_it_the_clients(srv):
    c, name = funded_account(srv, 100)
    hid = hold(srv, {"from": c.q(name), "to": "revenue", "amount": "10"}).json["id"]
    r = get_hold(srv, hid, headers=c.h)
    assert r.status == 200 and r.json["from"] == name, r
    assert void(srv, hid, headers=c.h).status == 200


def test_unauthenticated_is_401(srv):
    with srv.unchanged():
        r = srv.post("/api/v2/holds", {"from": "treasury", "to": "revenue", "amount": "1"},
                     key=new_key())
    assert r.status == 401, r


# --------------------------------------------------------------------------
# concurrency


def race_holds(srv_list, payer, amount, headers, n=32):
    """n holds of amount on payer at once, spread over the instances."""
    return only_responses(concurrent_requests(None, [
        {"method": "POST", "path": "/api/v2/holds", "port": srv_list[i % len(srv_list)].port,
         "json_body": {"from": payer, "to": "revenue", "amount": str(amount)},
         "headers": {**headers, "Idempotency-Key": new_key()}}
        for i in range(n)]))


def check_race(srv, results, payer, qname, amount, covered):
    statuses = sorted(r.status for r in results)
    assert statuses.count(201) == covered, statuses
    assert statuses.count(422) == len(results) - covered, statuses
    for r in results:
        if r.status == 422:
            assert r.json["error"] == "insufficient_funds" and r.json["account"] == payer
    assert balances(srv, qname) == {"balance": covered * amount, "held": covered * amount,
                                    "available": 0}
    reconcile(srv)


def test_32_concurrent_holds_exactly_6_succeed(srv):
    c, name = funded_account(srv, 6 * 25)
    results = race_holds([srv], name, 25, c.h)
    check_race(srv, results, name, c.q(name), 25, 6)


@pytest.mark.skipif(backend_name() != "pg", reason="PostgreSQL group-commit settings")
def test_concurrent_holds_without_group_commit_on_two_writers(start_server):
    """SETTLED_PG_BATCH_MAX=1 (every unit its own transaction) on
    SETTLED_PG_WRITE_CONNS=2: the same race still has exactly its answers,
    and the store says it took the settings."""
    srv = start(start_server, SETTLED_PG_BATCH_MAX="1", SETTLED_PG_WRITE_CONNS="2",
                SETTLED_PG_LOCK_TIMEOUT="50ms")
    c, name = funded_account(srv, 6 * 25)
    check_race(srv, race_holds([srv], name, 25, c.h), name, c.q(name), 25, 6)
    c, name = funded_account(srv, 1000)
    ids = [hold(srv, {"from": name, "to": "revenue", "amount": "10"}, headers=c.h).json["id"]
           for _ in range(8)]
    check_resolved_once(srv, ids, race_resolutions([srv], ids, c.h), name, c.q(name), 1000)
    assert srv.stop() == 0
    out = srv.stdout().decode("utf-8", "replace")
    assert "2 writers" in out and "batches of up to 1," in out and "lock timeout 50 ms" in out, out[-3000:]


def race_resolutions(servers, ids, headers):
    """For each hold, two captures (one of part) and two voids at once,
    spread over servers; all released together."""
    reqs = []
    for hid in ids:
        for n, (path, body) in enumerate((("capture", None), ("void", None),
                                          ("capture", {"amount": "4"}), ("void", None))):
            reqs.append({"method": "POST", "path": f"/api/v2/holds/{hid}/{path}",
                         "json_body": body, "port": servers[n % len(servers)].port,
                         "headers": {**headers, "Idempotency-Key": new_key()}})
    return only_responses(concurrent_requests(None, reqs))


def check_resolved_once(srv, ids, results, payer, qname, funded):
    for i, hid in enumerate(ids):
        mine = results[4 * i:4 * i + 4]
        assert sorted(r.status for r in mine) == [200, 409, 409, 409], [r.status for r in mine]
        winner = next(r for r in mine if r.status == 200).json
        for r in mine:
            if r.status == 409:
                assert r.json["error"] == "hold_not_pending" and r.json["state"] == winner["state"]
    spent = 0
    for hid in ids:
        g = get_hold(srv, hid).json
        assert g["state"] in ("CAPTURED", "VOIDED"), g
        spent += int(g["captured"])
        assert g["captured"] in (("10", "4") if g["state"] == "CAPTURED" else ("0",)), g
    assert balances(srv, qname) == {"balance": funded - spent, "held": 0, "available": funded - spent}
    reconcile(srv)


def test_concurrent_capture_and_void_resolve_once(srv):
    c, name = funded_account(srv, 1000)
    ids = [hold(srv, {"from": name, "to": "revenue", "amount": "10"}, headers=c.h).json["id"]
           for _ in range(8)]
    results = race_resolutions([srv], ids, c.h)
    check_resolved_once(srv, ids, results, name, c.q(name), 1000)


def test_late_captures_and_voids_racing_each_other_and_the_sweep_are_409(start_server):
    """Holds past their expiry, each captured and voided from four
    connections at once while the sweep runs: whoever expires a hold, the
    others are 409 hold_not_pending EXPIRED, never 500. On PostgreSQL each
    unit its own transaction on four writers, so a late capture that read
    the hold still pending can find it expired by another connection's
    commit before its own expiry lands (it answered 500 internal_error)."""
    pg = backend_name() == "pg"
    srv = start(start_server, **({"SETTLED_PG_BATCH_MAX": "1", "SETTLED_PG_WRITE_CONNS": "4"}
                                 if pg else {}))
    c, name = funded_account(srv, 10000)
    for rnd in range(3):
        ids = []
        for _ in range(16):
            r = hold(srv, {"from": name, "to": "revenue", "amount": "10", "expires_in": 1},
                     headers=c.h)
            assert r.status == 201, r
            ids.append(r.json["id"])
        # Past every hold's expiry (1 s after its create, on the clock the
        # server shares with us); from then on whichever request or sweep
        # comes first expires it, and every answer is the same.
        time.sleep(1.1)
        reqs = []
        for hid in ids:
            for path in ("capture", "void", "capture", "void"):
                reqs.append({"method": "POST", "path": f"/api/v2/holds/{hid}/{path}",
                             "headers": {**c.h, "Idempotency-Key": new_key()}})
        results = only_responses(concurrent_requests(srv.port, reqs))
        for i, hid in enumerate(ids):
            mine = results[4 * i:4 * i + 4]
            for r in mine:
                assert r.status == 409 and r.json["error"] == "hold_not_pending" \
                    and r.json["state"] == "EXPIRED", (rnd, hid, r.status, r.json)
            assert get_hold(srv, hid, headers=c.h).json["state"] == "EXPIRED"
        assert balances(srv, c.q(name)) == {"balance": 10000, "held": 0, "available": 10000}
    reconcile(srv)


@pytest.fixture
def two_instances(start_server):
    """Two servers on one PostgreSQL database and Redis prefix (as in
    test_multi_instance.py); stopped here before the first one's database
    is dropped under the second."""
    first = start(start_server)
    second = start_server(env=first.backend.server_env())
    assert second.get("/health/ready").status == 200
    yield [first, second]
    for s in (second, first):
        if s.running:
            assert s.stop() == 0


@pytest.mark.skipif(backend_name() != "pg", reason="two instances share a PostgreSQL store only")
def test_32_concurrent_holds_on_two_instances_exactly_6_succeed(two_instances):
    a, b = two_instances
    c, name = funded_account(a, 6 * 25)
    results = race_holds([a, b], name, 25, c.h)
    check_race(a, results, name, c.q(name), 25, 6)


@pytest.mark.skipif(backend_name() != "pg", reason="two instances share a PostgreSQL store only")
def test_concurrent_capture_and_void_on_two_instances_resolve_once(two_instances):
    a, b = two_instances
    c, name = funded_account(a, 1000)
    ids = [hold(a, {"from": name, "to": "revenue", "amount": "10"}, headers=c.h).json["id"]
           for _ in range(8)]
    results = race_resolutions([a, b], ids, c.h)
    check_resolved_once(a, ids, results, name, c.q(name), 1000)


# --------------------------------------------------------------------------
# the dispatcher's rules apply: money-moving, v2 rate limit, rotation


def test_every_hold_post_needs_a_key_when_keys_are_required(start_server):
    srv = start(start_server, SETTLED_REQUIRE_IDEMPOTENCY_KEY="1")
    c = Client(srv)
    c.account("a")
    r = srv.post("/api/v2/transfers", {"from": "treasury", "to": c.q("a"), "amount": "10"},
                 headers=ADMIN, key=new_key())
    assert r.status == 201, r
    hid = hold(srv, {"from": "a", "to": "revenue", "amount": "5"}, headers=c.h, key=new_key()).json["id"]
    with srv.unchanged():
        assert_error(hold(srv, {"from": "a", "to": "revenue", "amount": "5"}, headers=c.h), 400,
                     "idempotency_key_required")
        assert_error(capture(srv, hid, headers=c.h), 400, "idempotency_key_required")
        assert_error(void(srv, hid, headers=c.h), 400, "idempotency_key_required")
    assert get_hold(srv, hid, headers=c.h).json["state"] == "PENDING"


def test_holds_count_against_the_clients_v2_limit(start_server):
    srv = start(start_server, RL_API_PER_MIN="3")
    c = Client(srv)
    for _ in range(3):
        assert srv.get("/api/v2/holds", headers=c.h).status == 200
    with srv.unchanged():
        r = hold(srv, {"from": "a", "to": "revenue", "amount": "5"}, headers=c.h, key=new_key())
    assert_error(r, 429, "rate_limited")
    assert r.header("Retry-After")
    # Another client has its own budget.
    assert srv.get("/api/v2/holds", headers=Client(srv, "other").h).status == 200


def test_a_rotated_key_keeps_its_clients_holds(srv):
    c, name = funded_account(srv, 100)
    hid = hold(srv, {"from": name, "to": "revenue", "amount": "30"}, headers=c.h).json["id"]
    # The client's first key's id is its client id.
    r = srv.post(f"/api/admin/api-keys/{c.id}/rotate", None, headers=ADMIN, key=new_key())
    assert r.status == 201, r
    new = bearer(r.json["key"])
    assert get_hold(srv, hid, headers=new).status == 200
    r = capture(srv, hid, 12, headers=new)
    assert r.status == 200 and r.json["captured"] == "12", r


def nested(depth):
    v = {"leaf": True}
    for _ in range(depth - 1):
        v = {"k": v}
    return v


def test_metadata_nested_deeper_than_answers_go_is_refused(srv):
    """Metadata is stored as the text the answers later show it with: what
    cannot be written as JSON (nesting past the writer's limit of 64) is
    refused at the door, not stored to fail every read of the hold."""
    c, name = funded_account(srv, 100)
    body = {"from": name, "to": "revenue", "amount": "10", "metadata": nested(70)}
    with srv.unchanged():
        assert_error(hold(srv, body, headers=c.h), 400, "invalid_metadata", field="metadata")
    assert balances(srv, c.q(name)) == {"balance": 100, "held": 0, "available": 100}
    # Nesting the writer can show is stored and shown back as it came.
    body["metadata"] = nested(40)
    r = hold(srv, body, headers=c.h)
    assert r.status == 201, r
    assert r.json["metadata"] == nested(40)
