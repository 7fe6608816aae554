"""The Ledger API's clients, accounts and transfers (SPEC section 13):
POST/GET /api/v2/accounts, POST/GET /api/v2/transfers, and ownership:
another client's object is 404 not_found, exactly as a missing one, on
every route, and nothing changes; the admin token sees everything.

Every error answer is checked for its status, code and that nothing was
written (``srv.unchanged()``: row counts of every table; balances are
compared where a refused request could only have updated rows).
"""

import secrets
import sqlite3
import urllib.parse

import pytest

from conftest import (ADMIN_TOKEN, assert_error, backend_name, new_key, new_wallet,
                      wait_until)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def rows(srv, sql):
    """A read-only query on the server's store; rows as tuples of str."""
    if backend_name() == "pg":
        out = srv.backend.psql(sql)
        return [tuple(line.split("|")) for line in out.splitlines() if line]
    uri = "file:" + urllib.parse.quote(str(srv.backend.path)) + "?mode=ro"
    con = sqlite3.connect(uri, uri=True, timeout=10, isolation_level=None)
    try:
        return [tuple("" if v is None else str(v) for v in r) for r in con.execute(sql)]
    finally:
        con.close()


def balances(srv):
    return rows(srv, "SELECT id, balance, held FROM accounts ORDER BY id")


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


@pytest.mark.parametrize("name", ["", "a b", "x" * 129, "0xabc", "0X1", "treasury", "revenue",
                                  "external", "a/b", "é", 12, None, ["a"]])
def test_a_bad_account_name_is_400(srv, name):
    c = Client(srv)
    with srv.unchanged():
        assert_error(c.post("/api/v2/accounts", {"name": name}, key=None), 400,
                     "invalid_account_name", field="name")
    assert c.account("x" * 128)["name"] == "x" * 128


@pytest.mark.parametrize("body, code, field", [
    ({"name": "a", "bogus": 1}, "unknown_field", "bogus"),
    ({"name": "a", "overdraft": "yes"}, "invalid_body", "overdraft"),
    ({"name": "a", "metadata": [1]}, "invalid_metadata", "metadata"),
    ({"name": "a", "metadata": {"k": "v" * 2100}}, "invalid_metadata", "metadata"),
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
