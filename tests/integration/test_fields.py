"""Body members a route does not define (SPEC section 3): 400 unknown_field.

Every route declares the members its body may carry in src/route_table.c
(struct route_field lists, route_match.h); the dispatcher refuses any other one
before the handler runs, so nothing is written and no idempotency record is
kept. Webhook payloads are the sender's format: extra members there are
ignored.

* The table and the document agree: each route's field list (read from the
  C text, as test_openapi.py reads the route table) names exactly the
  properties of its OpenAPI request schema, which says
  additionalProperties: false, nested fixed shapes included.
* Every operation of the document except the webhooks lists 400
  unknown_field and, sent its example body (or none) plus one undeclared
  member, answers 400 unknown_field naming it, and writes nothing. The
  operations come from the document, so a route added later is covered
  once it is documented.
* Webhooks with extra members, top-level and nested, are still accepted.
"""

import json
import re
import secrets
import time

import pytest

from conftest import ADMIN_TOKEN, assert_error, new_key, new_wallet, wait_until
from test_openapi import (ROUTES_C, documented_codes, load_doc, parse_routes, split_top,
                          strip_c_comments)
from test_webhooks import (CB_SECRETS, ENV as WEBHOOK_ENV, PATHS as WEBHOOK_PATHS, STD_KEYS,
                           STRIPE_SECRETS, b64_hmac, hex_hmac, rfc3339)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WEBHOOKS = set(WEBHOOK_PATHS.values())
METHODS = ("get", "post", "delete")


# --------------------------------------------------------------------------
# The field lists of src/route_table.c


def field_lists():
    """{array name: {member: nested array name or None}} from route_table.c."""
    text = strip_c_comments(ROUTES_C.read_text())
    out = {}
    for name, body in re.findall(r"static\s+const\s+struct\s+route_field\s+(\w+)\s*\[\s*\]\s*=\s*"
                                 r"\{(.*?)\}\s*;", text, re.S):
        members = {}
        for item in split_top(body):
            m = re.fullmatch(r'ROUTE_FIELD\(\s*"([^"]*)"\s*\)', item)
            if m:
                members[m.group(1)] = None
                continue
            m = re.fullmatch(r'ROUTE_SHAPE\(\s*"([^"]*)"\s*,\s*(\w+)\s*\)', item)
            if m:
                members[m.group(1)] = m.group(2)
                continue
            assert item == "ROUTE_FIELDS_END", f"{name}: odd field entry {item!r}"
        out[name] = members
    return out


def route_fields():
    """{(method, template): the entry's field list name or None} in table order."""
    text = strip_c_comments(ROUTES_C.read_text())
    m = re.search(r"settled_routes\s*\[\s*\]\s*=\s*\{", text)
    body = text[m.end():]
    out = {}
    routes = parse_routes()
    entries = [e for e in split_top(body[:body.index("};")]) if e.startswith("{")]
    assert len(entries) == len(routes)
    for r, entry in zip(routes, entries):
        parts = split_top(entry[1:-1])
        assert len(parts) == 6, f"{r['method']} {r['path']}: want 6 members, the last the " \
            f"field list (NULL: none): {entry!r}"
        out[(r["method"], r["path"])] = None if parts[5] == "NULL" else parts[5]
    return out, {(r["method"], r["path"]): r["flags"] for r in routes}


def schema_shape(doc, schema, where):
    """{member: nested shape or None} of an object schema with
    additionalProperties: false; problems appended to where[1]."""
    def resolve(s):
        while "$ref" in s:
            s = doc["components"]["schemas"][s["$ref"].rsplit("/", 1)[1]]
        return s
    s = resolve(schema)
    if s.get("additionalProperties") is not False:
        where[1].append(f"{where[0]}: request schema without additionalProperties: false")
    shape = {}
    for name, prop in s.get("properties", {}).items():
        p = resolve(prop)
        if p.get("type") == "array":
            p = resolve(p.get("items", {}))
        fixed = p.get("type") == "object" and p.get("additionalProperties") is False
        shape[name] = schema_shape(doc, p, (f"{where[0]}.{name}", where[1])) if fixed else None
    return shape


def table_shape(lists, name):
    return {k: (table_shape(lists, v) if v else None) for k, v in lists[name].items()}


def test_route_field_lists_match_the_openapi_request_schemas():
    doc = load_doc()
    lists = field_lists()
    fields, flags = route_fields()
    problems = []
    for (method, path), name in fields.items():
        op = doc["paths"].get(path, {}).get(method.lower())
        if op is None:
            continue  # test_openapi.py reports it
        where = f"{method} {path}"
        foreign = "ROUTE_FOREIGN_BODY" in flags[(method, path)]
        if path in WEBHOOKS:
            if not foreign or name is not None:
                problems.append(f"{where}: a webhook must be ROUTE_FOREIGN_BODY with no field list")
            continue
        if foreign:
            problems.append(f"{where}: ROUTE_FOREIGN_BODY is only for webhooks")
        body = op.get("requestBody")
        if body is None:
            if name is not None:
                problems.append(f"{where}: field list {name} but no requestBody documented")
            continue
        if name is None:
            problems.append(f"{where}: requestBody documented but the route declares no fields")
            continue
        assert name in lists, f"{where}: field list {name} not found in route_table.c"
        schema = body["content"]["application/json"]["schema"]
        documented = schema_shape(doc, schema, (where, problems))
        declared = table_shape(lists, name)
        if documented != declared:
            problems.append(f"{where}: route_table.c declares {declared}, the document {documented}")
    assert not problems, "\n".join(problems)


def test_every_operation_documents_unknown_field():
    doc = load_doc()
    missing = [f"{m} {p}" for m, p, op in operations()
               if "unknown_field" not in documented_codes(doc, op).get(400, ())]
    assert not missing, f"400 unknown_field not documented on: {missing}"


# --------------------------------------------------------------------------
# Every documented operation refuses an undeclared member


def start(start_server, env=None):
    """A server once its start-up writes are done (the ticker's first
    reconciliation report would race the "nothing written" checks)."""
    srv = start_server(env=env)
    wait_until(lambda: srv.snapshot().get("reconciliation_reports", 1) >= 1, timeout=10,
               what="the first reconciliation report")
    return srv


def operations():
    doc = load_doc()
    for path, ops in doc["paths"].items():
        if path in WEBHOOKS:
            continue
        for method, op in ops.items():
            if method in METHODS:
                yield method.upper(), path, op


def example_body(op):
    body = op.get("requestBody")
    if not body:
        return {}
    # the example when there is one; the refusal comes before any value is read
    return json.loads(json.dumps(body["content"]["application/json"].get("example", {})))


def concrete(path):
    return re.sub(r"\{\w+\}", "x1", path)


def test_every_route_refuses_an_undeclared_member(start_server):
    srv = start(start_server)
    seen = 0
    for method, path, op in operations():
        body = example_body(op)
        body["bogus_member"] = 1
        headers = {} if op.get("security") == [] else dict(ADMIN)
        if method == "POST":
            headers["Idempotency-Key"] = new_key()
        with srv.unchanged():
            r = srv.request(method, concrete(path), json_body=body, headers=headers)
            b = assert_error(r, 400, "unknown_field", field="bogus_member")
        assert "bogus_member" in b["message"], b
        seen += 1
    assert seen >= 20


def test_unknown_field_is_checked_before_the_values(server):
    # a typo'd member wins over a bad value: the client learns what it
    # actually got wrong first, and the wallet limit is not charged
    with server.unchanged():
        r = server.post("/api/register", {"wallet": "not a wallet", "walet": new_wallet()},
                        key=new_key())
        assert_error(r, 400, "unknown_field", field="walet")


def test_the_first_undeclared_member_in_body_order_is_named(server):
    body = '{"zzz":1,"wallet":"%s","aaa":2}' % new_wallet()
    with server.unchanged():
        r = server.post("/api/register", body=body.encode(),
                        headers={"Content-Type": "application/json"})
        assert_error(r, 400, "unknown_field", field="zzz")


def test_a_refused_request_keeps_no_idempotency_record(server):
    key, wallet = new_key(), new_wallet()
    with server.unchanged():
        r = server.post("/api/register", {"wallet": wallet, "refferer": new_wallet()}, key=key)
        assert_error(r, 400, "unknown_field", field="refferer")
    # the same key with the corrected body is a first request, not a reuse
    r = server.post("/api/register", {"wallet": wallet}, key=key)
    assert r.status == 201, r
    assert r.headers.get("X-Idempotency") == "MISS", r


def test_names_compare_exactly(server):
    with server.unchanged():
        r = server.post("/api/register", {"Wallet": new_wallet()}, key=new_key())
        assert_error(r, 400, "unknown_field", field="Wallet")


@pytest.mark.parametrize("items,field", [
    ([{"wallet": "W", "amount": "1", "memo": "x"}], "items[0].memo"),
    ([{"wallet": "W", "amount": "1"}, {"wallet": "W", "amount": "1", "currency": "USD"}],
     "items[1].currency"),
    # a malformed item is the handler's to refuse (400 invalid_item), but an
    # object after it is still checked
    (["not an object", {"wallet": "W", "amount": "1", "x": 1}], "items[1].x"),
])
def test_payout_items_refuse_undeclared_members(start_server, items, field):
    srv = start(start_server)
    w = new_wallet()
    items = [{k: (w if v == "W" else v) for k, v in it.items()} if isinstance(it, dict) else it
             for it in items]
    with srv.unchanged():
        r = srv.post("/api/v2/payouts/batch", {"reference": f"r-{secrets.token_hex(4)}",
                                                "items": items},
                     headers=ADMIN, key=new_key())
        assert_error(r, 400, "unknown_field", field=field)


def test_declared_optional_members_are_accepted(server):
    referrer = new_wallet()
    assert server.register(referrer).status == 201
    r = server.post("/api/register", {"wallet": new_wallet(), "referrer": referrer}, key=new_key())
    assert r.status == 201, r


def test_a_body_without_members_is_still_accepted_where_none_are_defined(server):
    # routes without a body take {} (and no body) as before
    r = server.post("/api/admin/reconciliation", {}, headers=ADMIN, key=new_key())
    assert r.status in (200, 201), r


# --------------------------------------------------------------------------
# Webhooks ignore members they do not know


def extra_members_deliveries(wallet):
    """One paying delivery per provider, with unknown members at the top and
    nested, signed here."""
    now = int(time.time())
    cb_id = f"cb-{secrets.token_hex(8)}"
    cb = json.dumps({"id": secrets.token_hex(4), "scheduled_for": "soon", "api_version": "2018",
                     "event": {"id": cb_id, "type": "charge:confirmed", "created_at": rfc3339(now),
                               "resource": "event", "new_member": {"x": [1, 2]},
                               "data": {"code": "ABC", "metadata": {"wallet": wallet,
                                                                    "customer": "c1"},
                                        "pricing": {"local": {"amount": "12.34",
                                                              "currency": "USD", "extra": 1}}}}
                     }).encode()
    st_id = f"evt_{secrets.token_hex(8)}"
    st = json.dumps({"id": st_id, "object": "event", "type": "payment_intent.succeeded",
                     "created": now, "livemode": False, "pending_webhooks": 1,
                     "data": {"object": {"id": "pi_1", "amount": 1234, "currency": "usd",
                                         "amount_details": {"tip": {}},
                                         "metadata": {"wallet": wallet, "order": "o1"}},
                              "previous_attributes": None}}).encode()
    sd_id = f"msg_{secrets.token_hex(8)}"
    sd = json.dumps({"type": "payment.confirmed", "timestamp": rfc3339(now), "extra": True,
                     "data": {"wallet": wallet, "amount": "1234", "asset": "USD",
                              "note": "unknown"}}).encode()
    st_sig = hex_hmac(STRIPE_SECRETS[0], f"{now}.".encode() + st)
    sd_sig = b64_hmac(STD_KEYS[0], f"{sd_id}.{now}.".encode() + sd)
    return [
        (WEBHOOK_PATHS["coinbase"], cb, {"X-CC-Webhook-Signature": hex_hmac(CB_SECRETS[0], cb)}),
        (WEBHOOK_PATHS["stripe"], st, {"Stripe-Signature": f"t={now},v1={st_sig}"}),
        (WEBHOOK_PATHS["standard"], sd, {"webhook-id": sd_id, "webhook-timestamp": str(now),
                                          "webhook-signature": f"v1,{sd_sig}"}),
    ]


def test_webhooks_accept_members_they_do_not_know(start_server):
    srv = start_server(env=WEBHOOK_ENV)
    wallet = new_wallet()
    assert srv.register(wallet).status == 201
    for path, body, headers in extra_members_deliveries(wallet):
        r = srv.post(path, body=body, headers={"Content-Type": "application/json", **headers})
        assert r.status == 200 and r.json == {"status": "accepted"}, (path, r)

    def credited():
        r = srv.get(f"/api/v2/accounts/{wallet}", headers=ADMIN)
        return r.status == 200 and r.json["balance"] == str(3 * 1234)
    wait_until(credited, timeout=15, what="the three deliveries to be credited")
