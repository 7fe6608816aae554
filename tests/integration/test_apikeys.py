"""API keys and the v2 claims route (SPEC sections 4, 5, 8):
create / rotate / revoke (admin), Bearer authentication of /api/v2 routes
(401 without, 401 for an unknown, expired or revoked key -- the same answer
for all), the key's client id as idempotency scope and rate-limit key, and
POST /api/v2/claims (prepare + record in one idempotent unit).

The rotation grace is tested against the real clock with
SETTLED_API_KEY_GRACE=4s; the exact boundary is the unit test's
(tests/unit/test_apikey.c, injected clock).
"""

import re
import secrets
import time

import pytest

from conftest import (ADMIN_TOKEN, account_of, assert_error, backend_name, concurrent_requests,
                      diff_snapshots,
                      find_samples, fund_wallet, new_key, new_wallet, parse_metrics, start_settled,
                      store_rows as rows, wait_until)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
KEY_RE = re.compile(r"^sk_live_([0-9A-Za-z]{8})_[0-9A-Za-z]{32}$")
UNAUTHORIZED_BODY = {"error": "unauthorized", "message": "unknown, expired or revoked key"}


def start(start_server, **env):
    return start_settled(start_server, env)


@pytest.fixture
def srv(start_server):
    return start(start_server, SETTLED_SIM_CONFIRM_MS="86400000")


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def create(srv, name="partner", key=None):
    r = srv.post("/api/admin/api-keys", {"name": name}, headers=ADMIN, key=key or new_key())
    assert r.status == 201, r
    return r.json


def rotate(srv, key_id, key=None):
    return srv.post(f"/api/admin/api-keys/{key_id}/rotate", headers=ADMIN, key=key or new_key())


def revoke(srv, key_id, headers=ADMIN):
    return srv.request("DELETE", f"/api/admin/api-keys/{key_id}", headers=headers)


def v2_read(srv, key):
    """A cheap v2 request: 404 unknown_account when authenticated."""
    return srv.get(f"/api/v2/accounts/{new_wallet()}", headers=bearer(key))


def authenticated(srv, key):
    r = v2_read(srv, key)
    if r.status == 401:
        assert r.json == UNAUTHORIZED_BODY, r
        return False
    assert r.status == 404, r
    return True


def tx_hash():
    return "0x" + secrets.token_hex(32)


# --------------------------------------------------------------------------
# create


def test_create_shows_the_key_once_and_stores_only_its_hash(srv):
    idem = new_key()
    r = srv.post("/api/admin/api-keys", {"name": "acme"}, headers=ADMIN, key=idem)
    assert r.status == 201, r
    body = r.json
    m = KEY_RE.match(body["key"])
    assert m, body["key"]
    assert body["prefix"] == m.group(1)
    assert body["id"].startswith("key_") and body["client_id"] == body["id"]
    assert body["name"] == "acme" and body["created_at"]
    assert body["expires_at"] is None and body["revoked_at"] is None and body["replaced_by"] is None
    assert r.headers["Location"] == f"/api/admin/api-keys/{body['id']}"
    assert authenticated(srv, body["key"])

    # A replay answers the same 201 for the same key id, without the secret.
    r2 = srv.post("/api/admin/api-keys", {"name": "acme"}, headers=ADMIN, key=idem)
    assert r2.status == 201 and r2.headers["X-Idempotency"] == "HIT", r2
    assert r2.json["id"] == body["id"] and r2.json["key"] is None and r2.json["key_note"]
    # Nowhere in the store: not in api_keys, not in the idempotency record.
    secret = body["key"]
    for table, cols in (("api_keys", "id || prefix || secret_hash || name"),
                        ("idempotency_keys", "scope || idem_key || body")):
        n = rows(srv, f"SELECT count(*) FROM {table} WHERE ({cols}) LIKE '%{secret[17:]}%'")
        assert n == [("0",)], table
    stored = rows(srv, f"SELECT secret_hash FROM api_keys WHERE id = '{body['id']}'")
    import hashlib
    assert stored == [(hashlib.sha256(secret.encode()).hexdigest(),)]


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": 5}, {"name": "x" * 101},
                                  {"name": "a\nb"}, {"name": None}])
def test_create_with_a_bad_name_is_400(srv, body):
    with srv.unchanged():
        r = srv.post("/api/admin/api-keys", body, headers=ADMIN, key=new_key())
        assert_error(r, 400, "invalid_name", field="name")


# --------------------------------------------------------------------------
# who may do what


def test_admin_routes_need_the_admin_token(srv):
    k = create(srv)
    routes = [("POST", "/api/admin/api-keys", {"name": "n"}),
              ("POST", f"/api/admin/api-keys/{k['id']}/rotate", None),
              ("DELETE", f"/api/admin/api-keys/{k['id']}", None),
              ("POST", "/api/v2/payouts/batch/pb_x/approve", None)]
    with srv.unchanged():
        for method, path, body in routes:
            hdr = {"Idempotency-Key": new_key()} if method == "POST" else {}
            r = srv.request(method, path, json_body=body, headers=hdr)
            assert_error(r, 401, "unauthorized")
            for wrong in ("not-the-token", k["key"], ADMIN_TOKEN + "x"):
                r = srv.request(method, path, json_body=body, headers={**hdr, **bearer(wrong)})
                assert_error(r, 403, "forbidden")
    assert authenticated(srv, k["key"]), "nothing was revoked by the refused requests"


V2_ROUTES = [
    ("GET", "/api/v2/accounts/0x" + "a" * 40, None),
    ("GET", "/api/v2/intents/int_x", None),
    ("GET", "/api/v2/ledger/transactions", None),
    ("GET", "/api/v2/payouts/batch/pb_x", None),
    ("POST", "/api/v2/claims", {"wallet": "0x" + "a" * 40, "amount": "1", "tx_hash": "0x" + "b" * 64}),
    ("POST", "/api/v2/payouts/batch", {"reference": "r", "items": [{"wallet": "0x" + "a" * 40,
                                                                     "amount": "1"}]}),
]


def test_v2_routes_need_a_key_and_never_say_why_one_is_refused(srv):
    good = create(srv, "good")
    gone = create(srv, "gone")
    assert revoke(srv, gone["id"]).status == 200
    unknown = "sk_live_" + "A" * 8 + "_" + "B" * 32
    wrong_secret = good["key"][:-4] + ("zzzz" if not good["key"].endswith("zzzz") else "yyyy")
    refused = [unknown, wrong_secret, gone["key"], "garbage", good["key"] + "x", ADMIN_TOKEN + "x",
               good["prefix"]]
    with srv.unchanged():
        for method, path, body in V2_ROUTES:
            hdr = {"Idempotency-Key": new_key()} if method == "POST" else {}
            r = srv.request(method, path, json_body=body, headers=hdr)
            assert_error(r, 401, "unauthorized")
            answers = set()
            for token in refused:
                r = srv.request(method, path, json_body=body, headers={**hdr, **bearer(token)})
                assert r.status == 401, (token, r)
                assert r.json == UNAUTHORIZED_BODY, (token, r)
                answers.add(r.body)
            assert len(answers) == 1, "every refusal must look the same"
    # The good key and the admin token get past authentication.
    for method, path, body in V2_ROUTES:
        for h in (bearer(good["key"]), ADMIN):
            r = srv.request(method, path, json_body=body,
                            headers={**h, **({"Idempotency-Key": new_key()} if method == "POST" else {})})
            assert r.status not in (401, 403), (path, r)


# --------------------------------------------------------------------------
# rotation and revocation


# The checks inside the grace are judged only when answered within it of
# the rotation's send (else made again); the check after it waits from the
# rotation's answer, which came after the server stamped the grace's start,
# so a rotation answered late cannot leave the old key valid then.
GRACE_S = 4.0


def test_rotation_keeps_the_old_key_for_the_grace_period(start_server):
    srv = start(start_server, SETTLED_API_KEY_GRACE=f"{GRACE_S:g}s")
    for _attempt in range(5):
        old = create(srv, "rotating")
        sent = time.monotonic()
        r = rotate(srv, old["id"])
        answered = time.monotonic()
        assert r.status == 201, r
        new = r.json
        assert KEY_RE.match(new["key"]) and new["key"] != old["key"]
        assert new["id"] != old["id"] and new["client_id"] == old["id"] and new["name"] == "rotating"
        assert new["replaces"]["id"] == old["id"] and new["replaces"]["expires_at"]
        # Inside the grace period: both. The grace began after the rotation
        # was sent, so checks answered within GRACE_S of that are inside it;
        # later ones (a loaded machine) prove nothing: a new key, again.
        both = authenticated(srv, old["key"]), authenticated(srv, new["key"])
        if time.monotonic() - sent < GRACE_S:
            break
    else:
        pytest.fail(f"every rotation's checks came more than {GRACE_S} s after it")
    assert both == (True, True), both
    # After it (it began before the answer): only the new one.
    time.sleep(max(0.0, GRACE_S + 0.1 - (time.monotonic() - answered)))
    assert not authenticated(srv, old["key"])
    assert authenticated(srv, new["key"])
    # A rotated (and now expired) key cannot be rotated again; its successor can.
    with srv.unchanged():
        assert_error(srv.post(f"/api/admin/api-keys/{old['id']}/rotate", headers=ADMIN), 409,
                     "key_inactive")
    r = rotate(srv, new["id"])
    assert r.status == 201 and r.json["client_id"] == old["id"], r


def test_rotating_twice_in_grace_is_409(srv):
    k = create(srv)
    r = rotate(srv, k["id"])
    assert r.status == 201
    with srv.unchanged():
        body = assert_error(srv.post(f"/api/admin/api-keys/{k['id']}/rotate", headers=ADMIN), 409,
                            "already_rotated")
    assert body["replaced_by"] == r.json["id"]
    assert authenticated(srv, k["key"]) and authenticated(srv, r.json["key"])


def test_racing_rotations_of_one_key_rotate_it_once(srv):
    """12 rotations of one key at once: one 201, every other the documented
    409 already_rotated naming the winner (the guarded UPDATE decides the
    race), and exactly one new key written."""
    k = create(srv)
    before = srv.snapshot()
    results = concurrent_requests(srv.port, [
        {"method": "POST", "path": f"/api/admin/api-keys/{k['id']}/rotate", "headers": ADMIN}
        for _ in range(12)])
    assert sorted(r.status for r in results) == [201] + [409] * 11, [r.status for r in results]
    winner = next(r for r in results if r.status == 201).json
    for r in results:
        if r.status == 409:
            assert assert_error(r, 409, "already_rotated")["replaced_by"] == winner["id"]
    assert diff_snapshots(before, srv.snapshot()) == {"api_keys": (before["api_keys"], before["api_keys"] + 1)}


def test_rotate_replay_does_not_show_the_key_again(srv):
    k = create(srv)
    idem = new_key()
    r1 = rotate(srv, k["id"], key=idem)
    r2 = rotate(srv, k["id"], key=idem)
    assert r1.status == r2.status == 201 and r2.headers["X-Idempotency"] == "HIT"
    assert r1.json["key"] and r2.json["key"] is None and r2.json["id"] == r1.json["id"]


def test_revoked_key_fails_at_once(srv):
    a, b = create(srv, "a"), create(srv, "b")
    assert authenticated(srv, a["key"])
    r = revoke(srv, a["id"])
    assert r.status == 200, r
    assert r.json["id"] == a["id"] and r.json["revoked_at"] and "key" not in r.json
    assert not authenticated(srv, a["key"])
    assert authenticated(srv, b["key"])
    # DELETE again: the same answer, the first revocation time kept.
    again = revoke(srv, a["id"])
    assert again.status == 200 and again.json["revoked_at"] == r.json["revoked_at"]
    assert_error(revoke(srv, "key_nope"), 404, "key_not_found")
    assert_error(rotate(srv, "key_nope"), 404, "key_not_found")
    with srv.unchanged():
        assert_error(srv.post(f"/api/admin/api-keys/{a['id']}/rotate", headers=ADMIN), 409,
                     "key_inactive")


def test_revoking_the_old_key_in_grace_ends_the_chain(srv):
    """Revoking any key of a rotation chain revokes its live keys (a leaked
    key is cut off with its pair); a fresh key for the same client
    (client_id) keeps the client's identity."""
    old = create(srv)
    new = rotate(srv, old["id"]).json
    assert revoke(srv, old["id"]).status == 200
    assert not authenticated(srv, old["key"]) and not authenticated(srv, new["key"])
    fresh = srv.post("/api/admin/api-keys", {"name": "again", "client_id": old["client_id"]},
                     headers=ADMIN, key=new_key())
    assert fresh.status == 201 and fresh.json["client_id"] == old["client_id"], fresh
    assert authenticated(srv, fresh.json["key"])


# --------------------------------------------------------------------------
# the client id: idempotency scope, rate-limit key, metrics


def test_idempotency_scope_is_the_client(start_server):
    srv = start(start_server, SETTLED_SIM_CONFIRM_MS="86400000", SETTLED_TREASURY_FUNDING="1000")
    a, b = create(srv, "a"), create(srv, "b")
    idem = new_key("shared")
    body = {"reference": "r1", "items": [{"wallet": new_wallet(), "amount": "1"}]}
    ra = srv.post("/api/v2/payouts/batch", body, headers=bearer(a["key"]), key=idem)
    rb = srv.post("/api/v2/payouts/batch", body, headers=bearer(b["key"]), key=idem)
    assert ra.status == rb.status == 201
    assert ra.headers["X-Idempotency"] == rb.headers["X-Idempotency"] == "MISS"
    assert ra.json["id"] != rb.json["id"]
    # A's rotated key is the same client: the same key replays.
    a2 = rotate(srv, a["id"]).json
    r = srv.post("/api/v2/payouts/batch", body, headers=bearer(a2["key"]), key=idem)
    assert r.status == 201 and r.headers["X-Idempotency"] == "HIT" and r.body == ra.body


def test_rate_limit_is_per_client(start_server):
    srv = start(start_server, RL_API_PER_MIN="3")
    a, b = create(srv, "a"), create(srv, "b")
    for _ in range(3):
        assert v2_read(srv, a["key"]).status == 404
    r = v2_read(srv, a["key"])
    assert_error(r, 429, "rate_limited")
    assert r.headers["Retry-After"]
    assert v2_read(srv, b["key"]).status == 404, "another client has its own budget"


def test_requests_are_counted_by_key_prefix(srv):
    a = create(srv, "a")
    for _ in range(3):
        v2_read(srv, a["key"])
    v2_read(srv, "sk_live_" + "A" * 8 + "_" + "B" * 32)
    s = find_samples(parse_metrics(srv.metrics()), "settled_api_key_requests_total",
                     key_prefix=a["prefix"])
    assert s and s[0][2] == 3
    assert not find_samples(parse_metrics(srv.metrics()), "settled_api_key_requests_total",
                            key_prefix="AAAAAAAA")


# --------------------------------------------------------------------------
# POST /api/v2/claims


def test_v2_claim_prepares_records_and_settles(start_server):
    srv = start(start_server, SETTLED_SIM_CONFIRM_MS="50")
    k = create(srv)
    w = new_wallet()
    fund_wallet(srv, w, 1000, register=True)
    h = tx_hash()
    idem = new_key()
    r = srv.post("/api/v2/claims", {"wallet": w, "amount": "250", "tx_hash": h},
                 headers=bearer(k["key"]), key=idem)
    assert r.status == 201, r
    it = r.json
    assert it["status"] == "SUBMITTED" and it["kind"] == "claim" and it["tx_hash"] == h
    assert it["wallet"] == w and it["amount"] == "250"
    assert r.headers["Location"] == f"/api/v2/intents/{it['id']}"
    # Replays answer the same bytes and do nothing.
    r2 = srv.post("/api/v2/claims", {"wallet": w, "amount": "250", "tx_hash": h},
                  headers=bearer(k["key"]), key=idem)
    assert r2.status == 201 and r2.headers["X-Idempotency"] == "HIT" and r2.body == r.body

    def settled():
        b = srv.get(f"/api/v2/intents/{it['id']}", headers=bearer(k["key"])).json
        return b if b["status"] == "SETTLED" else None
    body = wait_until(settled, timeout=10, what="the v2 claim to settle")
    steps = [(t["from"], t["to"]) for t in body["transitions"]]
    assert steps == [(None, "PENDING"), ("PENDING", "LOCKED"), ("LOCKED", "SUBMITTED"),
                     ("SUBMITTED", "CONFIRMED"), ("CONFIRMED", "SETTLED")]
    # The wallet withdrew 250 of the 1000 it was paid.
    assert account_of(srv, w) == {"balance": 750, "held": 0, "available": 750}
    assert rows(srv, "SELECT count(*) FROM jobs WHERE kind = 'claim.confirm'") == [("1",)]


@pytest.mark.parametrize("body,code,field", [
    ({"amount": "1", "tx_hash": "0x" + "b" * 64}, "invalid_wallet", "wallet"),
    ({"wallet": "0x12", "amount": "1", "tx_hash": "0x" + "b" * 64}, "invalid_wallet", "wallet"),
    ({"wallet": "0x" + "a" * 40, "amount": 1, "tx_hash": "0x" + "b" * 64}, "invalid_amount", "amount"),
    ({"wallet": "0x" + "a" * 40, "amount": "0", "tx_hash": "0x" + "b" * 64}, "invalid_amount", "amount"),
    ({"wallet": "0x" + "a" * 40, "amount": "1"}, "invalid_tx_hash", "tx_hash"),
    ({"wallet": "0x" + "a" * 40, "amount": "1", "tx_hash": "0x" + "b" * 63}, "invalid_tx_hash", "tx_hash"),
])
def test_v2_claim_bad_input_is_400(srv, body, code, field):
    with srv.unchanged():
        r = srv.post("/api/v2/claims", body, headers=ADMIN, key=new_key())
        assert_error(r, 400, code, field=field)


def test_v2_claim_refusals_write_nothing(start_server):
    srv = start(start_server, SETTLED_SIM_CONFIRM_MS="86400000", SETTLED_TREASURY_FUNDING="1000")
    k = create(srv)
    w = new_wallet()
    fund_wallet(srv, w, 1000, register=True)
    used = tx_hash()
    assert srv.post("/api/v2/claims", {"wallet": w, "amount": "10", "tx_hash": used},
                    headers=bearer(k["key"]), key=new_key()).status == 201
    with srv.unchanged():
        # No Idempotency-Key: a 4xx answer is then not recorded either.
        r = srv.post("/api/v2/claims", {"wallet": new_wallet(), "amount": "1", "tx_hash": tx_hash()},
                     headers=bearer(k["key"]))
        assert_error(r, 404, "unknown_wallet")
        r = srv.post("/api/v2/claims", {"wallet": w, "amount": "991", "tx_hash": tx_hash()},
                     headers=bearer(k["key"]))
        assert_error(r, 422, "insufficient_funds", field="amount")
        # The tx_hash is checked after the hold was made: all of it rolls back.
        r = srv.post("/api/v2/claims", {"wallet": w, "amount": "5", "tx_hash": used},
                     headers=bearer(k["key"]))
        assert_error(r, 409, "tx_hash_already_recorded")
    assert account_of(srv, w) == {"balance": 1000, "held": 10, "available": 990}
    assert account_of(srv, "treasury") == {"balance": 1000, "held": 0, "available": 1000}


# --------------------------------------------------------------------------
# the concrete path in the idempotency scope; revoking a rotation chain;
# more keys for one client


def test_one_idempotency_key_on_two_rotate_paths_rotates_both(srv):
    a, b = create(srv, "a"), create(srv, "b")
    idem = new_key("rotate")
    ra = rotate(srv, a["id"], key=idem)
    rb = rotate(srv, b["id"], key=idem)
    assert ra.status == rb.status == 201, (ra, rb)
    assert ra.headers["X-Idempotency"] == rb.headers["X-Idempotency"] == "MISS"
    assert ra.json["replaces"]["id"] == a["id"] and rb.json["replaces"]["id"] == b["id"]
    assert rb.json["key"] and authenticated(srv, rb.json["key"])
    replaced = dict(rows(srv, f"SELECT id, replaced_by FROM api_keys WHERE id IN ('{a['id']}', '{b['id']}')"))
    assert replaced == {a["id"]: ra.json["id"], b["id"]: rb.json["id"]}
    # Each path replays its own answer.
    again = rotate(srv, b["id"], key=idem)
    assert again.headers["X-Idempotency"] == "HIT" and again.json["id"] == rb.json["id"]


def test_one_idempotency_key_on_two_batch_approvals_approves_both(start_server):
    srv = start(start_server, SETTLED_SIM_CONFIRM_MS="86400000")
    k = create(srv)
    ids = []
    for _ in range(2):
        r = srv.post("/api/v2/payouts/batch",
                     {"reference": new_key("ref"), "items": [{"wallet": new_wallet(), "amount": "1"}]},
                     headers=bearer(k["key"]), key=new_key())
        assert r.status == 201, r
        ids.append(r.json["id"])
    idem = new_key("approve")
    answers = [srv.post(f"/api/v2/payouts/batch/{i}/approve", headers=ADMIN, key=idem) for i in ids]
    for i, r in zip(ids, answers):
        assert r.headers.get("X-Idempotency") == "MISS", r
        assert r.json["id"] == i, r
    status = dict(rows(srv, "SELECT id, status FROM payout_batches"))
    assert all(status[i] != "PENDING_APPROVAL" for i in ids), status


def test_revoking_a_successor_revokes_its_predecessor_in_grace(srv):
    old = create(srv)
    new = rotate(srv, old["id"]).json
    assert authenticated(srv, old["key"]) and authenticated(srv, new["key"])
    r = revoke(srv, new["id"])
    assert r.status == 200 and r.json["revoked_at"], r
    assert not authenticated(srv, new["key"]) and not authenticated(srv, old["key"])
    with srv.unchanged():
        for k in (old, new):
            assert_error(srv.post(f"/api/admin/api-keys/{k['id']}/rotate", headers=ADMIN), 409,
                         "key_inactive")


def test_revoking_a_key_in_the_middle_of_a_chain_revokes_both_ends(srv):
    k1 = create(srv)
    k2 = rotate(srv, k1["id"]).json
    k3 = rotate(srv, k2["id"]).json
    other = create(srv, "other")
    assert revoke(srv, k2["id"]).status == 200
    for k in (k1, k2, k3):
        assert not authenticated(srv, k["key"]), k["id"]
    assert authenticated(srv, other["key"]), "another client's key is not in the chain"


def test_a_second_key_for_a_client_shares_its_identity(srv):
    a = create(srv, "a")
    assert a["client_id"] == a["id"]
    r = srv.post("/api/admin/api-keys", {"name": "a-ci", "client_id": a["client_id"]}, headers=ADMIN,
                 key=new_key())
    assert r.status == 201, r
    a2 = r.json
    assert a2["client_id"] == a["client_id"] and a2["id"] != a["id"]
    # One client: an Idempotency-Key used with the first key replays with the second.
    idem = new_key("shared")
    body = {"reference": "r1", "items": [{"wallet": new_wallet(), "amount": "1"}]}
    r1 = srv.post("/api/v2/payouts/batch", body, headers=bearer(a["key"]), key=idem)
    r2 = srv.post("/api/v2/payouts/batch", body, headers=bearer(a2["key"]), key=idem)
    assert r1.status == 201 and r2.headers["X-Idempotency"] == "HIT" and r2.body == r1.body
    # Independent chains: revoking one key leaves the other.
    assert revoke(srv, a["id"]).status == 200
    assert authenticated(srv, a2["key"])


@pytest.mark.parametrize("client_id, status, code", [
    ("key_" + "0" * 24, 404, "unknown_client"),
    ("nope", 400, "invalid_client_id"),
    (42, 400, "invalid_client_id"),
    ("key_" + "A" * 24, 400, "invalid_client_id"),
])
def test_a_key_for_an_unknown_or_malformed_client_is_refused(srv, client_id, status, code):
    create(srv)
    with srv.unchanged():
        body = assert_error(srv.post("/api/admin/api-keys", {"name": "x", "client_id": client_id},
                                     headers=ADMIN), status, code)
        assert body["field"] == "client_id"


def test_a_revocation_racing_rotations_leaves_no_key_of_the_chain_live(start_server):
    """A key revoked while it is rotated from three other connections: the
    revocation ends the whole chain, so whichever rotation committed first,
    neither the key nor any successor a rotation answered 201 authenticates
    afterwards, and every answer is 200, 201 or 409, never 500. On
    PostgreSQL (each unit its own transaction on four writers) a rotation
    that commits while the revocation's statement waits for the key's row
    wrote a successor that statement's snapshot did not see."""
    pg = backend_name() == "pg"
    srv = start(start_server, **({"SETTLED_PG_BATCH_MAX": "1", "SETTLED_PG_WRITE_CONNS": "4"}
                                 if pg else {}))
    for rnd in range(8):
        k = create(srv)
        reqs = [{"method": "DELETE", "path": f"/api/admin/api-keys/{k['id']}", "headers": ADMIN}]
        reqs += [{"method": "POST", "path": f"/api/admin/api-keys/{k['id']}/rotate",
                  "headers": {**ADMIN, "Idempotency-Key": new_key()}} for _ in range(3)]
        results = concurrent_requests(srv.port, reqs)
        assert results[0].status == 200, results[0]
        assert all(r.status in (201, 409) for r in results[1:]), [(r.status, r.json) for r in results]
        assert not authenticated(srv, k["key"]), rnd
        for r in results[1:]:
            if r.status == 201:
                assert not authenticated(srv, r.json["key"]), (rnd, r.json["id"])
