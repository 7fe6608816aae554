"""The Ledger API's clients, accounts and transfers (SPEC section 13):
POST/GET /api/v2/accounts, POST/GET /api/v2/transfers, and ownership:
another client's object is 404 not_found, exactly as a missing one, on
every route, and nothing changes; the admin token sees everything.

Every error answer is checked for its status, code and that nothing was
written (``srv.unchanged()``: row counts of every table; balances are
compared where a refused request could only have updated rows).
"""

import secrets

import pytest

from conftest import (ADMIN_TOKEN, assert_error, backend_name, concurrent_requests, diff_snapshots,
                      find_samples, new_key, new_wallet, parse_metrics, store_rows as rows,
                      wait_until)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def balances(srv):
    return rows(srv, "SELECT id, balance, held FROM account_balances ORDER BY id")


def start(start_server, **env):
    env.setdefault("SETTLED_SIM_CONFIRM_MS", "86400000")
    srv = start_server(env=env)
    wait_until(lambda: srv.snapshot().get("reconciliation_reports", 1) >= 1, timeout=10,
               what="the first reconciliation report")
    return srv


@pytest.fixture
def srv(start_server):
    return start(start_server)


class Client:
    """One API client (a key) of a server."""

    def __init__(self, srv, name="partner"):
        r = srv.post("/api/admin/api-keys", {"name": name}, headers=ADMIN, key=new_key())
        assert r.status == 201, r
        self.srv, self.id, self.key = srv, r.json["client_id"], r.json["key"]
        self.h = {"Authorization": f"Bearer {self.key}"}

    def post(self, path, body=None, key="new", **kw):
        return self.srv.post(path, body, headers=self.h, key=new_key() if key == "new" else key, **kw)

    def get(self, path, **kw):
        return self.srv.get(path, headers=self.h, **kw)

    def account(self, name, **fields):
        r = self.post("/api/v2/accounts", {"name": name, **fields})
        assert r.status == 201, r
        return r.json


def admin_transfer(srv, frm, to, amount, key="new"):
    return srv.post("/api/v2/transfers", {"from": frm, "to": to, "amount": str(amount)}, headers=ADMIN,
                    key=new_key() if key == "new" else key)


# --------------------------------------------------------------------------
# accounts


def test_create_an_account(srv):
    c = Client(srv)
    r = c.post("/api/v2/accounts", {"name": "shop:42:credits", "metadata": {"shop": 42}})
    assert r.status == 201, r
    a = r.json
    assert a["name"] == "shop:42:credits" and a["kind"] == "client" and a["client_id"] == c.id
    assert (a["balance"], a["held"], a["available"]) == ("0", "0", "0")
    assert a["overdraft"] is False and a["metadata"] == {"shop": 42}
    assert r.headers["Location"] == "/api/v2/accounts/shop:42:credits"
    got = c.get("/api/v2/accounts/shop:42:credits")
    assert got.status == 200 and got.json["id"] == a["id"], got
    od = c.account("overdrawn", overdraft=True)
    assert od["overdraft"] is True and od["may_go_negative"] is True


def test_an_account_name_is_unique_per_client(srv):
    a, b = Client(srv, "a"), Client(srv, "b")
    a.account("credits")
    assert b.account("credits")["client_id"] == b.id, "another client may use the name"
    with srv.unchanged():
        body = assert_error(a.post("/api/v2/accounts", {"name": "credits"}, key=None), 409,
                            "account_exists", field="name")
        assert body["name"] == "credits"


def test_racing_creates_of_one_name_answer_account_exists(srv):
    """16 creates of one name at once: one 201, every other the documented
    409 account_exists (the unique index decides the race, never a 5xx or a
    bare "conflict"), and exactly one row written."""
    c = Client(srv)
    before = srv.snapshot()
    results = concurrent_requests(srv.port, [
        {"method": "POST", "path": "/api/v2/accounts", "json_body": {"name": "raced"}, "headers": c.h}
        for _ in range(16)])
    assert sorted(r.status for r in results) == [201] + [409] * 15, [r.status for r in results]
    for r in results:
        if r.status == 409:
            assert_error(r, 409, "account_exists", field="name")
    assert diff_snapshots(before, srv.snapshot()) == {"accounts": (before["accounts"], before["accounts"] + 1)}


@pytest.mark.parametrize("name", ["", "a b", "x" * 129, "0xabc", "0X1", "treasury", "revenue",
                                  "external", "a/b", "é", 12, None, ["a"]])
def test_a_bad_account_name_is_400(srv, name):
    c = Client(srv)
    with srv.unchanged():
        assert_error(c.post("/api/v2/accounts", {"name": name}, key=None), 400,
                     "invalid_account_name", field="name")
    assert c.account("x" * 128)["name"] == "x" * 128


def test_transfers_sent_at_once_each_get_their_own_answer(srv):
    """32 one-posting transfers at once, each on its own connection: on
    PostgreSQL the writer posts those of one batch together in a few
    statements (transfer_merge), on SQLite each in its unit. Whichever
    batches they fall in, every answer is its own: a funded account's 201
    names its own transaction, entries and description, a short account's
    422 names that account, one account's two transfers take its funds
    once, and the ledger holds exactly the 201s."""
    c = Client(srv)
    names = [f"m{i}" for i in range(16)]
    for n in names:
        c.account(n)
    for n in names[:8]:  # m0..m7 hold 5; m8..m15 nothing
        assert admin_transfer(srv, "treasury", f"{c.id}/{n}", 5).status == 201
    before_rev = bal(srv, "revenue")
    # every account pays 5 twice: a funded one can pay once
    reqs = [{"method": "POST", "path": "/api/v2/transfers", "headers": c.h,
             "json_body": {"from": n, "to": "revenue", "amount": "5", "description": f"{n}/{k}"}}
            for k in range(2) for n in names]
    results = concurrent_requests(srv.port, reqs)
    ids = set()
    for req, r in zip(reqs, results):
        frm = req["json_body"]["from"]
        if r.status == 201:
            assert frm in names[:8], (frm, r)
            assert r.json["description"] == req["json_body"]["description"], r.json
            assert [(e["account"], e["direction"], e["amount"]) for e in r.json["entries"]] == [
                (frm, "debit", "5"), ("revenue", "credit", "5")], r.json
            assert r.headers["Location"] == "/api/v2/transfers/" + r.json["id"]
            got = c.get(r.headers["Location"])
            assert got.status == 200 and got.json == r.json, (got, r.json)
            ids.add(r.json["id"])
        else:
            body = assert_error(r, 422, "insufficient_funds", field="from")
            assert body["account"] == frm, body
    paid = sorted(req["json_body"]["from"] for req, r in zip(reqs, results) if r.status == 201)
    assert paid == names[:8], paid  # each funded account exactly once
    assert len(ids) == 8
    for n in names:
        assert bal(srv, n, c.h) == 0
    assert bal(srv, "revenue") == before_rev + 40
    assert rows(srv, "SELECT count(*) FROM ledger_tx WHERE description LIKE 'm%/%'") == [("8",)]
    assert_sum_zero(srv)


def unit_retries(srv):
    samples = parse_metrics(srv.metrics())
    return {s[1]["cause"]: s[2] for s in find_samples(samples, "settled_store_unit_retries_total")}


@pytest.mark.skipif(backend_name() != "pg", reason="PostgreSQL's way of posting a transfer")
def test_a_post_refused_after_the_funds_check_runs_again_under_its_savepoint(srv):
    """PostgreSQL: a transfer's first run posts without a savepoint of its
    own (a subtransaction inside the unit's: about a quarter of its database
    work). When the store refuses the post anyway, as accounts_available
    does when a concurrent writer took the funds after the check, the unit
    rolls back alone and the store runs it again (a retry of cause busy);
    that run checks the funds afresh and posts under tx_nested, so its
    answer is what the funds and the store say then. A trigger the test adds
    refuses chosen closing rows: every other one once (the first run
    refused, the second accepted: 201, one posting), or always (the answer
    is the one the savepointed post gives, 422 insufficient_funds after its
    reposts, nothing written). Without the change no unit runs again."""
    c = Client(srv)
    c.account("a")
    assert admin_transfer(srv, "treasury", f"{c.id}/a", 100).status == 201
    srv.backend.psql(
        "CREATE SEQUENCE test_refusals",
        "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.description = 'refuse always' THEN"
        "  RAISE EXCEPTION 'test: refused' USING ERRCODE = 'check_violation';"
        " END IF;"
        " IF NEW.description = 'refuse once' THEN"
        "  IF nextval('test_refusals') % 2 = 1 THEN"
        "   RAISE EXCEPTION 'test: refused' USING ERRCODE = 'check_violation';"
        "  END IF;"
        " END IF;"
        " RETURN NEW; END $$",
        "CREATE TRIGGER test_refuse BEFORE INSERT ON ledger_tx FOR EACH ROW EXECUTE FUNCTION test_refuse()")
    busy = unit_retries(srv)["busy"]
    # With and without an Idempotency-Key (the keyed unit nests the
    # handler in a savepoint of the dispatcher's and records its answer).
    for key in ("new", None):
        r = c.post("/api/v2/transfers", {"from": "a", "to": "revenue", "amount": "10",
                                         "description": "refuse once"}, key=key)
        assert r.status == 201, r
        assert [(e["account"], e["direction"], e["amount"]) for e in r.json["entries"]] == [
            ("a", "debit", "10"), ("revenue", "credit", "10")], r.json
    assert rows(srv, "SELECT count(*) FROM ledger_tx WHERE description = 'refuse once'") == [("2",)]
    assert bal(srv, "a", c.h) == 80
    assert unit_retries(srv)["busy"] >= busy + 2
    before = balances(srv)
    with srv.unchanged():
        body = assert_error(c.post("/api/v2/transfers", {"from": "a", "to": "revenue", "amount": "10",
                                                         "description": "refuse always"}, key=None),
                            422, "insufficient_funds", field="from")
        assert body["account"] == "a", body
    assert balances(srv) == before
    assert unit_retries(srv)["busy"] >= busy + 3
    assert_sum_zero(srv)


@pytest.mark.parametrize("body, code, field", [
    ({"name": "a", "bogus": 1}, "unknown_field", "bogus"),
    ({"name": "a", "overdraft": "yes"}, "invalid_body", "overdraft"),
    ({"name": "a", "metadata": [1]}, "invalid_metadata", "metadata"),
    ({"name": "a", "metadata": {"k": "v" * 4200}}, "invalid_metadata", "metadata"),
])
def test_a_bad_account_body_is_400(srv, body, code, field):
    c = Client(srv)
    with srv.unchanged():
        assert_error(c.post("/api/v2/accounts", body, key=None), 400, code, field=field)


def test_the_admin_token_creates_no_account(srv):
    with srv.unchanged():
        assert_error(srv.post("/api/v2/accounts", {"name": "a"}, headers=ADMIN), 403, "forbidden")


def test_list_accounts_is_the_callers_keyset_paginated(srv):
    a, b = Client(srv, "a"), Client(srv, "b")
    names = sorted(f"acct-{i:02d}" for i in range(7))
    for n in names:
        a.account(n)
    b.account("b-only")
    seen, after = [], None
    while True:
        r = a.get("/api/v2/accounts?limit=3" + (f"&after={after}" if after else ""))
        assert r.status == 200, r
        seen += [x["name"] for x in r.json["data"]]
        after = r.json["next_after"]
        if after is None:
            break
    assert seen == names
    assert [x["name"] for x in b.get("/api/v2/accounts").json["data"]] == ["b-only"]
    # The admin token lists every client's accounts, qualified.
    every = srv.get("/api/v2/accounts?limit=500", headers=ADMIN).json["data"]
    assert sorted(x["name"] for x in every) == sorted([f"{a.id}/{n}" for n in names] + [f"{b.id}/b-only"])
    assert_error(a.get("/api/v2/accounts?limit=0"), 400, "invalid_parameter", field="limit")


def test_reading_accounts_follows_ownership(srv):
    a, b = Client(srv, "a"), Client(srv, "b")
    mine = a.account("mine")
    w = new_wallet()
    assert srv.register(w).status == 201
    missing = assert_error(a.get("/api/v2/accounts/nothing-here"), 404, "not_found")
    # Another client's account, by name or qualified: exactly as missing.
    for path in ("/api/v2/accounts/mine", f"/api/v2/accounts/{a.id}/mine"):
        assert b.get(path).json == missing
    assert b.get(f"/api/v2/accounts/{b.id}/mine").json == missing
    # System accounts are the operator's.
    for name in ("treasury", "revenue", "external"):
        assert b.get(f"/api/v2/accounts/{name}").json == missing
        assert srv.get(f"/api/v2/accounts/{name}", headers=ADMIN).status == 200
    # A client's own qualified name; the admin token's qualified name.
    assert a.get(f"/api/v2/accounts/{a.id}/mine").json["id"] == mine["id"]
    adm = srv.get(f"/api/v2/accounts/{a.id}/mine", headers=ADMIN)
    assert adm.status == 200 and adm.json["name"] == f"{a.id}/mine", adm
    assert srv.get("/api/v2/accounts/mine", headers=ADMIN).status == 404
    # Wallets are shared.
    for c in (a, b):
        r = c.get(f"/api/v2/accounts/{w}")
        assert r.status == 200 and r.json["kind"] == "wallet" and r.json["name"] == w, r
    assert_error(a.get("/api/v2/accounts/0xzz"), 400, "invalid_wallet")


# --------------------------------------------------------------------------
# transfers


def bal(srv, name, headers=ADMIN):
    r = srv.get(f"/api/v2/accounts/{name}", headers=headers)
    assert r.status == 200, r
    return int(r.json["balance"])


def assert_sum_zero(srv):
    assert rows(srv, "SELECT coalesce(sum(balance), 0) FROM account_balances") == [("0",)]
    neg = rows(srv, "SELECT id FROM account_balances WHERE may_go_negative = 0 AND balance - held < 0")
    assert neg == [], neg


def test_operator_allocations_and_a_clients_transfers(srv):
    c = Client(srv)
    c.account("credits")
    w = new_wallet()
    assert srv.register(w).status == 201
    t0 = bal(srv, "treasury")
    # The operator allocates to a wallet and to a client's account.
    r = admin_transfer(srv, "treasury", w, 300)
    assert r.status == 201, r
    assert [(e["account"], e["direction"], e["amount"]) for e in r.json["entries"]] == \
        [("treasury", "debit", "300"), (w, "credit", "300")]
    assert r.json["kind"] == "transfer" and r.json["client_id"] is None
    assert r.headers["Location"] == f"/api/v2/transfers/{r.json['id']}"
    assert admin_transfer(srv, "treasury", f"{c.id}/credits", 1000).status == 201
    assert bal(srv, "treasury") == t0 - 1300 and bal(srv, w) == 300
    # The client moves its credits: to a wallet, to revenue, and between its
    # own accounts, in one transaction.
    c.account("spent")
    r = c.post("/api/v2/transfers", {"postings": [
        {"from": "credits", "to": w, "amount": "100"},
        {"from": "credits", "to": "revenue", "amount": "50"},
        {"from": "credits", "to": "spent", "amount": "25"}],
        "description": "campaign 7", "metadata": {"campaign": 7}})
    assert r.status == 201, r
    t = r.json
    assert t["client_id"] == c.id and t["description"] == "campaign 7" and t["metadata"] == {"campaign": 7}
    assert [(e["account"], e["direction"]) for e in t["entries"]] == [
        ("credits", "debit"), (w, "credit"), ("credits", "debit"), ("revenue", "credit"),
        ("credits", "debit"), ("spent", "credit")]
    assert bal(srv, "credits", c.h) == 825 and bal(srv, "spent", c.h) == 25 and bal(srv, w) == 400
    got = c.get(f"/api/v2/transfers/{t['id']}")
    assert got.status == 200 and got.json == t, got
    adm = srv.get(f"/api/v2/transfers/{t['id']}", headers=ADMIN).json
    assert adm["entries"][0]["account"] == f"{c.id}/credits"
    assert_sum_zero(srv)


def test_a_transfer_replays_with_its_idempotency_key(srv):
    c = Client(srv)
    c.account("a")
    assert admin_transfer(srv, "treasury", f"{c.id}/a", 10).status == 201
    k = new_key()
    body = {"from": "a", "to": "revenue", "amount": "4"}
    r1, r2 = c.post("/api/v2/transfers", body, key=k), c.post("/api/v2/transfers", body, key=k)
    assert r1.status == r2.status == 201 and r2.headers["X-Idempotency"] == "HIT" and r1.body == r2.body
    assert bal(srv, "a", c.h) == 6


def test_who_may_debit_and_credit_what(srv):
    a, b = Client(srv, "a"), Client(srv, "b")
    a.account("mine")
    b.account("theirs")
    assert admin_transfer(srv, "treasury", f"{a.id}/mine", 100).status == 201
    assert admin_transfer(srv, "treasury", f"{b.id}/theirs", 100).status == 201
    w = new_wallet()
    assert srv.register(w).status == 201
    assert admin_transfer(srv, "treasury", w, 100).status == 201
    before = balances(srv)

    def refused(body, field):
        return assert_error(a.post("/api/v2/transfers", body, key=None), 422, "unknown_account",
                            field=field)

    with srv.unchanged():
        # Debits: never a wallet, a system account or another client's account;
        # each answers exactly as an account that does not exist.
        missing = refused({"from": "nothing", "to": "revenue", "amount": "1"}, "from")
        for frm in (w, "treasury", "revenue", "external", "theirs", f"{b.id}/theirs",
                    "0x" + "0" * 40, f"{a.id}/nothing"):
            assert refused({"from": frm, "to": "revenue", "amount": "1"}, "from") == missing
        # Credits: the caller's own, a wallet, revenue -- nothing else.
        for to in ("treasury", "external", "commissions", "payouts_clearing", "theirs",
                   f"{b.id}/theirs", "nothing"):
            refused({"from": "mine", "to": to, "amount": "1"}, "to")
        refused({"postings": [{"from": "mine", "to": "revenue", "amount": "1"},
                              {"from": "mine", "to": "theirs", "amount": "1"}]}, "postings[1].to")
    assert balances(srv) == before
    # The admin token may name anything, a client's account qualified.
    assert admin_transfer(srv, f"{b.id}/theirs", "treasury", 1).status == 201
    assert admin_transfer(srv, w, "treasury", 1).status == 201
    assert admin_transfer(srv, "theirs", "treasury", 1).status == 422
    assert_sum_zero(srv)


def test_insufficient_funds_names_the_account_and_moves_nothing(srv):
    c = Client(srv)
    c.account("a")
    c.account("b")
    c.account("od", overdraft=True)
    assert admin_transfer(srv, "treasury", f"{c.id}/a", 100).status == 201
    before = balances(srv)
    with srv.unchanged():
        body = assert_error(c.post("/api/v2/transfers", {"from": "a", "to": "b", "amount": "101"}, key=None),
                            422, "insufficient_funds", field="from")
        assert body["account"] == "a"
        # All or none: the first posting fits, the second does not.
        body = assert_error(c.post("/api/v2/transfers", {"postings": [
            {"from": "a", "to": "b", "amount": "60"},
            {"from": "b", "to": "revenue", "amount": "61"}]}, key=None), 422, "insufficient_funds",
            field="postings[1].from")
        assert body["account"] == "b"
        # Net: 60 out of a and 60 back is fine only if a covers it.
        assert_error(c.post("/api/v2/transfers", {"postings": [
            {"from": "a", "to": "b", "amount": "70"},
            {"from": "a", "to": "revenue", "amount": "31"}]}, key=None), 422, "insufficient_funds",
            field="postings[0].from")
    assert balances(srv) == before
    # What the postings credit back counts: 100 + 50 - 120 >= 0.
    r = c.post("/api/v2/transfers", {"postings": [
        {"from": "a", "to": "b", "amount": "50"},
        {"from": "b", "to": "a", "amount": "50"},
        {"from": "a", "to": "revenue", "amount": "100"}]})
    assert r.status == 201, r
    # An overdraft account goes negative.
    assert c.post("/api/v2/transfers", {"from": "od", "to": "revenue", "amount": "500"}).status == 201
    assert bal(srv, "od", c.h) == -500
    assert_sum_zero(srv)


def test_a_balance_that_would_overflow_is_422_balance_overflow_and_moves_nothing(srv):
    """A credit past 2^63-1 is refused by the store (SQLite's CHECK, BIGINT
    arithmetic on PostgreSQL): 422 balance_overflow, nothing written. On
    PostgreSQL it answered 500 internal_error (22003 was not mapped)."""
    c = Client(srv)
    c.account("big")
    c.account("src", overdraft=True)
    big, src = f"{c.id}/big", f"{c.id}/src"
    assert admin_transfer(srv, src, big, 2**62).status == 201
    assert admin_transfer(srv, src, big, 2**62 - 1).status == 201
    before = balances(srv)
    with srv.unchanged():
        assert_error(admin_transfer(srv, "external", big, 1, key=None), 422, "balance_overflow")
        # Net +1 on big, through a debit that fits.
        assert_error(srv.post("/api/v2/transfers", {"postings": [
            {"from": big, "to": "revenue", "amount": "5"},
            {"from": "revenue", "to": big, "amount": "6"}]}, headers=ADMIN), 422,
            "balance_overflow")
    assert balances(srv) == before
    assert bal(srv, "big", c.h) == 2**63 - 1
    assert_sum_zero(srv)


@pytest.mark.parametrize("body, code, field", [
    ({"from": "a", "to": "b", "amount": "1", "bogus": 1}, "unknown_field", "bogus"),
    ({"postings": [{"from": "a", "to": "b", "amount": "1", "x": 2}]}, "unknown_field", "postings[0].x"),
    ({"postings": [{"from": "a", "to": "b", "amount": "1"}], "from": "a"}, "unknown_field", "from"),
    ({"from": "a", "to": "b", "amount": "-1"}, "invalid_amount", "amount"),
    ({"from": "a", "to": "b", "amount": 5}, "invalid_amount", "amount"),
    ({"postings": [{"from": "a", "to": "b", "amount": "0"}]}, "invalid_amount", "postings[0].amount"),
    ({"from": "a", "amount": "1"}, "invalid_body", "to"),
    ({"from": 1, "to": "b", "amount": "1"}, "invalid_body", "from"),
    ({"postings": []}, "invalid_body", "postings"),
    ({"postings": [{"from": "a", "to": "b", "amount": "1"}] * 33}, "invalid_body", "postings"),
    ({"postings": ["x"]}, "invalid_body", "postings[0]"),
    ({"from": "a", "to": "b", "amount": "1", "description": 5}, "invalid_body", "description"),
    ({"from": "a", "to": "b", "amount": "1", "metadata": "x"}, "invalid_metadata", "metadata"),
])
def test_a_bad_transfer_body_is_400(srv, body, code, field):
    c = Client(srv)
    with srv.unchanged():
        assert_error(c.post("/api/v2/transfers", body, key=None), 400, code, field=field)


def test_a_transfer_to_the_same_account_is_400(srv):
    c = Client(srv)
    c.account("a")
    with srv.unchanged():
        assert_error(c.post("/api/v2/transfers", {"from": "a", "to": "a", "amount": "1"}, key=None),
                     400, "invalid_body", field="to")


def test_another_clients_transfer_is_not_found(srv):
    a, b = Client(srv, "a"), Client(srv, "b")
    a.account("x")
    assert admin_transfer(srv, "treasury", f"{a.id}/x", 10).status == 201
    t = a.post("/api/v2/transfers", {"from": "x", "to": "revenue", "amount": "1"}).json
    missing = assert_error(b.get("/api/v2/transfers/ltx_nope"), 404, "not_found")
    assert b.get(f"/api/v2/transfers/{t['id']}").json == missing
    assert srv.get(f"/api/v2/transfers/{t['id']}", headers=ADMIN).status == 200
    # The operator's allocation is the admin's, not the client's.
    alloc = admin_transfer(srv, "treasury", f"{a.id}/x", 1).json
    assert a.get(f"/api/v2/transfers/{alloc['id']}").json == missing


# --------------------------------------------------------------------------
# ownership on the routes that existed before the Ledger API


def tx_hash():
    return "0x" + secrets.token_hex(32)


def test_another_clients_v2_claim_is_not_found(srv):
    a, b = Client(srv, "a"), Client(srv, "b")
    w = new_wallet()
    assert srv.register(w).status == 201
    # Funded first, so the claim stands whether claims draw on the wallet or not.
    assert admin_transfer(srv, "treasury", w, 50).status == 201
    r = a.post("/api/v2/claims", {"wallet": w, "amount": "10", "tx_hash": tx_hash()})
    assert r.status == 201, r
    assert rows(srv, f"SELECT client_id FROM intents WHERE id = '{r.json['id']}'") == [(a.id,)]
    missing = b.get("/api/v2/intents/int_nope")
    assert missing.status == 404
    with srv.unchanged():
        got = b.get(f"/api/v2/intents/{r.json['id']}")
        assert (got.status, got.json) == (404, missing.json)
    assert a.get(f"/api/v2/intents/{r.json['id']}").status == 200
    assert srv.get(f"/api/v2/intents/{r.json['id']}", headers=ADMIN).status == 200
    # A public claim has no owner: anyone's to read, as /api/claim/record is.
    p = srv.post("/api/claim/prepare", {"wallet": w, "amount": "1"}, key=new_key())
    assert p.status == 201, p
    assert b.get(f"/api/v2/intents/{p.json['id']}").status == 200


def test_another_clients_payout_batch_is_not_found(srv):
    a, b = Client(srv, "a"), Client(srv, "b")
    r = a.post("/api/v2/payouts/batch", {"reference": "r1", "items": [{"wallet": new_wallet(), "amount": "1"}]})
    assert r.status == 201, r
    missing = b.get("/api/v2/payouts/batch/pb_nope")
    assert missing.status == 404
    with srv.unchanged():
        got = b.get(f"/api/v2/payouts/batch/{r.json['id']}")
        assert (got.status, got.json) == (404, missing.json)
    assert a.get(f"/api/v2/payouts/batch/{r.json['id']}").status == 200
    assert srv.get(f"/api/v2/payouts/batch/{r.json['id']}", headers=ADMIN).status == 200


def test_ledger_entries_are_the_callers(srv):
    a, b = Client(srv, "a"), Client(srv, "b")
    a.account("x")
    b.account("y")
    assert admin_transfer(srv, "treasury", f"{a.id}/x", 10).status == 201
    assert admin_transfer(srv, "treasury", f"{b.id}/y", 20).status == 201
    ids = {r[0]: r[1] for r in rows(srv, "SELECT name, id FROM accounts WHERE client_id IS NOT NULL")}
    ea = a.get("/api/v2/ledger/transactions").json["data"]
    assert {e["account_id"] for e in ea} == {ids[f"{a.id}/x"]}
    missing = assert_error(b.get("/api/v2/ledger/transactions?account=nothing"), 404, "account_not_found")
    for name in ("x", f"{a.id}/x", "treasury", ids[f"{a.id}/x"]):
        assert b.get(f"/api/v2/ledger/transactions?account={name}").json == missing, name
    assert a.get("/api/v2/ledger/transactions?account=x").json["data"] == ea
    every = srv.get("/api/v2/ledger/transactions?limit=500", headers=ADMIN).json["data"]
    assert {ids[f"{a.id}/x"], ids[f"{b.id}/y"], "treasury"} <= {e["account_id"] for e in every}
    assert srv.get(f"/api/v2/ledger/transactions?account={b.id}/y", headers=ADMIN).status == 200


# --------------------------------------------------------------------------
# keyset pages under concurrent postings (PostgreSQL: writers share the
# append lock, a page reader takes it alone)


def test_a_pager_following_concurrent_transfers_skips_no_entry(srv):
    import threading
    c = Client(srv)
    names = [f"p{i}" for i in range(8)]
    for n in names:
        c.account(n)
        assert admin_transfer(srv, "treasury", f"{c.id}/{n}", 10 ** 6).status == 201
    stop = threading.Event()
    errors = []

    def writer(name):
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        body = ('{"from":"%s","to":"revenue","amount":"1"}' % name).encode()
        while not stop.is_set():
            conn.request("POST", "/api/v2/transfers", body,
                         {"Content-Type": "application/json", **c.h})
            r = conn.getresponse()
            r.read()
            if r.status != 201:
                errors.append(r.status)
        conn.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in names]
    for t in threads:
        t.start()
    seen, after = [], 0
    # Pages follow the writers for 4 s and until more than 100 entries were
    # seen: the count below needs that much concurrent work, however slowly
    # a loaded machine gets through it (a server stopped for most of a
    # fixed 4 s left too few). The cap only stops writers that write nothing.
    start = __import__("time").monotonic()
    try:
        while __import__("time").monotonic() - start < 4 or len(seen) <= 100:
            assert __import__("time").monotonic() - start < 120, \
                f"only {len(seen)} entries written in 120 s of concurrent transfers"
            r = srv.get(f"/api/v2/ledger/transactions?after={after}&limit=50", headers=ADMIN)
            assert r.status == 200, r
            data = r.json["data"]
            seen += [e["id"] for e in data]
            if data:
                after = data[-1]["id"]
    finally:
        stop.set()
        for t in threads:
            t.join()
    while True:
        data = srv.get(f"/api/v2/ledger/transactions?after={after}&limit=500", headers=ADMIN).json["data"]
        if not data:
            break
        seen += [e["id"] for e in data]
        after = data[-1]["id"]
    assert not errors, errors[:5]
    every = [int(r[0]) for r in rows(srv, "SELECT id FROM ledger_entries ORDER BY id")]
    assert seen == every, f"skipped: {sorted(set(every) - set(seen))[:10]}"
    assert len(every) > 100


# --------------------------------------------------------------------------
# hot accounts (migration 008): on PostgreSQL, postings into accounts that
# may go negative append deltas, folded by the ticker; every reader sees
# the balance with the deltas, and the fold loses nothing


def test_hot_account_balances_are_exact_before_and_after_the_fold(srv):
    c = Client(srv)
    c.account("src")
    c.account("od", overdraft=True)
    assert admin_transfer(srv, "treasury", f"{c.id}/src", 1000).status == 201
    rev0 = bal(srv, "revenue")
    for i in range(20):
        assert c.post("/api/v2/transfers", {"postings": [
            {"from": "src", "to": "revenue", "amount": "3"},
            {"from": "od", "to": "revenue", "amount": "2"}]}).status == 201
    # Read at once: the unfolded deltas are part of every balance shown.
    assert bal(srv, "revenue") == rev0 + 100
    assert bal(srv, "od", c.h) == -40 and bal(srv, "src", c.h) == 940
    assert_sum_zero(srv)
    rep = srv.post("/api/admin/reconciliation", headers=ADMIN).json
    assert rep["problems"] == 0 and rep["imbalance"] == "0", rep
    # The ticker folds them (PostgreSQL; SQLite never has any).
    wait_until(lambda: rows(srv, "SELECT count(*) FROM account_deltas") == [("0",)], timeout=10,
               what="the deltas to be folded")
    assert rows(srv, "SELECT balance FROM accounts WHERE id = 'revenue'") == [(str(rev0 + 100),)]
    assert bal(srv, "revenue") == rev0 + 100
    assert_sum_zero(srv)


def test_transfers_racing_to_drain_and_refill_an_account_are_201_or_insufficient_funds(start_server):
    """An account kept near empty from 64 connections at once: 40 transfers
    of 100 out of it and 24 into it a round (PostgreSQL: each transfer its
    own transaction on four writers). A transfer whose funds a concurrent
    one took after its check is refused by the store, and the accounts are
    read again to name the one that fell short. When a refill had put the
    funds back before that read, nothing was short any more and the answer
    was 422 balance_overflow, with no balance anywhere near 2^63. Every
    drain is 201 or 422 insufficient_funds naming the account, every refill
    201; the balance is exactly what the 201s moved; the ledger balances and
    reconciliation is clean. Each transfer locks only the pool's row (the
    overdraft source and revenue take deltas), so no deadlock can make a
    unit run out of attempts."""
    srv = start(start_server, SETTLED_PG_BATCH_MAX="1", SETTLED_PG_WRITE_CONNS="4")
    c = Client(srv)
    c.account("pool")
    c.account("src", overdraft=True)
    units = 0   # the pool's balance in 100s
    refused = 0
    drain = {"from": "pool", "to": "revenue", "amount": "100"}
    refill = {"from": "src", "to": "pool", "amount": "100"}
    for _ in range(8):
        bodies = [drain] * 40 + [refill] * 24
        bodies = [b for pair in zip(bodies[:32], bodies[32:]) for b in pair]
        reqs = [{"method": "POST", "path": "/api/v2/transfers", "json_body": b,
                 "headers": {**c.h, "Idempotency-Key": new_key()}} for b in bodies]
        results = concurrent_requests(srv.port, reqs)
        assert len(results) == len(reqs)
        for b, r in zip(bodies, results):
            assert not isinstance(r, Exception), r
            if b is refill:
                assert r.status == 201, r
                units += 1
            elif r.status == 201:
                units -= 1
            else:
                refused += 1
                body = assert_error(r, 422, "insufficient_funds", field="from")
                assert body["account"] == "pool", body
        assert units >= 0
        assert bal(srv, "pool", c.h) == 100 * units
    assert refused > 0
    assert_sum_zero(srv)
    r = srv.post("/api/admin/reconciliation", None, headers=ADMIN, key=new_key())
    assert r.status in (200, 201), r
    assert not {k: v for k, v in r.json["checks"].items() if not v["ok"]}, r.json


def test_an_overdraft_account_taken_past_int64_is_422_balance_overflow_and_the_fold_goes_on(srv):
    """An overdraft account (a hot account on PostgreSQL: its postings are
    deltas, folded into its row later) taken below -2^63 or above 2^63-1 is
    refused as on SQLite: 422 balance_overflow, nothing written. On
    PostgreSQL nothing range-checked a delta: the transfer was 201 and the
    fold, whose UPDATE then left BIGINT, rolled back every tick, leaving
    every other hot account's deltas unfolded."""
    c = Client(srv)
    c.account("od", overdraft=True)
    c.account("a")
    c.account("b")
    od, a, b = f"{c.id}/od", f"{c.id}/a", f"{c.id}/b"
    assert admin_transfer(srv, od, a, 2**62).status == 201
    assert admin_transfer(srv, od, b, 2**62 - 1).status == 201
    assert bal(srv, od) == -(2**63 - 1)
    before = balances(srv)
    with srv.unchanged():
        assert_error(admin_transfer(srv, od, "revenue", 2, key=None), 422, "balance_overflow")
        # Net -2 on od through postings that each fit alone.
        assert_error(srv.post("/api/v2/transfers", {"postings": [
            {"from": od, "to": "revenue", "amount": "5"},
            {"from": "revenue", "to": od, "amount": "3"}]}, headers=ADMIN), 422,
            "balance_overflow")
    assert balances(srv) == before
    # The edge itself is a balance: -2^63 fits.
    assert admin_transfer(srv, od, "revenue", 1).status == 201
    assert bal(srv, od) == -(2**63)
    with srv.unchanged():
        assert_error(admin_transfer(srv, od, "revenue", 1, key=None), 422, "balance_overflow")
    # Back up, and above: an overdraft account credited past 2^63-1.
    c.account("up", overdraft=True)
    c.account("down", overdraft=True)
    up, down = f"{c.id}/up", f"{c.id}/down"
    assert admin_transfer(srv, down, up, 2**63 - 1).status == 201
    with srv.unchanged():
        assert_error(admin_transfer(srv, "revenue", up, 1, key=None), 422, "balance_overflow")
    # The fold still folds: another hot account's deltas reach its row.
    assert admin_transfer(srv, "treasury", "revenue", 7).status == 201
    if backend_name() == "pg":
        wait_until(lambda: rows(srv, "SELECT count(*) FROM account_deltas") == [("0",)], timeout=30,
                   what="every delta folded")
    assert bal(srv, od) == -(2**63)
    assert bal(srv, up) == 2**63 - 1
    assert_sum_zero(srv)
