"""POST /api/register (SPEC sections 3 and 8)."""

import pytest

from conftest import assert_error, concurrent_requests, new_wallet, only_responses, param_id



def test_register_creates_account(server):
    wallet = new_wallet(upper=True)
    before = server.snapshot()
    r = server.register(wallet)
    assert r.status == 201, r
    assert (r.headers.get("Content-Type") or "").startswith("application/json")
    body = r.json
    assert isinstance(body.get("id"), str) and body["id"], body
    assert body["wallet"] == wallet.lower()
    assert "referrer" in body and body["referrer"] is None, body
    assert body.get("created_at") not in (None, ""), body
    after = server.snapshot()
    assert after["accounts"] == before["accounts"] + 1


def test_register_with_explicit_null_referrer(server):
    r = server.post("/api/register", {"wallet": new_wallet(), "referrer": None})
    assert r.status == 201, r
    assert r.json["referrer"] is None


def test_same_wallet_any_case_is_409(server):
    wallet = new_wallet()
    assert server.register(wallet).status == 201
    for variant in (wallet, wallet.upper().replace("0X", "0x"), "0x" + wallet[2:].upper()):
        with server.unchanged():
            assert_error(server.register(variant), 409, "already_registered")


BAD_WALLETS = [
    "",
    "0x",
    "0x123",
    "0x" + "a" * 39,
    "0x" + "a" * 41,
    "0x" + "g" * 40,
    "a" * 42,                          # no 0x prefix
    "00" + "a" * 40,
    " 0x" + "a" * 40,
    "0x" + "a" * 40 + " ",
    "0x" + "a" * 40 + "\n",
    "0x" + "a" * 38 + "é",
    "alice@example.com",
]


@pytest.mark.parametrize("wallet", BAD_WALLETS, ids=param_id)
def test_bad_wallet_is_400(server, wallet):
    with server.unchanged():
        r = server.post("/api/register", {"wallet": wallet})
        assert_error(r, 400, "invalid_wallet", field="wallet")


@pytest.mark.parametrize("body", [
    {},
    {"referrer": None},
    {"wallet": None},
    {"wallet": 12345},
    {"wallet": ["0x" + "a" * 40]},
    {"wallet": {"address": "0x" + "a" * 40}},
    {"wallet": True},
])
def test_missing_or_non_string_wallet_is_400(server, body):
    with server.unchanged():
        r = server.post("/api/register", body)
        assert_error(r, 400, "invalid_wallet", field="wallet")


def test_a_misspelt_wallet_member_is_unknown_field(server):
    # "Wallet" is not "wallet": the member is named, not read as missing
    with server.unchanged():
        r = server.post("/api/register", {"Wallet": "0x" + "a" * 40})
        assert_error(r, 400, "unknown_field", field="Wallet")


def test_unknown_referrer_is_404(server):
    with server.unchanged():
        r = server.register(new_wallet(), referrer=new_wallet())
        assert_error(r, 404, "unknown_referrer")


@pytest.mark.parametrize("referrer", ["nope", "0x123", 42, ["0x" + "b" * 40]])
def test_malformed_referrer_is_400(server, referrer):
    with server.unchanged():
        r = server.post("/api/register", {"wallet": new_wallet(), "referrer": referrer})
        assert_error(r, 400, {"invalid_referrer", "invalid_wallet"}, field="referrer")


def test_known_referrer_is_recorded(server):
    ref = new_wallet()
    assert server.register(ref).status == 201
    wallet = new_wallet()
    r = server.register(wallet, referrer=ref.upper().replace("0X", "0x"))
    assert r.status == 201, r
    assert r.json["referrer"] == ref
    assert r.json["wallet"] == wallet


@pytest.mark.parametrize("registered", [False, True])
def test_wallet_cannot_refer_itself(server, registered):
    wallet = new_wallet()
    if registered:
        assert server.register(wallet).status == 201
    with server.unchanged():
        r = server.register(wallet, referrer=wallet)
        assert_error(r, 400, "invalid_referrer", field="referrer")
        r = server.register(wallet, referrer="0x" + wallet[2:].upper())
        assert_error(r, 400, "invalid_referrer", field="referrer")


def test_64_concurrent_different_wallets_all_201(server):
    before = server.snapshot()
    wallets = [new_wallet() for _ in range(64)]
    reqs = [{"method": "POST", "path": "/api/register", "json_body": {"wallet": w}} for w in wallets]
    results = only_responses(concurrent_requests(server.port, reqs))
    statuses = [r.status for r in results]
    assert statuses == [201] * 64, statuses
    assert sorted(r.json["wallet"] for r in results) == sorted(wallets)
    assert len({r.json["id"] for r in results}) == 64
    assert server.snapshot()["accounts"] == before["accounts"] + 64


def test_64_concurrent_same_wallet_one_201(server):
    before = server.snapshot()
    wallet = new_wallet()
    reqs = [{"method": "POST", "path": "/api/register", "json_body": {"wallet": wallet}}] * 64
    results = only_responses(concurrent_requests(server.port, reqs))
    created = [r for r in results if r.status == 201]
    conflicts = [r for r in results if r.status == 409]
    assert len(created) == 1, sorted(r.status for r in results)
    assert len(conflicts) == 63, sorted(r.status for r in results)
    for r in conflicts:
        assert_error(r, 409, "already_registered")
    assert server.snapshot()["accounts"] == before["accounts"] + 1


def test_64_concurrent_mixed_wallets_each_gets_its_own_answer(server):
    """New wallets and repeats of four wallets, all at once: the writes share
    group commits (one transaction per batch on PostgreSQL, one on SQLite),
    so a repeat that fails inside a batch must roll back alone, answer 409
    itself, and leave every batch-mate's registration in place."""
    before = server.snapshot()
    fresh = [new_wallet() for _ in range(48)]
    repeated = [new_wallet() for _ in range(4)]
    wallets = fresh + repeated * 4
    reqs = [{"method": "POST", "path": "/api/register", "json_body": {"wallet": w}} for w in wallets]
    results = only_responses(concurrent_requests(server.port, reqs))
    for w, r in zip(wallets, results):
        if w in fresh:
            assert r.status == 201 and r.json["wallet"] == w, r
    for w in repeated:
        answers = [r for x, r in zip(wallets, results) if x == w]
        assert sorted(r.status for r in answers) == [201, 409, 409, 409], [r.status for r in answers]
        for r in answers:
            if r.status == 409:
                assert_error(r, 409, "already_registered")
            else:
                assert r.json["wallet"] == w
    assert len({r.json["id"] for r in results if r.status == 201}) == 52
    assert server.snapshot()["accounts"] == before["accounts"] + 52
