"""The operator's lists (GET /api/admin/intents, /api/admin/payouts/batches,
/api/admin/api-keys) and the console's pages (GET /console, /console/{asset},
/api/docs): pagination, filters, refusals, and the pages' own
Content-Security-Policy. Both backends (the lists' SQL differs in dialect)."""

import secrets

import pytest

from conftest import ADMIN_TOKEN, assert_error, fund_wallet, new_key, new_wallet

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def get(srv, path, **kw):
    r = srv.get(path, headers=ADMIN, **kw)
    assert r.status == 200, r
    return r.json


def all_pages(srv, path, limit):
    """Every row of a list, page by page; asserts each page's size."""
    rows, after = [], None
    while True:
        sep = "&" if "?" in path else "?"
        q = f"{path}{sep}limit={limit}" + (f"&after={after}" if after else "")
        page = get(srv, q)
        assert page["limit"] == limit
        rows += page["data"]
        after = page["next_after"]
        if after is None:
            return rows
        assert len(page["data"]) == limit and after == page["data"][-1]["id"]


def newest_first(rows, made):
    """The ids of rows (as listed) against made (ids in the order they were
    created): newest first is created_at then id, both descending. Rows made
    one after another can share a millisecond on fast storage (each request
    answered in under one): those come by id, not by when they were made."""
    at = {r["id"]: r["created_at"] for r in rows}
    assert set(at) == set(made), (rows, made)
    assert [at[i] for i in made] == sorted(at[i] for i in made), (rows, made)  # RFC 3339, ms
    return [r["id"] for r in rows] == sorted(made, key=lambda i: (at[i], i), reverse=True)


def make_intents(srv, wallet, n):
    """n claims by wallet, registered and paid first (a claim spends what
    the wallet holds)."""
    fund_wallet(srv, wallet, sum(100 + i for i in range(n)), register=True)
    ids = []
    for i in range(n):
        r = srv.post("/api/claim/prepare", {"wallet": wallet, "amount": str(100 + i)}, key=new_key())
        assert r.status == 201, r
        ids.append(r.json["id"])
    return ids


def test_intents_newest_first_paginated_and_filtered(server):
    a, b = new_wallet(), new_wallet()
    ids_a = make_intents(server, a, 5)
    ids_b = make_intents(server, b, 2)
    rows = all_pages(server, "/api/admin/intents", 3)
    assert newest_first(rows, ids_a + ids_b), rows
    last = next(r for r in rows if r["id"] == ids_b[-1])
    assert last["amount"] == "101" and last["status"] == "PENDING" and last["kind"] == "claim"
    assert last["created_at"].endswith("Z") and last["tx_hash"] is None
    # Filters: a wallet (any case), a status.
    only_a = all_pages(server, f"/api/admin/intents?wallet={a.upper().replace('0X', '0x')}", 2)
    assert newest_first(only_a, ids_a), only_a
    assert get(server, "/api/admin/intents?status=SETTLED")["data"] == []
    assert len(get(server, f"/api/admin/intents?status=PENDING&wallet={b}")["data"]) == 2
    # Rows written after a page was read do not shift the next page.
    first = get(server, "/api/admin/intents?limit=2")
    make_intents(server, new_wallet(), 1)
    second = get(server, f"/api/admin/intents?limit=2&after={first['next_after']}")
    assert [r["id"] for r in second["data"]] == [r["id"] for r in rows][2:4]
    # An unknown cursor: an empty page.
    assert get(server, "/api/admin/intents?after=int_nope") == \
        {"data": [], "next_after": None, "limit": 50}
    assert get(server, "/api/admin/intents?limit=900")["limit"] == 200


@pytest.mark.parametrize("path,field", [
    ("/api/admin/intents?status=DONE", "status"),
    ("/api/admin/intents?status=pending", "status"),
    ("/api/admin/intents?wallet=0x12", "wallet"),
    ("/api/admin/intents?wallet=treasury", "wallet"),
    ("/api/admin/intents?limit=0", "limit"),
    ("/api/admin/intents?limit=-1", "limit"),
    ("/api/admin/intents?limit=1e2", "limit"),
    ("/api/admin/intents?after=" + "x" * 65, "after"),
    ("/api/admin/intents?after=", "after"),
    ("/api/admin/payouts/batches?status=PENDING", "status"),
    ("/api/admin/payouts/batches?limit=abc", "limit"),
    ("/api/admin/api-keys?limit=1000", "limit"),
])
def test_bad_parameters_are_400_and_write_nothing(server, path, field):
    with server.unchanged():
        assert_error(server.get(path, headers=ADMIN), 400, "invalid_parameter", field=field)


@pytest.mark.parametrize("path", ["/api/admin/intents", "/api/admin/payouts/batches",
                                  "/api/admin/api-keys"])
def test_lists_need_the_admin_token(server, path):
    with server.unchanged():
        assert_error(server.get(path), 401, "unauthorized")
        assert_error(server.get(path, headers={"Authorization": "Bearer wrong"}), 403, "forbidden")


def test_payout_batches_and_api_keys(server):
    created = server.post("/api/admin/api-keys", {"name": "lists"}, headers=ADMIN, key=new_key())
    assert created.status == 201, created
    partner = {"Authorization": f"Bearer {created.json['key']}"}
    rotated = server.post(f"/api/admin/api-keys/{created.json['id']}/rotate", headers=ADMIN,
                          key=new_key())
    assert rotated.status == 201 or rotated.status == 200, rotated
    keys = all_pages(server, "/api/admin/api-keys", 1)
    assert newest_first(keys, [created.json["id"], rotated.json["id"]]), keys
    keys = sorted(keys, key=lambda k: k["id"] == created.json["id"])  # the rotated one first
    for k in keys:
        assert set(k) == {"id", "client_id", "prefix", "name", "created_at", "expires_at",
                          "revoked_at", "replaced_by"}, k      # never a secret or its hash
    assert keys[1]["replaced_by"] == keys[0]["id"] and keys[1]["expires_at"]

    w = new_wallet()
    assert server.register(w).status == 201
    ids = []
    for _ in range(3):
        r = server.post("/api/v2/payouts/batch",
                        {"reference": f"r-{secrets.token_hex(4)}", "items": [{"wallet": w, "amount": "7"}]},
                        headers=partner, key=new_key())
        assert r.status == 201, r
        ids.append(r.json["id"])
    pending = all_pages(server, "/api/admin/payouts/batches?status=PENDING_APPROVAL", 2)
    assert newest_first(pending, ids), pending
    assert pending[0]["total_amount"] == "7" and pending[0]["item_count"] == 1
    assert pending[0]["approved_at"] is None and pending[0]["client_id"] == created.json["client_id"]
    r = server.post(f"/api/v2/payouts/batch/{ids[0]}/approve", headers=ADMIN, key=new_key())
    assert r.status == 200, r
    still = get(server, "/api/admin/payouts/batches?status=PENDING_APPROVAL")["data"]
    assert newest_first(still, ids[1:]), still
    assert {b["id"] for b in get(server, "/api/admin/payouts/batches")["data"]} == set(ids)


CONSOLE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@pytest.mark.parametrize("path,ctype,marker", [
    ("/console", "text/html; charset=utf-8", b"operator console"),
    ("/console/app.js", "text/javascript; charset=utf-8", b"sessionStorage"),
    ("/console/console.css", "text/css; charset=utf-8", b"--accent"),
    ("/console/docs.js", "text/javascript; charset=utf-8", b"/api/docs/openapi.json"),
    ("/api/docs", "text/html; charset=utf-8", b"API reference"),
])
def test_console_pages_carry_their_own_strict_policy(server, path, ctype, marker):
    with server.unchanged():
        r = server.get(path, check=False)
    assert r.status == 200 and r.header("Content-Type") == ctype and marker in r.body
    assert r.header("Content-Security-Policy") == CONSOLE_CSP
    assert r.header("X-Frame-Options") == "DENY" and r.header("X-Content-Type-Options") == "nosniff"
    # No inline script or style anywhere: every script and stylesheet is a file.
    if ctype.startswith("text/html"):
        body = r.body.decode()
        assert "<script>" not in body and "<style" not in body and " style=" not in body
        assert "onclick" not in body and "http://" not in body and "https://" not in body


@pytest.mark.parametrize("path", ["/console/nope.js", "/console/..%2fapp.js", "/console/index.htm",
                                  "/console/.%2e"])
def test_unknown_console_files_are_404(server, path):
    with server.unchanged():
        r = server.get(path)
    assert r.status in (400, 404), r
    assert r.json["error"] in ("not_found", "invalid_path")
    # The API's answers keep the API's policy.
    assert r.header("Content-Security-Policy") == "default-src 'none'"
