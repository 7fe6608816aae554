"""SPEC section 5: tiered rate limits with standard headers.

Header syntax (draft-ietf-httpapi-ratelimit-headers-07 style, see
docs/internals/ratelimit.md "Headers"):

    RateLimit-Policy: 5;w=3600;name="register_ip", 10;w=86400;name="register_wallet"
    RateLimit: limit=5, remaining=4, reset=720
    X-RateLimit-Limit: 5 / X-RateLimit-Remaining: 4 / X-RateLimit-Reset: <unix s>

A 429 adds Retry-After (delta seconds, >= 1) equal to "retry_after" in the
body and to RateLimit's reset, and names the refusing policy in "policy".
"""

import contextlib
import re
import socket
import time

import pytest

from conftest import (
    ADMIN_TOKEN,
    BIN,
    BOOT_TIMEOUT,
    Server,
    wrapped,
    assert_error,
    concurrent_requests,
    find_samples,
    new_key,
    new_wallet,
    only_responses,
    parse_metrics,
)

RL_HEADERS = ("RateLimit", "RateLimit-Policy", "X-RateLimit-Limit",
              "X-RateLimit-Remaining", "X-RateLimit-Reset")
PASSED = (201, 409)     # a registration that got through the limiter

# Structured Fields (RFC 8941), as much as these two headers use.
_SF_KEY = r"[a-z*][a-z0-9_\-.*]*"
_SF_PARAM = rf";{_SF_KEY}(?:=(?:-?\d+|\"(?:[^\"\\]|\\.)*\"|[A-Za-z*][!#$%&'*+\-.^_`|~:/A-Za-z0-9]*))?"
_POLICY_ITEM_RE = re.compile(rf"^(\d+)((?:{_SF_PARAM})*)$")
_PARAM_RE = re.compile(rf";({_SF_KEY})(?:=(\"(?:[^\"\\]|\\.)*\"|[^;]*))?")
_RATELIMIT_RE = re.compile(r"^limit=(\d+), remaining=(\d+), reset=(\d+)$")


def parse_policy(value):
    """RateLimit-Policy -> [(limit, {param: value})]; asserts the syntax:
    a non-empty SF List of Integers with parameters, w required, and no two
    items with the same limit (draft-07 section 3.5)."""
    assert value, "empty RateLimit-Policy"
    items = []
    for member in value.split(", "):
        m = _POLICY_ITEM_RE.match(member)
        assert m, f"RateLimit-Policy member {member!r} is not an SF Integer with parameters"
        params = {}
        for k, v in _PARAM_RE.findall(m.group(2)):
            params[k] = v[1:-1] if v.startswith('"') else (int(v) if v.lstrip("-").isdigit() else v)
        assert isinstance(params.get("w"), int) and params["w"] > 0, f"no w= in {member!r}"
        items.append((int(m.group(1)), params))
    limits = [lim for lim, _ in items]
    assert len(limits) == len(set(limits)), f"two policies with the same limit: {value!r}"
    return items


def rl_state(resp):
    """Checks the five headers on a limited route's response for syntax and
    mutual consistency and returns (limit, remaining, reset, policies)."""
    for name in RL_HEADERS:
        assert resp.headers.get_all(name) and len(resp.headers.get_all(name)) == 1, \
            f"{name} missing or repeated on {resp!r}"
    m = _RATELIMIT_RE.match(resp.headers["RateLimit"])
    assert m, f"RateLimit {resp.headers['RateLimit']!r} is not limit=N, remaining=N, reset=N"
    limit, remaining, reset = (int(x) for x in m.groups())
    policies = parse_policy(resp.headers["RateLimit-Policy"])
    assert limit in [lim for lim, _ in policies], "RateLimit's limit is not one of the policies"
    assert resp.headers["X-RateLimit-Limit"] == str(limit)
    assert resp.headers["X-RateLimit-Remaining"] == str(remaining)
    assert 0 <= remaining <= limit
    assert reset >= 1, f"reset={reset}"
    xreset = resp.headers["X-RateLimit-Reset"]
    assert xreset.isdigit(), xreset
    after = time.time()
    before = resp.sent_at if resp.sent_at is not None else after
    # Unix seconds in the future, and the same instant as reset: the server
    # read its clock between the request's sending and our reading of the
    # answer (+-2 s of rounding either side). A bound around the read alone
    # failed when the answer came over a second after the server's clock
    # read (a loaded machine).
    assert int(xreset) > before, f"X-RateLimit-Reset {xreset} is not in the future ({before})"
    assert before + reset - 2 <= int(xreset) <= after + reset + 2, (xreset, before, after, reset)
    return limit, remaining, reset, policies


def policy_named(policies, name):
    found = [(lim, p) for lim, p in policies if p.get("name") == name]
    return found[0] if found else None


def assert_no_rl_headers(resp):
    for name in RL_HEADERS + ("Retry-After",):
        assert resp.headers.get(name) is None, f"{name} on {resp!r}"


def assert_limited(resp, policy, limit):
    """A 429 with every header and body field of SPEC section 5."""
    body = assert_error(resp, 429, "rate_limited")
    ra = resp.headers.get("Retry-After")
    assert ra is not None and ra.isdigit() and int(ra) >= 1, f"Retry-After {ra!r}"
    assert body.get("retry_after") == int(ra), (body, ra)
    assert body.get("policy") == policy, body
    lim, remaining, reset, policies = rl_state(resp)
    assert (lim, remaining) == (limit, 0), resp
    assert policy_named(policies, policy) is not None, policies
    assert policy_named(policies, policy)[0] == limit
    # draft-07 section 4: with Retry-After, reset names the same instant.
    assert reset == int(ra), (reset, ra)
    return int(ra)


def register(srv, wallet=None, xff=None, key=None, **kw):
    headers = {"X-Forwarded-For": xff} if xff is not None else None
    return srv.post("/api/register", {"wallet": wallet or new_wallet()}, headers=headers,
                    key=key, **kw)


def limited_count(srv, policy):
    samples = parse_metrics(srv.metrics())
    found = find_samples(samples, "settled_rate_limited_total", policy=policy)
    return sum(s[2] for s in found)


# --------------------------------------------------------------------------
# Per client IP


def test_register_5_per_hour_then_429_with_headers(start_server):
    srv = start_server(env={"RL_REGISTER_PER_HOUR": "5"})
    remaining = []
    first_sent = time.monotonic()
    for i in range(5):
        r = register(srv)
        passed = time.monotonic() - first_sent
        assert r.status in PASSED, (i, r)
        limit, rem, reset, policies = rl_state(r)
        assert limit == 5, r
        remaining.append(rem)
        lim, params = policy_named(policies, "register_ip")
        assert (lim, params["w"]) == (5, 3600), policies
        # GCRA: each request pushes the full-quota time out by T = 720 s from
        # the first request's instant; reset counts from this one's, later by
        # at most what passed since the first was sent (+-2 s of rounding):
        # a loaded machine may spread the five over seconds.
        assert 720 * (i + 1) - passed - 2 <= reset <= 720 * (i + 1) + 2, (i, reset, passed)
    assert remaining == [4, 3, 2, 1, 0]

    before = srv.snapshot()
    key = new_key("rl")
    r = register(srv, key=key)
    ra = assert_limited(r, "register_ip", 5)
    assert ra <= 720, ra               # one emission interval at most
    assert r.headers.get("X-Idempotency") is None, r
    assert srv.snapshot() == before, "the 429 wrote something"
    assert limited_count(srv, "register_ip") == 1
    # A replay of the same key is refused the same way, still writing nothing.
    assert_limited(register(srv, key=key), "register_ip", 5)
    assert srv.snapshot() == before
    assert limited_count(srv, "register_ip") == 2

    # Nothing of the refused request was kept, not even in memory: with the
    # limit raised (a restart on the same database) the same key is a MISS.
    # In scale-out mode the limiter's state lives in Redis and survives the
    # restart by design (the five passes would still count), so the restart
    # also gets a fresh key prefix there: a limiter as empty as in process.
    srv.stop()
    srv.env["RL_REGISTER_PER_HOUR"] = "100"
    srv.env["SETTLED_REDIS_PREFIX"] = f"fresh:{new_key('p')}:"
    srv.start()
    r = register(srv, key=key)
    assert r.status == 201 and r.headers.get("X-Idempotency") == "MISS", r
    assert srv.snapshot()["idempotency_keys"] == before["idempotency_keys"] + 1


def test_headers_show_most_restrictive_policy(start_server):
    # register_ip 4/hour, register_wallet 3/day: the wallet policy has the
    # fewer remaining for one wallet; the IP one once several wallets are used.
    srv = start_server(env={"RL_REGISTER_PER_HOUR": "4", "RL_REGISTER_PER_DAY_WALLET": "3"})
    w = new_wallet()
    r = register(srv, w)
    assert r.status == 201
    limit, rem, _, policies = rl_state(r)
    assert sorted((lim, p["name"], p["w"]) for lim, p in policies) == \
        [(3, "register_wallet", 86400), (4, "register_ip", 3600)]
    assert (limit, rem) == (3, 2), r       # ip 3 left, wallet 2 left
    r = register(srv)
    assert r.status == 201
    # ip 2 left, new wallet 2 left: a tie goes to the later reset (wallet).
    assert rl_state(r)[:2] == (3, 2), r
    r = register(srv)
    assert rl_state(r)[:2] == (4, 1), r    # ip 1 left, wallet 2 left
    r = register(srv)
    assert rl_state(r)[:2] == (4, 0), r
    assert_limited(register(srv), "register_ip", 4)


def test_health_3_per_minute(start_server):
    srv = start_server(env={"RL_HEALTH_PER_MIN": "3"})
    for i in range(3):
        r = srv.get("/healthz")
        assert r.status == 200, r
        limit, rem, reset, policies = rl_state(r)
        assert (limit, rem) == (3, 2 - i)
        assert policy_named(policies, "health")[1]["w"] == 60
    with srv.unchanged():
        ra = assert_limited(srv.get("/healthz"), "health", 3)
    assert ra <= 20
    # The three health routes share the policy; /metrics is not limited.
    assert_limited(srv.get("/health/live"), "health", 3)
    r = srv.get("/metrics")
    assert r.status == 200
    assert_no_rl_headers(r)
    assert limited_count(srv, "health") == 2


def test_limit_applies_to_bad_requests_too(start_server):
    # The per-IP policy counts every request on the route, well-formed or
    # not: a flood of malformed bodies is limited like any other, and a
    # 400 carries the headers too.
    srv = start_server(env={"RL_REGISTER_PER_HOUR": "3"})
    bad = [
        {"body": b"{not json", "headers": {"Content-Type": "application/json"}},
        {"body": b"", "headers": {"Content-Type": "application/json"}},
        {"json_body": {"wallet": "nope"}},
    ]
    for i, req in enumerate(bad):
        r = srv.request("POST", "/api/register", **req)
        assert r.status == 400, r
        assert rl_state(r)[:2] == (3, 2 - i), r
    with srv.unchanged():
        assert_limited(srv.request("POST", "/api/register", **bad[0]), "register_ip", 3)
        assert_limited(register(srv), "register_ip", 3)


# --------------------------------------------------------------------------
# Per wallet


def test_wallet_3_per_day_from_different_ips(start_server):
    srv = start_server(env={"RL_REGISTER_PER_HOUR": "2", "RL_REGISTER_PER_DAY_WALLET": "3",
                            "SETTLED_TRUST_PROXY": "127.0.0.1"})
    hexpart = new_wallet()[2:]
    variants = ["0x" + hexpart, "0x" + hexpart.upper(), "0X" + hexpart, "0X" + hexpart.upper()]
    statuses, shown = [], []
    for i, wallet in enumerate(variants[:3]):
        r = register(srv, wallet, xff=f"203.0.113.{i + 1}")
        assert r.status in PASSED, (i, r)
        statuses.append(r.status)
        shown.append(rl_state(r)[:2])
    assert statuses == [201, 409, 409]
    # (limit, remaining) of the most restrictive: each new address has 1 of
    # 2 left; the wallet 2, 1, 0 of 3 (the tie goes to the later reset).
    assert shown == [(2, 1), (3, 1), (3, 0)], shown
    before = srv.snapshot()
    r = register(srv, variants[3], xff="203.0.113.4")
    assert_limited(r, "register_wallet", 3)
    assert srv.snapshot() == before
    # Both policies are advertised on the 429.
    names = {p["name"] for _, p in rl_state(r)[3]}
    assert names == {"register_ip", "register_wallet"}, names
    # Another wallet from another address is not affected.
    assert register(srv, xff="203.0.113.5").status == 201
    assert limited_count(srv, "register_wallet") == 1
    assert limited_count(srv, "register_ip") == 0


# --------------------------------------------------------------------------
# Client address and X-Forwarded-For


def test_spoofed_xff_without_trust_proxy_changes_nothing(start_server):
    srv = start_server(env={"RL_REGISTER_PER_HOUR": "5", "SETTLED_TRUST_PROXY": None})
    for i in range(5):
        assert register(srv, xff=f"198.51.100.{i + 1}").status in PASSED
    assert_limited(register(srv, xff="198.51.100.77"), "register_ip", 5)
    assert_limited(register(srv), "register_ip", 5)


def test_xff_from_untrusted_peer_is_ignored(start_server):
    # A proxy list that does not name the actual peer: XFF is not honoured.
    srv = start_server(env={"RL_REGISTER_PER_HOUR": "2", "SETTLED_TRUST_PROXY": "192.0.2.1"})
    assert register(srv, xff="198.51.100.1").status in PASSED
    assert register(srv, xff="198.51.100.2").status in PASSED
    assert_limited(register(srv, xff="198.51.100.3"), "register_ip", 2)


def test_trusted_proxy_right_most_hop(start_server):
    srv = start_server(env={"RL_REGISTER_PER_HOUR": "2", "SETTLED_TRUST_PROXY": "127.0.0.1"})
    # The client prepends fake hops; the proxy appended 2.2.2.2.
    assert register(srv, xff="1.1.1.1, 2.2.2.2").status in PASSED
    assert register(srv, xff="9.9.9.9, 2.2.2.2").status in PASSED
    assert_limited(register(srv, xff="8.8.8.8,7.7.7.7, 2.2.2.2"), "register_ip", 2)
    assert_limited(register(srv, xff="2.2.2.2"), "register_ip", 2)
    assert_limited(register(srv, xff="  2.2.2.2  "), "register_ip", 2)
    # 2.2.2.2 on the left is just a fake hop: the key is the right-most one.
    assert register(srv, xff="2.2.2.2, 3.3.3.3").status in PASSED
    # The trusted peer's own budget is separate from its clients'.
    assert register(srv).status in PASSED


def test_trusted_proxy_chain_skips_every_trusted_hop(start_server):
    # Two proxies: 10.9.9.9 (outer) -> 127.0.0.1 (inner) -> settled.
    srv = start_server(env={"RL_REGISTER_PER_HOUR": "2",
                            "SETTLED_TRUST_PROXY": "127.0.0.1,10.9.9.9"})
    for client in ("5.5.5.5", "6.6.6.6", "7.7.7.7"):
        assert register(srv, xff=f"{client}, 10.9.9.9").status in PASSED, client
        assert register(srv, xff=f"1.2.3.4,{client} ,10.9.9.9").status in PASSED, client
        assert_limited(register(srv, xff=f"{client}, 10.9.9.9"), "register_ip", 2)


def test_xff_in_several_field_lines_uses_the_last(start_server):
    # A proxy may add its own X-Forwarded-For line after the client's
    # (RFC 9110 section 5.3: the lines combine in order); the client's line
    # must not decide the key.
    srv = start_server(env={"RL_REGISTER_PER_HOUR": "2", "SETTLED_TRUST_PROXY": "127.0.0.1"})

    def send(first_line):
        body = ('{"wallet": "%s"}' % new_wallet()).encode()
        data = (b"POST /api/register HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n"
                b"X-Forwarded-For: " + first_line.encode() + b"\r\n"
                b"X-Forwarded-For: 4.4.4.4\r\n"
                b"Connection: close\r\n\r\n" + body)
        return srv.raw(data)

    assert send("100.64.0.1").status in PASSED
    assert send("100.64.0.2").status in PASSED
    assert_limited(send("100.64.0.3"), "register_ip", 2)
    assert_limited(register(srv, xff="4.4.4.4"), "register_ip", 2)


def test_xff_ipv6_forms_are_one_key(start_server):
    srv = start_server(env={"RL_REGISTER_PER_HOUR": "2",
                            "SETTLED_TRUST_PROXY": "127.0.0.1,::1"})
    # ::1 written out in full is still the trusted proxy; 2001:db8::5 in any
    # spelling is one client.
    assert register(srv, xff="2001:DB8::5, 0:0:0:0:0:0:0:1").status in PASSED
    assert register(srv, xff="2001:db8:0:0::5").status in PASSED
    assert_limited(register(srv, xff="2001:0db8::0005"), "register_ip", 2)
    # An IPv4-mapped address is the IPv4 client.
    assert register(srv, xff="192.0.2.9").status in PASSED
    assert register(srv, xff="::ffff:192.0.2.9").status in PASSED
    assert_limited(register(srv, xff="192.0.2.9"), "register_ip", 2)
    # Some proxies append the client's port: it is not part of the key.
    # (Another /64 than 2001:db8::5's, which is limited by now.)
    assert register(srv, xff="[2001:db8:7::7]:443").status in PASSED
    assert register(srv, xff="2001:db8:7::7").status in PASSED
    assert_limited(register(srv, xff="[2001:DB8:7::7]"), "register_ip", 2)
    assert register(srv, xff="198.51.100.7:1234").status in PASSED
    assert register(srv, xff="198.51.100.7:1235").status in PASSED
    assert_limited(register(srv, xff="198.51.100.7"), "register_ip", 2)


def test_ipv6_clients_are_keyed_by_64_prefix(start_server):
    """One host holding a /64 cannot rotate addresses to escape a per-IP
    limit: every address of a /64 is one key; the next /64 is another;
    IPv4 (and IPv4-mapped IPv6) stays per address."""
    srv = start_server(env={"RL_REGISTER_PER_HOUR": "2", "SETTLED_TRUST_PROXY": "127.0.0.1"})
    assert register(srv, xff="2001:db8:1:2::1").status in PASSED
    assert register(srv, xff="2001:db8:1:2:ffff:ffff:ffff:fffe").status in PASSED
    for addr in ("2001:db8:1:2::abcd", "2001:db8:1:2:1:2:3:4", "[2001:db8:1:2::9]:80"):
        assert_limited(register(srv, xff=addr), "register_ip", 2)
    # The neighbouring /64s are other clients.
    assert register(srv, xff="2001:db8:1:3::1").status in PASSED
    assert register(srv, xff="2001:db8:1:1::1").status in PASSED
    # IPv4 neighbours are not grouped.
    assert register(srv, xff="192.0.2.1").status in PASSED
    assert register(srv, xff="::ffff:192.0.2.1").status in PASSED
    assert_limited(register(srv, xff="192.0.2.1"), "register_ip", 2)
    assert register(srv, xff="192.0.2.2").status in PASSED
    # The log keeps the whole address (only the limiter groups by /64).
    srv.wait_for_log(lambda r: r.get("client_ip") == "2001:db8:1:2::abcd",
                     what="a request line with the whole IPv6 address")


@pytest.mark.parametrize("xff", ["", "garbage", "1.2.3.4:", "1.2.3.4:80:80", "[::1",
                                 "1.1.1.1,,", "unknown, 1.1.1.1x", "1.1.1.1 2.2.2.2"])
def test_garbage_xff_falls_back_to_the_peer(start_server, xff):
    # Unparseable hops stop the walk at the last trustworthy address (here
    # the peer): they cannot be used to get a fresh key.
    srv = start_server(env={"RL_REGISTER_PER_HOUR": "2", "SETTLED_TRUST_PROXY": "127.0.0.1"})
    assert register(srv).status in PASSED
    assert register(srv, xff=xff).status in PASSED
    assert_limited(register(srv, xff=xff + "x"), "register_ip", 2)


# --------------------------------------------------------------------------
# Concurrency


def test_200_concurrent_against_50_exactly_50_pass(start_server):
    srv = start_server(env={"RL_REGISTER_PER_HOUR": "50"})
    before = srv.snapshot()
    reqs = [{"method": "POST", "path": "/api/register", "json_body": {"wallet": new_wallet()},
             "headers": {"Idempotency-Key": new_key("c")}} for _ in range(200)]
    results = only_responses(concurrent_requests(srv.port, reqs, timeout=120))
    passed = [r for r in results if r.status != 429]
    limited = [r for r in results if r.status == 429]
    assert len(passed) == 50, sorted(r.status for r in results)
    assert len(limited) == 150
    assert all(r.status == 201 for r in passed), sorted(r.status for r in passed)
    for r in limited:
        assert_limited(r, "register_ip", 50)
    assert all(0 <= int(r.headers["X-RateLimit-Remaining"]) < 50 for r in passed)
    after = srv.snapshot()
    assert after["accounts"] == before["accounts"] + 50
    assert after["idempotency_keys"] == before["idempotency_keys"] + 50
    assert limited_count(srv, "register_ip") == 150


# --------------------------------------------------------------------------
# Disabled policies


def test_disabled_policy_never_limits_and_sends_no_headers(start_server):
    srv = start_server(env={"RL_REGISTER_PER_HOUR": "0", "RL_REGISTER_PER_DAY_WALLET": "0",
                            "RL_HEALTH_PER_MIN": "0"})
    for _ in range(12):
        r = register(srv)
        assert r.status == 201, r
        assert_no_rl_headers(r)
    for _ in range(5):
        r = srv.get("/healthz")
        assert r.status == 200
        assert_no_rl_headers(r)
    assert limited_count(srv, "register_ip") == 0


def test_disabled_ip_policy_leaves_only_the_wallet_policy(start_server):
    srv = start_server(env={"RL_REGISTER_PER_HOUR": "0", "RL_REGISTER_PER_DAY_WALLET": "7"})
    for _ in range(12):
        r = register(srv)
        assert r.status == 201, r
        limit, rem, _, policies = rl_state(r)
        assert (limit, rem) == (7, 6)
        assert [p["name"] for _, p in policies] == ["register_wallet"], policies


def test_policies_with_equal_limits_are_advertised_once(start_server):
    # draft-07 section 3.5: two policies of RateLimit-Policy must not share
    # a limit; the one RateLimit reports is the one listed.
    srv = start_server(env={"RL_REGISTER_PER_HOUR": "5", "RL_REGISTER_PER_DAY_WALLET": "5"})
    w = new_wallet()
    r = register(srv, w)
    limit, rem, reset, policies = rl_state(r)
    assert (limit, rem) == (5, 4)
    assert len(policies) == 1, policies
    # On a tie the longer reset is reported (the wallet's day).
    assert policies[0][1]["name"] == "register_wallet" and reset > 3600, (policies, reset)
    r = register(srv)
    limit, rem, reset, policies = rl_state(r)
    assert (limit, rem, [p["name"] for _, p in policies]) == (5, 3, ["register_ip"]), r


# --------------------------------------------------------------------------
# Failed authentications per address (RL_AUTH_FAIL_PER_MIN)


def auth_failures(srv, route, result):
    s = find_samples(parse_metrics(srv.metrics()), "settled_auth_failures_total",
                     route=route, result=result)
    return s[0][2] if s else 0.0


def bearer(token, xff=None):
    h = {"Authorization": f"Bearer {token}"}
    if xff:
        h["X-Forwarded-For"] = xff
    return h


def test_auth_failures_are_limited_per_address(start_server):
    """401/403 answers count against the address; past the budget every
    authenticated route answers 429 to it, the right token included (else
    guessing would go on, reading 429 as "wrong"); other addresses and
    successful requests are not affected."""
    srv = start_server(env={"RL_AUTH_FAIL_PER_MIN": "3", "SETTLED_TRUST_PROXY": "127.0.0.1"})
    good = ADMIN_TOKEN
    bad = "x" * 40
    attacker, other = "198.51.100.10", "198.51.100.11"
    # Successes never count.
    for _ in range(10):
        assert srv.get("/api/admin/dlq", headers=bearer(good, attacker)).status == 200
    with srv.unchanged():
        for i, (path, token) in enumerate([("/api/admin/dlq", bad),          # 403
                                           ("/api/v2/intents/in_x", bad),    # 401
                                           ("/api/admin/dlq", None)]):       # 401, no token
            h = bearer(token, attacker) if token else {"X-Forwarded-For": attacker}
            r = srv.get(path, headers=h)
            assert r.status in (401, 403), r
            lim, remaining, _, policies = rl_state(r)
            assert (lim, remaining) == (3, 2 - i), r
            assert policy_named(policies, "auth_fail")
        r = srv.post("/api/admin/reconciliation", headers=bearer(bad, attacker), key=new_key())
        assert_limited(r, "auth_fail", 3)
        # The right token from that address: refused too, before it is checked.
        assert_limited(srv.get("/api/admin/dlq", headers=bearer(good, attacker)), "auth_fail", 3)
        assert_limited(srv.get("/api/v2/intents/in_x", headers=bearer(good, attacker)),
                       "auth_fail", 3)
    # Routes without authentication are not gated.
    assert register(srv, xff=attacker).status in PASSED
    # Another address is untouched.
    assert srv.get("/api/admin/dlq", headers=bearer(good, other)).status == 200
    assert srv.get("/api/admin/dlq", headers=bearer(bad, other)).status == 403
    assert auth_failures(srv, "/api/admin/dlq", "refused") == 3
    assert auth_failures(srv, "/api/v2/intents/{id}", "refused") == 1
    assert auth_failures(srv, "/api/admin/dlq", "limited") == 1
    assert auth_failures(srv, "/api/admin/reconciliation", "limited") == 1
    assert auth_failures(srv, "/api/v2/intents/{id}", "limited") == 1
    assert limited_count(srv, "auth_fail") == 3


def test_auth_failures_of_one_ipv6_64_share_a_budget(start_server):
    srv = start_server(env={"RL_AUTH_FAIL_PER_MIN": "2", "SETTLED_TRUST_PROXY": "127.0.0.1"})
    bad = "y" * 40
    assert srv.get("/api/admin/dlq", headers=bearer(bad, "2001:db8:5:5::1")).status == 403
    assert srv.get("/api/admin/dlq", headers=bearer(bad, "2001:db8:5:5::2")).status == 403
    assert_limited(srv.get("/api/admin/dlq", headers=bearer(ADMIN_TOKEN, "2001:db8:5:5:ffff::3")),
                   "auth_fail", 2)
    assert srv.get("/api/admin/dlq", headers=bearer(ADMIN_TOKEN, "2001:db8:5:6::1")).status == 200


def test_concurrent_auth_failures_pass_the_budget_exactly(start_server):
    """20 wrong tokens at once against a budget of 5: exactly 5 are
    answered 401 (charged), the other 15 are 429, on either backend."""
    srv = start_server(env={"RL_AUTH_FAIL_PER_MIN": "5"})
    reqs = [{"method": "GET", "path": "/api/v2/intents/in_x",
             "headers": {"Authorization": f"Bearer wrong-{i:02d}-" + "z" * 30}} for i in range(20)]
    statuses = sorted(r.status for r in only_responses(concurrent_requests(srv.port, reqs)))
    assert statuses == [401] * 5 + [429] * 15, statuses


def test_auth_fail_limit_zero_disables_it(start_server):
    srv = start_server(env={"RL_AUTH_FAIL_PER_MIN": "0"})
    for _ in range(30):
        r = srv.get("/api/admin/dlq", headers=bearer("q" * 40))
        assert r.status == 403, r
        assert_no_rl_headers(r)
    assert srv.get("/api/admin/dlq", headers=bearer(ADMIN_TOKEN)).status == 200


# --------------------------------------------------------------------------
# A server listening on [::1]: the IPv6 peer path end to end


def _ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class _V6Server(Server):
    """The harness's Server, listening on [::1] instead of 127.0.0.1."""

    def command(self):
        return wrapped([BIN, "--listen", "[::1]:0", "--port-file", str(self.port_file),
                        *self.backend.server_args(), *self.args], self.dir)

    def _wait_port(self):
        # The harness's bound (a fresh store's migrations under ASan on a
        # loaded machine took up to ~10 s: a 10 s bound failed by chance).
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "settled exited"
            port = self._read_port()
            if port:
                with contextlib.suppress(OSError):
                    socket.create_connection(("::1", port), timeout=1).close()
                    return port
            time.sleep(0.01)
        pytest.fail("settled did not listen on [::1]")


def _get_v6(port, path):
    with socket.create_connection(("::1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_peer_is_limited_and_logged(tmp_path):
    """A client connecting over IPv6 is keyed by its /64 (::/64 for ::1) and
    limited like any other; the log keeps its whole address."""
    srv = _V6Server(tmp_path / "v6", env={"RL_HEALTH_PER_MIN": "2"})
    try:
        srv.start()
        assert [_get_v6(srv.port, "/healthz") for _ in range(3)] == [200, 200, 429]
        srv.wait_for_log(lambda r: r.get("client_ip") == "::1" and r.get("status") == 429,
                         what="the 429 logged with client_ip ::1")
    finally:
        if srv.running:
            srv.stop()
        srv.backend.close()
