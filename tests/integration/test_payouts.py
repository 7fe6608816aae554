"""Payout batches (SPEC section 8; docs/internals/payouts.md):
create (API key) -> approve (admin) -> one payout.execute job per item ->
the rail -> SETTLED or FAILED per item, the ledger balanced throughout.

Wallets are funded through the API first (conftest.fund_wallet: a signed
webhook payment, revenue -> wallet): a payout, like a claim, spends only
what the wallet holds.
"""

import os
import json
import secrets
import time

import pytest

from conftest import (ADMIN_TOKEN, account_figures as account, assert_error, backend_name, bearer,
                      concurrent_requests, diff_snapshots,
                      find_samples, fund_wallet, new_api_key, new_key, new_wallet, parse_metrics,
                      start_settled, store_scalar as scalar, wait_until)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FAST = {"SETTLED_SIM_CONFIRM_MS": "0", "SETTLED_WORKERS": "8"}


# --------------------------------------------------------------------------
# helpers


def start(start_server, **env):
    return start_settled(start_server, env)


def fund(srv, wallets, amount):
    """Registers each wallet and pays amount into it through the API."""
    for w in wallets:
        fund_wallet(srv, w, amount, register=True)


def create_batch(srv, key, items, reference=None, idem=None, no_idem=False):
    """POST /api/v2/payouts/batch with a fresh Idempotency-Key (or idem; or
    none with no_idem, so that a 4xx answer stores nothing)."""
    body = {"reference": reference or f"ref-{secrets.token_hex(6)}",
            "items": [{"wallet": w, "amount": str(a)} for w, a in items]}
    return srv.post("/api/v2/payouts/batch", body, headers=bearer(key),
                    key=None if no_idem else (idem or new_key()))


def approve(srv, batch_id, **kw):
    return srv.post(f"/api/v2/payouts/batch/{batch_id}/approve", headers=ADMIN, key=new_key(), **kw)


def get_batch(srv, batch_id, headers=ADMIN, query=""):
    r = srv.get(f"/api/v2/payouts/batch/{batch_id}{query}", headers=headers)
    assert r.status == 200, r
    return r.json


def wait_completed(srv, batch_id, timeout=30.0):
    return wait_until(lambda: (lambda b: b if b["status"] == "COMPLETED" else None)(
        get_batch(srv, batch_id, query="?limit=1")), timeout=timeout, interval=0.1,
        what=f"batch {batch_id} to complete")


def reconcile_now(srv):
    r = srv.post("/api/admin/reconciliation", headers=ADMIN)
    assert r.status == 200, r
    return r.json


def assert_ledger_balanced(srv):
    rep = reconcile_now(srv)
    bad = {k: v for k, v in rep["checks"].items() if not v["ok"]}
    assert rep["imbalance"] == "0" and not bad, rep
    assert scalar(srv, "SELECT coalesce(sum(balance), 0) FROM account_balances") == 0
    clearing = account(srv, "payouts_clearing")
    assert clearing["balance"] >= 0 and clearing["held"] == 0


def execute_jobs(srv, batch_id):
    return scalar(srv, "SELECT count(*) FROM jobs WHERE kind = 'payout.execute'"
                       f" AND payload LIKE '%{batch_id}%'")


# --------------------------------------------------------------------------
# creating a batch


@pytest.fixture
def partner(start_server):
    srv = start(start_server, SETTLED_SIM_CONFIRM_MS="86400000")
    return srv, new_api_key(srv)


def test_create_batch_is_pending_approval(partner):
    srv, key = partner
    w1, w2 = new_wallet(), new_wallet(upper=True)
    before = srv.snapshot()
    r = create_batch(srv, key, [(w1, 100), (w2, 250)], reference="march-1")
    assert r.status == 201, r
    b = r.json
    assert b["id"].startswith("pb_") and b["reference"] == "march-1"
    assert b["status"] == "PENDING_APPROVAL" and b["approved_at"] is None
    assert b["item_count"] == 2 and b["total_amount"] == "350" and b["remaining"] == 2
    assert r.headers["Location"] == f"/api/v2/payouts/batch/{b['id']}"
    after = srv.snapshot()
    assert after["payout_batches"] == before["payout_batches"] + 1
    assert after["payout_items"] == before["payout_items"] + 2
    assert after.get("jobs", 0) == before.get("jobs", 0), "nothing runs before approval"

    full = get_batch(srv, b["id"], headers=bearer(key))
    assert [(i["idx"], i["wallet"], i["amount"], i["status"]) for i in full["items"]] == \
        [(0, w1, "100", "PENDING"), (1, w2.lower(), "250", "PENDING")]
    assert full["totals"]["PENDING"] == {"count": 2, "amount": "350"}
    assert full["totals"]["SETTLED"] == {"count": 0, "amount": "0"}
    assert full["next_after"] is None


def test_create_batch_replays_with_the_same_key(partner):
    srv, key = partner
    idem = new_key()
    items = [(new_wallet(), 5)]
    r1 = create_batch(srv, key, items, reference="same", idem=idem)
    assert r1.status == 201 and r1.headers["X-Idempotency"] == "MISS", r1
    with srv.unchanged():
        r2 = create_batch(srv, key, items, reference="same", idem=idem)
    assert r2.status == 201 and r2.headers["X-Idempotency"] == "HIT"
    assert r2.body == r1.body


def test_racing_batches_of_one_reference_answer_duplicate_reference(partner):
    """16 batches with one reference at once: one 201, every other the
    documented 409 duplicate_reference (the unique constraint decides the
    race), and exactly one batch and its item written."""
    srv, key = partner
    before = srv.snapshot()
    results = concurrent_requests(srv.port, [
        {"method": "POST", "path": "/api/v2/payouts/batch", "headers": bearer(key),
         "json_body": {"reference": "raced", "items": [{"wallet": new_wallet(), "amount": "3"}]}}
        for _ in range(16)])
    assert sorted(r.status for r in results) == [201] + [409] * 15, [r.status for r in results]
    for r in results:
        if r.status == 409:
            assert_error(r, 409, "duplicate_reference")
    diff = diff_snapshots(before, srv.snapshot())
    assert {t: b - a for t, (a, b) in diff.items()} == {"payout_batches": 1, "payout_items": 1}, diff


def test_duplicate_reference_is_409_per_client(partner):
    srv, key = partner
    other = new_api_key(srv, "other")
    assert create_batch(srv, key, [(new_wallet(), 1)], reference="dup").status == 201
    with srv.unchanged():
        assert_error(create_batch(srv, key, [(new_wallet(), 2)], reference="dup", no_idem=True), 409,
                     "duplicate_reference")
    # Another client may use the same reference.
    assert create_batch(srv, other, [(new_wallet(), 1)], reference="dup").status == 201


BAD_ITEMS = [
    ([{"wallet": "0x123", "amount": "1"}], 0, "invalid_wallet", "items[0].wallet"),
    ([{"amount": "1"}], 0, "invalid_wallet", "items[0].wallet"),
    ([{"wallet": "W", "amount": "1"}], 0, "invalid_wallet", "items[0].wallet"),
    ([{"wallet": "0x" + "a" * 40, "amount": "0"}], 0, "invalid_amount", "items[0].amount"),
    ([{"wallet": "0x" + "a" * 40, "amount": 5}], 0, "invalid_amount", "items[0].amount"),
    ([{"wallet": "0x" + "a" * 40, "amount": "-5"}], 0, "invalid_amount", "items[0].amount"),
    ([{"wallet": "0x" + "a" * 40, "amount": "1.5"}], 0, "invalid_amount", "items[0].amount"),
    ([{"wallet": "0x" + "a" * 40}], 0, "invalid_amount", "items[0].amount"),
    (["nope"], 0, "invalid_item", "items[0]"),
    # The total overflows at this item (1,000 good items of 7 come first).
    ([{"wallet": "0x" + "a" * 40, "amount": str(2**63 - 1)}], 0, "invalid_amount", "items[0].amount"),
]


@pytest.mark.parametrize("items,index,code,field", BAD_ITEMS,
                         ids=[f"{c}-{i}-{n}" for n, (_, i, c, _f) in enumerate(BAD_ITEMS)])
def test_a_bad_item_is_400_with_its_index_and_nothing_is_stored(partner, items, index, code, field):
    srv, key = partner
    # The bad item sits after 1,000 good ones: it is still found before any write.
    good = [{"wallet": new_wallet(), "amount": "7"} for _ in range(1000)]
    body = {"reference": "r", "items": good + items}
    with srv.unchanged():
        r = srv.post("/api/v2/payouts/batch", body, headers=bearer(key), key=new_key())
        b = assert_error(r, 400, code)
    assert b["index"] == 1000 + index
    assert b["field"] == field.replace(f"items[{index}]", f"items[{1000 + index}]")


@pytest.mark.parametrize("body,code,field", [
    ({"items": [{"wallet": "0x" + "a" * 40, "amount": "1"}]}, "invalid_reference", "reference"),
    ({"reference": "", "items": [{"wallet": "0x" + "a" * 40, "amount": "1"}]}, "invalid_reference",
     "reference"),
    ({"reference": "x" * 129, "items": [{"wallet": "0x" + "a" * 40, "amount": "1"}]},
     "invalid_reference", "reference"),
    ({"reference": "a\nb", "items": [{"wallet": "0x" + "a" * 40, "amount": "1"}]},
     "invalid_reference", "reference"),
    ({"reference": "r"}, "invalid_items", "items"),
    ({"reference": "r", "items": []}, "invalid_items", "items"),
    ({"reference": "r", "items": {"wallet": "0x" + "a" * 40}}, "invalid_items", "items"),
])
def test_bad_batch_bodies_are_400(partner, body, code, field):
    srv, key = partner
    with srv.unchanged():
        r = srv.post("/api/v2/payouts/batch", body, headers=bearer(key), key=new_key())
        assert_error(r, 400, code, field=field)


def test_more_than_10000_items_is_400(partner):
    srv, key = partner
    item = {"wallet": "0x" + "a" * 40, "amount": "1"}
    body = json.dumps({"reference": "big", "items": [item] * 10001}, separators=(",", ":"))
    with srv.unchanged():
        r = srv.post("/api/v2/payouts/batch", body=body,
                     headers={**bearer(key), "Content-Type": "application/json"}, key=new_key())
        assert_error(r, 400, "too_many_items", field="items")


# --------------------------------------------------------------------------
# who may see and approve what


def test_authorization_matrix(partner):
    srv, key = partner
    other = new_api_key(srv, "other")
    b = create_batch(srv, key, [(new_wallet(), 1)]).json
    admin_batch = srv.post("/api/v2/payouts/batch",
                           {"reference": "adm", "items": [{"wallet": new_wallet(), "amount": "1"}]},
                           headers=ADMIN, key=new_key())
    assert admin_batch.status == 201, admin_batch
    get = f"/api/v2/payouts/batch/{b['id']}"
    post_body = {"reference": "x", "items": [{"wallet": new_wallet(), "amount": "1"}]}
    with srv.unchanged():
        # v2 routes: no token 401, a wrong token 401 (never a hint which).
        for method, path, body in (("GET", get, None), ("POST", "/api/v2/payouts/batch", post_body)):
            assert_error(srv.request(method, path, json_body=body), 401, "unauthorized")
            for wrong in ("nope", "sk_live_AAAAAAAA_" + "A" * 32, key[:-1] + ("x" if key[-1] != "x" else "y")):
                r = srv.request(method, path, json_body=body, headers=bearer(wrong))
                assert_error(r, 401, "unauthorized")
        # Another key's batch does not exist for it: 404, not 403.
        assert_error(srv.get(get, headers=bearer(other)), 404, "batch_not_found")
        assert_error(srv.get(f"/api/v2/payouts/batch/{admin_batch.json['id']}", headers=bearer(key)),
                     404, "batch_not_found")
        assert_error(srv.get("/api/v2/payouts/batch/pb_nope", headers=bearer(key)), 404,
                     "batch_not_found")
        # Approval is the admin's: no token 401, a wrong token or an API key 403.
        path = f"/api/v2/payouts/batch/{b['id']}/approve"
        assert_error(srv.post(path, key=new_key()), 401, "unauthorized")
        assert_error(srv.post(path, headers=bearer("nope"), key=new_key()), 403, "forbidden")
        assert_error(srv.post(path, headers=bearer(key), key=new_key()), 403, "forbidden")
    # The owner and the admin see it.
    assert get_batch(srv, b["id"], headers=bearer(key))["id"] == b["id"]
    assert get_batch(srv, b["id"], headers=ADMIN)["id"] == b["id"]
    assert_error(approve(srv, "pb_nope"), 404, "batch_not_found")


def test_bad_get_parameters_are_400(partner):
    srv, key = partner
    b = create_batch(srv, key, [(new_wallet(), 1), (new_wallet(), 2), (new_wallet(), 3)]).json
    for q in ("?limit=0", "?limit=x", "?limit=10001", "?after=-1", "?after=1.5"):
        r = srv.get(f"/api/v2/payouts/batch/{b['id']}{q}", headers=bearer(key))
        assert_error(r, 400, "invalid_parameter")
    page = get_batch(srv, b["id"], headers=bearer(key), query="?limit=2")
    assert [i["idx"] for i in page["items"]] == [0, 1] and page["next_after"] == 1
    page = get_batch(srv, b["id"], headers=bearer(key), query="?limit=2&after=1")
    assert [i["idx"] for i in page["items"]] == [2] and page["next_after"] is None
    assert page["totals"]["PENDING"]["count"] == 3   # totals are the whole batch's


# --------------------------------------------------------------------------
# approval and execution


def test_approve_executes_each_item_alone(start_server):
    srv = start_server(env=FAST)
    key = new_api_key(srv)
    rich, poor = new_wallet(), new_wallet()
    fund(srv, [rich], 1000)
    assert srv.register(poor).status == 201
    stranger = new_wallet()                       # never registered
    items = [(rich, 300), (poor, 50), (rich, 200), (stranger, 10), (rich, 600), (rich, 100)]
    b = create_batch(srv, key, items).json
    ext0 = account(srv, "external")

    r = approve(srv, b["id"])
    assert r.status == 200, r
    assert r.json["status"] == "APPROVED" and r.json["enqueued"] == len(items)
    assert r.json["approved_at"] is not None
    # Approving again: 409, and nothing more is enqueued.
    jobs = execute_jobs(srv, b["id"])
    assert jobs == len(items)
    r2 = approve(srv, b["id"])
    assert_error(r2, 409, "invalid_transition")
    assert r2.json["status"] in ("APPROVED", "COMPLETED")
    assert execute_jobs(srv, b["id"]) == jobs

    done = wait_completed(srv, b["id"])
    full = get_batch(srv, b["id"], headers=bearer(key))
    by_idx = {i["idx"]: i for i in full["items"]}
    assert by_idx[1]["status"] == "FAILED" and by_idx[1]["error"] == "insufficient_funds"
    assert by_idx[3]["status"] == "FAILED" and by_idx[3]["error"] == "unknown_wallet"
    # rich had 1000: 300 + 200 = 500 fit, then 600 does not (whichever
    # order the workers ran them in, the total paid never exceeds 1000).
    settled = [i for i in full["items"] if i["status"] == "SETTLED"]
    failed = [i for i in full["items"] if i["status"] == "FAILED"]
    assert len(settled) + len(failed) == len(items)
    paid = sum(int(i["amount"]) for i in settled)
    assert paid <= 1000
    for i in failed:
        assert i["error"] in ("insufficient_funds", "unknown_wallet"), i
    for i in settled:
        assert i["intent_id"] and i["error"] is None
        intent = srv.get(f"/api/v2/intents/{i['intent_id']}", headers=ADMIN).json
        assert intent["kind"] == "payout" and intent["status"] == "SETTLED"
        assert intent["hold"]["status"] == "captured"
    # Totals are the sums of the items.
    assert full["totals"]["SETTLED"] == {"count": len(settled), "amount": str(paid)}
    assert full["totals"]["FAILED"]["count"] == len(failed)
    assert done["remaining"] == 0 and done["completed_at"] is not None
    # The money left: wallet -> payouts_clearing -> external.
    assert account(srv, rich)["balance"] == 1000 - paid
    assert account(srv, rich)["held"] == 0
    assert account(srv, poor)["balance"] == 0
    assert account(srv, "external")["balance"] == ext0["balance"] + paid
    assert account(srv, "payouts_clearing") == {"balance": 0, "held": 0, "available": 0}
    assert_ledger_balanced(srv)
    samples = parse_metrics(srv.metrics())
    assert find_samples(samples, "settled_payouts_total", status="SETTLED")[0][2] == len(settled)
    assert find_samples(samples, "settled_payouts_total", status="FAILED")[0][2] == len(failed)
    assert find_samples(samples, "settled_payout_approval_latency_seconds_count")[0][2] == 1


def test_approve_replays_with_the_same_key(start_server):
    srv = start_server(env={"SETTLED_SIM_CONFIRM_MS": "86400000"})
    key = new_api_key(srv)
    b = create_batch(srv, key, [(new_wallet(), 1)]).json
    idem = new_key()
    r1 = srv.post(f"/api/v2/payouts/batch/{b['id']}/approve", headers=ADMIN, key=idem)
    assert r1.status == 200 and r1.json["enqueued"] == 1, r1
    r2 = srv.post(f"/api/v2/payouts/batch/{b['id']}/approve", headers=ADMIN, key=idem)
    assert r2.status == 200 and r2.headers["X-Idempotency"] == "HIT" and r2.body == r1.body
    assert execute_jobs(srv, b["id"]) == 1


def test_batch_survives_key_rotation(start_server):
    srv = start_server(env={"SETTLED_SIM_CONFIRM_MS": "86400000"})
    r = srv.post("/api/admin/api-keys", {"name": "p"}, headers=ADMIN, key=new_key())
    old = r.json
    b = create_batch(srv, old["key"], [(new_wallet(), 1)]).json
    new = srv.post(f"/api/admin/api-keys/{old['id']}/rotate", headers=ADMIN, key=new_key()).json
    # The client is the same: its batches and references carry over.
    assert get_batch(srv, b["id"], headers=bearer(new["key"]))["id"] == b["id"]
    assert_error(create_batch(srv, new["key"], [(new_wallet(), 1)], reference=b["reference"]), 409,
                 "duplicate_reference")


# --------------------------------------------------------------------------
# 10,000 items


N_WALLETS = 100
AMOUNT = 100


def n_items():
    """10,000 on the embedded store (~30 s here). On PostgreSQL every
    settlement is its own WAL flush behind the payouts_clearing row lock, so
    10,000 take minutes on this 2-core machine: the suite runs 2,000 there
    to stay well inside CI's budget, and the full 10,000 with
    SETTLED_SLOW_TESTS=1 (figures in docs/internals/payouts.md)."""
    if backend_name() == "pg" and not os.environ.get("SETTLED_SLOW_TESTS"):
        return 2000
    return 10000


def test_10000_item_batch_is_processed_and_the_ledger_balances(start_server):
    N_ITEMS = n_items()
    srv = start_server(env={"SETTLED_SIM_CONFIRM_MS": "0", "SETTLED_WORKERS": "16",
                            "SETTLED_MAX_BODY": str(4 << 20)})
    key = new_api_key(srv)
    wallets = [new_wallet() for _ in range(N_WALLETS)]
    per_wallet = N_ITEMS // N_WALLETS * AMOUNT
    fund(srv, wallets, per_wallet)
    ext0 = account(srv, "external")

    items = [(wallets[i % N_WALLETS], AMOUNT) for i in range(N_ITEMS)]
    t0 = time.monotonic()
    r = create_batch(srv, key, items, reference="big")
    assert r.status == 201, r
    batch = r.json
    assert batch["item_count"] == N_ITEMS and batch["total_amount"] == str(N_ITEMS * AMOUNT)
    t_create = time.monotonic() - t0

    t1 = time.monotonic()
    r = approve(srv, batch["id"])
    assert r.status == 200 and r.json["enqueued"] == N_ITEMS, r
    t_approve = time.monotonic() - t1
    assert_error(approve(srv, batch["id"]), 409, "invalid_transition")
    assert execute_jobs(srv, batch["id"]) == N_ITEMS

    # A bound on waiting, not a speed assertion: speed is measured by
    # make bench, and the figure is printed here for the record.
    done = wait_completed(srv, batch["id"], timeout=900)
    t_run = time.monotonic() - t1
    print(f"\n{N_ITEMS}-item batch ({backend_name()}): create {t_create:.2f}s, "
          f"approve {t_approve:.2f}s, approve -> COMPLETED {t_run:.2f}s")

    full = get_batch(srv, batch["id"], headers=bearer(key))
    assert len(full["items"]) == N_ITEMS
    settled = [i for i in full["items"] if i["status"] == "SETTLED"]
    assert len(settled) == N_ITEMS, {i["error"] for i in full["items"] if i["status"] != "SETTLED"}
    total = sum(int(i["amount"]) for i in settled)
    assert full["totals"]["SETTLED"] == {"count": N_ITEMS, "amount": str(total)}
    assert total == N_ITEMS * AMOUNT
    assert done["remaining"] == 0
    # Approving twice enqueued nothing more; every job ran once.
    assert execute_jobs(srv, batch["id"]) == N_ITEMS
    assert scalar(srv, "SELECT count(*) FROM jobs WHERE kind = 'payout.confirm'") == N_ITEMS
    assert scalar(srv, "SELECT count(*) FROM jobs WHERE kind LIKE 'payout.%'"
                       " AND state <> 'completed'") == 0
    for w in wallets[:5]:
        assert account(srv, w) == {"balance": 0, "held": 0, "available": 0}
    assert account(srv, "external")["balance"] == ext0["balance"] + total
    assert account(srv, "payouts_clearing")["balance"] == 0
    assert_ledger_balanced(srv)


def test_racing_approvals_of_one_batch_approve_it_once(start_server):
    """Batches each approved from eight connections at once: one 200 that
    enqueued every item, every other the documented 409 invalid_transition
    with the batch's status, never 500, each item's job written once. On
    PostgreSQL (each unit its own transaction on four writers) the losers'
    guarded UPDATE waits for the winner's commit and then changes no row."""
    pg = backend_name() == "pg"
    srv = start(start_server, SETTLED_SIM_CONFIRM_MS="86400000",
                **({"SETTLED_PG_BATCH_MAX": "1", "SETTLED_PG_WRITE_CONNS": "4"} if pg else {}))
    key = new_api_key(srv)
    for _ in range(4):
        b = create_batch(srv, key, [(new_wallet(), 1), (new_wallet(), 2), (new_wallet(), 3)]).json
        results = concurrent_requests(srv.port, [
            {"method": "POST", "path": f"/api/v2/payouts/batch/{b['id']}/approve",
             "headers": {**ADMIN, "Idempotency-Key": new_key()}} for _ in range(8)])
        assert sorted(r.status for r in results) == [200] + [409] * 7, \
            [(r.status, r.json) for r in results]
        for r in results:
            if r.status == 200:
                assert r.json["status"] == "APPROVED" and r.json["enqueued"] == 3, r.json
            else:
                assert assert_error(r, 409, "invalid_transition")["status"] != "PENDING_APPROVAL"
        assert execute_jobs(srv, b["id"]) == 3
