"""A property test of the Ledger API's money movement (SPEC sections 6 and
13), through HTTP: thousands of random transfers, holds, captures (full and
part), voids and expiries across several clients' accounts, checked against
a model kept by the test after every step.

After every step: the answer is the one the model predicts (201/200, or
422 insufficient_funds / unknown_account, 409 hold_not_pending, 404
not_found, 400 invalid_amount), and the balance and held of every account
the step touched are the model's. Every CHECK_EVERY steps and at the end:
every account's balance, held and available; no account that may not go
negative below zero; reconciliation ok (the global sum zero, held equal to
the pending holds, every hold resolved once); every hold's state and
captured amount as the model says.

Expiry is deterministic: holds that must expire are made in a batch with
expires_in=1, the test waits until they are due, then either lets the
sweep expire them or sends a capture or void, which must answer 409
hold_not_pending state=EXPIRED; other holds live an hour.

SETTLED_PROPERTY_STEPS (default 2000, 1200 on PostgreSQL) and SETTLED_PROPERTY_SEED (default:
random, printed) make longer runs and replays:
  SETTLED_PROPERTY_STEPS=20000 SETTLED_PROPERTY_SEED=42 pytest -k property
"""

import http.client
import json
import os
import random
import time

from conftest import ADMIN_TOKEN, backend_name, new_key, new_wallet, wait_until

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# PostgreSQL commits are slower here (a shared machine): fewer default steps
# keep it within a minute.
STEPS = int(os.environ.get("SETTLED_PROPERTY_STEPS") or (1200 if backend_name() == "pg" else 2000))
CHECK_EVERY = 250
EXPIRY_EVERY = 400          # steps between two expiry batches
CLIENTS = 3
FUNDING = 5000


class Conn:
    """One keep-alive connection (thousands of requests: no connect each)."""

    def __init__(self, port):
        self.port = port
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def req(self, method, path, body=None, headers=None, key=True):
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        if key and method == "POST":
            hdrs["Idempotency-Key"] = new_key()
        for attempt in range(2):
            try:
                self.c.request(method, path, body=data, headers=hdrs)
                r = self.c.getresponse()
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
            except (http.client.HTTPException, ConnectionError):
                if attempt:
                    raise
                self.c.close()
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        raise AssertionError("unreachable")


class Model:
    def __init__(self):
        self.acct = {}      # admin name -> {"balance", "held", "overdraft"}
        self.holds = {}     # id -> {"from", "to", "amount", "state", "captured", "owner"}

    def add(self, name, overdraft, balance=0, held=0):
        self.acct[name] = {"balance": balance, "held": held, "overdraft": overdraft}

    def available(self, name):
        a = self.acct[name]
        return a["balance"] - a["held"]

    def covers(self, name, amount):
        return self.acct[name]["overdraft"] or self.available(name) >= amount

    def move(self, frm, to, amount):
        self.acct[frm]["balance"] -= amount
        self.acct[to]["balance"] += amount


def test_property_transfers_holds_captures_voids_expiries(start_server):
    seed = int(os.environ.get("SETTLED_PROPERTY_SEED") or random.randrange(1 << 48))
    print(f"holds property: seed {seed}, {STEPS} steps; replay with SETTLED_PROPERTY_SEED={seed}")
    rnd = random.Random(seed)
    srv = start_server()
    c = Conn(srv.port)
    m = Model()
    counts = {}

    def note(what):
        counts[what] = counts.get(what, 0) + 1

    # ---- the world: clients with a funded account and an overdraft one,
    # wallets, revenue and the treasury (admin names throughout)
    clients = []
    for i in range(CLIENTS):
        st, key = c.req("POST", "/api/admin/api-keys", {"name": f"prop{i}"}, ADMIN)
        assert st == 201, key
        cl = {"id": key["client_id"], "h": {"Authorization": f"Bearer {key['key']}"},
              "accounts": {}}
        for name, od in (("main", False), ("float", True)):
            st, a = c.req("POST", "/api/v2/accounts", {"name": name, "overdraft": od}, cl["h"])
            assert st == 201, a
            q = f"{cl['id']}/{name}"
            cl["accounts"][name] = q
            m.add(q, od)
        clients.append(cl)
    wallets = []
    for _ in range(3):
        w = new_wallet()
        st, _ = c.req("POST", "/api/register", {"wallet": w})
        assert st == 201
        wallets.append(w)
        m.add(w, False)
    st, t = c.req("GET", "/api/v2/accounts/treasury", None, ADMIN)
    m.add("treasury", False, int(t["balance"]), int(t["held"]))
    st, r = c.req("GET", "/api/v2/accounts/revenue", None, ADMIN)
    m.add("revenue", True, int(r["balance"]), int(r["held"]))
    for cl in clients:
        q = cl["accounts"]["main"]
        st, body = c.req("POST", "/api/v2/transfers",
                         {"from": "treasury", "to": q, "amount": str(FUNDING)}, ADMIN)
        assert st == 201, body
        m.move("treasury", q, FUNDING)

    def check(names, where):
        for n in names:
            st, a = c.req("GET", f"/api/v2/accounts/{n}", None, ADMIN)
            assert st == 200, (where, n, a)
            want = m.acct[n]
            got = {"balance": int(a["balance"]), "held": int(a["held"])}
            assert got == {"balance": want["balance"], "held": want["held"]}, \
                f"{where}: {n}: server {got}, model {want} (seed {seed})"
            assert int(a["available"]) == want["balance"] - want["held"], (where, n, a)
            if not want["overdraft"]:
                assert int(a["available"]) >= 0 and want["balance"] >= 0, (where, n, a)

    def check_all(where):
        check(list(m.acct), where)
        st, rep = c.req("POST", "/api/admin/reconciliation", None, ADMIN)
        assert st in (200, 201), rep
        bad = {k: v for k, v in rep["checks"].items() if not v["ok"]}
        assert not bad, f"{where}: reconciliation: {bad} (seed {seed})"
        assert rep["checks"]["global_sum_zero"]["balance_sum"] == "0"
        server, after = {}, None
        while True:     # every hold, a page at a time
            st, page = c.req("GET", "/api/v2/holds?limit=100" + (f"&after={after}" if after else ""),
                             None, ADMIN)
            assert st == 200, (where, page)
            server.update({g["id"]: (g["state"], int(g["captured"])) for g in page["data"]})
            after = page["next_after"]
            if not after:
                break
        for hid, h in m.holds.items():
            assert server.get(hid) == (h["state"], h["captured"]), \
                f"{where}: hold {hid}: server {server.get(hid)}, model {h} (seed {seed})"

    def pick_hold(cl, states=None):
        ids = [i for i, h in m.holds.items() if h["owner"] is cl and
               (states is None or h["state"] in states)]
        return rnd.choice(ids) if ids else None

    def destinations(cl, frm):
        own = [q for q in cl["accounts"].values() if q != frm]
        return own + wallets + ["revenue"]

    def short(cl, q):
        """How the client names its own account (or a wallet / revenue)."""
        return q.split("/", 1)[1] if q.startswith(cl["id"] + "/") else q

    def amount_for(frm):
        if rnd.random() < 0.15:
            return m.available(frm) + rnd.randint(1, 50) if not m.acct[frm]["overdraft"] \
                else rnd.randint(1, 3000)
        return rnd.randint(1, max(1, min(400, max(m.available(frm), 1))))

    def op_transfer(cl):
        frm = rnd.choice(list(cl["accounts"].values()))
        to = rnd.choice(destinations(cl, frm))
        amt = amount_for(frm)
        st, b = c.req("POST", "/api/v2/transfers",
                      {"from": short(cl, frm), "to": short(cl, to), "amount": str(amt)}, cl["h"])
        if m.covers(frm, amt):
            assert st == 201, (st, b, seed)
            m.move(frm, to, amt)
            note("transfer")
        else:
            assert st == 422 and b["error"] == "insufficient_funds", (st, b, seed)
            note("transfer refused")
        return [frm, to]

    def op_hold(cl, expires_in=3600, frm=None):
        frm = frm or rnd.choice(list(cl["accounts"].values()))
        to = rnd.choice(destinations(cl, frm))
        amt = amount_for(frm)
        st, b = c.req("POST", "/api/v2/holds", {"from": short(cl, frm), "to": short(cl, to),
                                                 "amount": str(amt), "expires_in": expires_in},
                      cl["h"])
        if m.covers(frm, amt):
            assert st == 201 and b["state"] == "PENDING", (st, b, seed)
            m.acct[frm]["held"] += amt
            m.holds[b["id"]] = {"from": frm, "to": to, "amount": amt, "state": "PENDING",
                                "captured": 0, "owner": cl}
            note("hold")
            return [frm, to], b["id"]
        assert st == 422 and b["error"] == "insufficient_funds" and b["account"] == short(cl, frm), \
            (st, b, seed)
        note("hold refused")
        return [frm, to], None

    def resolve(hid, how, amount=None):
        h = m.holds[hid]
        h["state"] = how
        m.acct[h["from"]]["held"] -= h["amount"]
        if how == "CAPTURED":
            h["captured"] = amount
            m.move(h["from"], h["to"], amount)

    def op_capture(cl):
        hid = pick_hold(cl)
        if hid is None:
            return []
        h = m.holds[hid]
        full = rnd.random() < 0.4
        amt = None if full else rnd.randint(1, h["amount"] + (5 if rnd.random() < 0.1 else 0))
        st, b = c.req("POST", f"/api/v2/holds/{hid}/capture",
                      None if full else {"amount": str(amt)}, cl["h"])
        if h["state"] != "PENDING":
            assert st == 409 and b["error"] == "hold_not_pending" and b["state"] == h["state"], \
                (st, b, h, seed)
            note("capture refused (resolved)")
        elif amt is not None and amt > h["amount"]:
            assert st == 400 and b["error"] == "invalid_amount", (st, b, seed)
            note("capture refused (too much)")
        else:
            assert st == 200 and b["state"] == "CAPTURED", (st, b, seed)
            resolve(hid, "CAPTURED", h["amount"] if full else amt)
            assert int(b["captured"]) == h["captured"]
            note("capture full" if full or amt == h["amount"] else "capture part")
        return [h["from"], h["to"]]

    def op_void(cl):
        hid = pick_hold(cl)
        if hid is None:
            return []
        h = m.holds[hid]
        st, b = c.req("POST", f"/api/v2/holds/{hid}/void", None, cl["h"])
        if h["state"] != "PENDING":
            assert st == 409 and b["error"] == "hold_not_pending" and b["state"] == h["state"], \
                (st, b, h, seed)
            note("void refused")
        else:
            assert st == 200 and b["state"] == "VOIDED", (st, b, seed)
            resolve(hid, "VOIDED")
            note("void")
        return [h["from"]]

    def op_foreign(cl):
        """Another client's hold: 404, nothing changes."""
        others = [o for o in clients if o is not cl]
        hid = pick_hold(rnd.choice(others))
        if hid is None:
            return []
        path = rnd.choice([f"/api/v2/holds/{hid}/capture", f"/api/v2/holds/{hid}/void",
                           f"/api/v2/holds/{hid}"])
        st, b = c.req("POST" if path.endswith(("capture", "void")) else "GET", path, None, cl["h"])
        assert st == 404 and b["error"] == "not_found", (st, b, seed)
        note("foreign hold refused")
        return [m.holds[hid]["from"]]

    def expiry_batch():
        # Each hold of a batch from an account of its own: on a slow
        # machine the sweep may expire an early hold of the batch while
        # later ones are still being made, and a later hold from the same
        # account would then find more available than the model (which
        # counts the early one held until the batch resolves it).
        made = []
        pool = [(cl, q) for cl in clients for q in cl["accounts"].values()]
        for cl, frm in rnd.sample(pool, rnd.randint(2, min(6, len(pool)))):
            _, hid = op_hold(cl, expires_in=1, frm=frm)
            if hid:
                made.append((cl, hid))
        if not made:
            return
        time.sleep(1.1)
        for cl, hid in made:
            r = rnd.random()
            if r < 0.4:     # too late to capture
                st, b = c.req("POST", f"/api/v2/holds/{hid}/capture", None, cl["h"])
            elif r < 0.7:   # or to void
                st, b = c.req("POST", f"/api/v2/holds/{hid}/void", None, cl["h"])
            else:           # or the sweep gets it
                wait_until(lambda: c.req("GET", f"/api/v2/holds/{hid}", None, cl["h"])[1]["state"]
                           == "EXPIRED", timeout=10, what="the sweep to expire a hold")
                st, b = 409, {"error": "hold_not_pending", "state": "EXPIRED"}
            assert st == 409 and b["error"] == "hold_not_pending" and b["state"] == "EXPIRED", \
                (st, b, seed)
            resolve(hid, "EXPIRED")
            note("expired")
        # Checked once all are resolved: the sweep expires every due hold
        # of the batch at once, not one per answer above.
        check({a for _, hid in made for a in (m.holds[hid]["from"], m.holds[hid]["to"])},
              "after an expiry batch")

    ops = [(op_transfer, 3), (op_hold, 4), (op_capture, 3), (op_void, 2), (op_foreign, 1)]
    table = [f for f, w in ops for _ in range(w)]
    start = time.monotonic()
    for step in range(1, STEPS + 1):
        cl = rnd.choice(clients)
        f = rnd.choice(table)
        touched = f(cl)
        if isinstance(touched, tuple):
            touched = touched[0]
        check(set(touched), f"step {step} ({f.__name__})")
        if step % EXPIRY_EVERY == 0:
            expiry_batch()
        if step % CHECK_EVERY == 0:
            check_all(f"after step {step}")
    expiry_batch()
    check_all("at the end")
    states = {}
    for h in m.holds.values():
        states[h["state"]] = states.get(h["state"], 0) + 1
    print(f"holds property: {STEPS} steps in {time.monotonic() - start:.1f}s; {dict(sorted(counts.items()))};"
          f" holds by state {states}")
    for must in ("transfer", "hold", "capture part", "capture full", "void", "expired",
                 "hold refused", "capture refused (resolved)"):
        assert counts.get(must), f"the run never did {must!r}: {counts} (seed {seed})"
