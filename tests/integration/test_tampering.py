"""Reconciliation notices a ledger broken behind the server's back.

The store refuses every write that would break an invariant, so the only
way to break one is to go around it: SQL straight on the store with the
triggers out of the way (SQLite: dropped; PostgreSQL: session_replication_role
= replica, and the CHECK constraint dropped where a case needs it). Each
case below breaks exactly one invariant on a seeded ledger and asserts that
reconciliation fails exactly the checks it must (one, except where the
arithmetic ties two together), names the offending rows, counts the
problems in its metric, and that the alert rules of ops/alerts.yml fire on
the values the server exported (promtool test rules on them).
"""

import os
import re
import shutil
import sqlite3
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from conftest import ADMIN_TOKEN, backend_name, new_key, new_wallet, wait_until
from test_webhooks import ENV as WEBHOOK_ENV, standard

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "ops" / "alerts.yml"
CHECKS = ("transactions_balanced", "global_sum_zero", "balances_match_entries",
          "held_matches_holds", "no_overdraft", "holds_match_intents",
          "settled_claims_posted_once", "no_stuck_intents", "holds_resolved_once",
          "no_overdue_holds")


# --------------------------------------------------------------------------
# Going around the store


def tamper(server, *statements, drop_overdraft_check=False):
    b = server.backend
    if backend_name() == "sqlite":
        con = sqlite3.connect(str(b.path), timeout=30, isolation_level=None)
        try:
            # The triggers are the store's own guard: drop them all.
            for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
                con.execute(f'DROP TRIGGER "{name}"')
            if drop_overdraft_check:
                con.execute("PRAGMA ignore_check_constraints = ON")
            con.execute("BEGIN IMMEDIATE")
            for s in statements:
                con.execute(s)
            con.execute("COMMIT")
        finally:
            con.close()
        return
    pre = ["SET session_replication_role = replica"]
    if drop_overdraft_check:
        pre.append("DO $$ DECLARE c text; BEGIN"
                   " FOR c IN SELECT conname FROM pg_constraint"
                   "  WHERE conrelid = 'accounts'::regclass AND contype = 'c'"
                   "  AND pg_get_constraintdef(oid) LIKE '%may_go_negative%balance%'"
                   " LOOP EXECUTE format('ALTER TABLE accounts DROP CONSTRAINT %I', c); END LOOP; END $$")
    b.psql(*pre, "BEGIN", *statements, "COMMIT")


def scalar(server, sql):
    if backend_name() == "sqlite":
        uri = f"file:{server.backend.path}?mode=ro"
        con = sqlite3.connect(uri, uri=True, timeout=30)
        try:
            return con.execute(sql).fetchone()[0]
        finally:
            con.close()
    return server.backend.psql(sql).strip()


# --------------------------------------------------------------------------
# A ledger with something of everything


def balance(server, wallet):
    r = server.get(f"/api/v2/accounts/{wallet}", headers=ADMIN)
    return r.json["balance"] if r.status == 200 else None


def intent_status(server, intent_id):
    r = server.get(f"/api/v2/intents/{intent_id}", headers=ADMIN)
    assert r.status == 200, r
    return r.json["status"]


def seed(server, settle=True):
    """Two wallets paid 1234 each by a signed webhook (a posted payment each),
    then claims from the first: one SETTLED (if settle) and one left PENDING
    (or SUBMITTED, when the rail never confirms)."""
    w1, w2 = new_wallet(), new_wallet()
    for w in (w1, w2):
        assert server.register(w).status == 201
        assert standard(w, amount="1234").send(server).status == 200
    for w in (w1, w2):
        wait_until(lambda: balance(server, w) == "1234", timeout=15, what="the webhook payment")
    out = {"w1": w1, "w2": w2}
    r = server.post("/api/claim/prepare", {"wallet": w1, "amount": "100"}, key=new_key("p"))
    assert r.status == 201, r
    first = r.json["id"]
    r = server.post("/api/claim/record", {"intent_id": first, "tx_hash": "0x" + os.urandom(32).hex()},
                    key=new_key("r"))
    assert r.status == 200, r
    if settle:
        wait_until(lambda: intent_status(server, first) == "SETTLED", timeout=15, what="settlement")
        out["settled"] = first
    else:
        out["submitted"] = first
    r = server.post("/api/claim/prepare", {"wallet": w1, "amount": "50"}, key=new_key("p"))
    assert r.status == 201, r
    out["pending"] = r.json["id"]
    return out


def reconcile(server):
    r = server.post("/api/admin/reconciliation", headers=ADMIN, key=new_key("rec"))
    assert r.status in (200, 201), r
    return r.json


def metric(server, name):
    m = re.search(rf"^{name} (\S+)$", server.metrics(), re.M)
    assert m, f"{name} is not exported"
    return float(m.group(1))


def failing(report):
    return sorted(c for c in CHECKS if not report["checks"][c]["ok"])


# --------------------------------------------------------------------------
# The alert rules, evaluated by promtool on what the server exported


def alert_fires(alertname, series, value, eval_time="10m"):
    """True when promtool, given `series` at a constant `value` for 15
    minutes, evaluates `alertname` of ops/alerts.yml as firing at eval_time
    (its annotations rendered from the rule's own templates)."""
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool not found: scripts/deps installs it", pytrace=False)
    rule = next(r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]
                if r.get("alert") == alertname)
    shown = f"{value:g}"
    ann = {k: v.replace("{{ $value }}", shown).replace("{{ $labels.instance }}", "t:1")
           for k, v in rule.get("annotations", {}).items()}
    test = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": f'{series}{{job="settled", instance="t:1"}}',
                              "values": f"{shown}x15"}],
            "alert_rule_test": [{
                "eval_time": eval_time, "alertname": alertname,
                "exp_alerts": [{"exp_labels": {**rule.get("labels", {}), "instance": "t:1"},
                                "exp_annotations": ann}],
            }],
        }],
    }
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"settled-alert-{os.getpid()}-{alertname}.yml"
    path.write_text(yaml.safe_dump(test))
    try:
        p = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True,
                           timeout=60)
    finally:
        path.unlink()
    return p.returncode == 0, p.stdout + p.stderr


# --------------------------------------------------------------------------
# The cases: what to break, and which checks must fail

def case_transactions_balanced(s):
    # Move the wallet's credit of its payment into another transaction: two
    # transactions unbalanced, every account and the global sum untouched.
    payment = ("SELECT e.tx_id FROM ledger_entries e JOIN accounts a ON a.id = e.account_id"
               f" WHERE a.wallet = '{s['w2']}' AND e.direction = 'credit'")
    funding = "SELECT id FROM ledger_tx WHERE kind = 'treasury_funding'"
    return ([f"UPDATE ledger_entries SET tx_id = ({funding}) WHERE id = ("
             "SELECT e.id FROM ledger_entries e JOIN accounts a ON a.id = e.account_id"
             f" WHERE a.wallet = '{s['w2']}' AND e.direction = 'credit')"],
            ["transactions_balanced"], [payment, funding], {})


def case_global_sum_zero(s):
    # Money from nowhere on `external`: the balances no longer sum to zero.
    # external's balance then also disagrees with its entries: the two checks
    # are tied (a global sum off zero with every balance matching its entries
    # would need an unbalanced transaction instead).
    return (["UPDATE accounts SET balance = balance + 7 WHERE id = 'external'"],
            ["balances_match_entries", "global_sum_zero"], ["'external'"], {})


def case_balances_match_entries(s):
    # 5 moved from external to the wallet without entries: the sum stays 0.
    return ([f"UPDATE accounts SET balance = balance + 5 WHERE wallet = '{s['w2']}'",
             "UPDATE accounts SET balance = balance - 5 WHERE id = 'external'"],
            ["balances_match_entries"], [f"SELECT id FROM accounts WHERE wallet = '{s['w2']}'", "'external'"],
            {})


def case_held_matches_holds(s):
    return ([f"UPDATE accounts SET held = held + 1 WHERE wallet = '{s['w2']}'"],
            ["held_matches_holds"], [f"SELECT id FROM accounts WHERE wallet = '{s['w2']}'"], {})


def case_no_overdraft(s):
    # external is below zero (it mirrors money that came in); declare it an
    # account that may not be: its entries and holds still agree.
    return (["UPDATE accounts SET may_go_negative = 0 WHERE id = 'external'"],
            ["no_overdraft"], ["'external'"], {"drop_overdraft_check": True})


def case_holds_match_intents(s):
    # A pending claim marked FAILED while its hold stays pending.
    return ([f"UPDATE intents SET status = 'FAILED' WHERE id = '{s['pending']}'"],
            ["holds_match_intents"], [f"'{s['pending']}'", f"SELECT hold_id FROM intents WHERE id = '{s['pending']}'"],
            {})


def case_settled_claims_posted_once(s):
    # A SETTLED claim whose posting no longer says so.
    return ([f"UPDATE ledger_tx SET intent_id = NULL WHERE intent_id = '{s['settled']}'"],
            ["settled_claims_posted_once"], [f"'{s['settled']}'"], {})


def case_no_stuck_intents(s):
    # A SUBMITTED claim last touched a day ago (the rail never answers here).
    day = 24 * 3600 * 1000
    return ([f"UPDATE intents SET updated_at = updated_at - {day} WHERE id = '{s['submitted']}'"],
            ["no_stuck_intents"], [f"'{s['submitted']}'"], {})


def case_holds_resolved_once(s):
    # The settled claim's capture no longer names its hold: a captured hold
    # without its one posting (the intent's own posting still says SETTLED).
    hold = f"SELECT hold_id FROM intents WHERE id = '{s['settled']}'"
    return ([f"UPDATE ledger_tx SET hold_id = NULL WHERE hold_id = ({hold})"],
            ["holds_resolved_once"], [hold], {})


CASES = {
    "transactions_balanced": (case_transactions_balanced, {}),
    "global_sum_zero": (case_global_sum_zero, {}),
    "balances_match_entries": (case_balances_match_entries, {}),
    "held_matches_holds": (case_held_matches_holds, {}),
    "no_overdraft": (case_no_overdraft, {}),
    "holds_match_intents": (case_holds_match_intents, {}),
    "settled_claims_posted_once": (case_settled_claims_posted_once, {}),
    "holds_resolved_once": (case_holds_resolved_once, {}),
    # The rail never confirms and nothing counts as stuck for an hour, so
    # only the tampered intent is (the sweeper, on the same cut-off, would
    # move it next, which is why reconciliation runs right after).
    "no_stuck_intents": (case_no_stuck_intents,
                         {"SETTLED_SIM_CONFIRM_MS": "3600000", "SETTLED_STUCK_AFTER": "1h"}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_tampering_fails_exactly_its_check(start_server, name):
    make_case, extra_env = CASES[name]
    server = start_server(env={**WEBHOOK_ENV, **extra_env})
    state = seed(server, settle="SETTLED_SIM_CONFIRM_MS" not in extra_env)
    before = reconcile(server)
    assert before["ok"] is True and failing(before) == [], before
    assert metric(server, "settled_reconciliation_problems") == 0

    statements, must_fail, offenders, opts = make_case(state)
    expected_ids = [scalar(server, q if q.startswith("SELECT") else f"SELECT {q}") for q in offenders]
    tamper(server, *statements, **opts)

    report = reconcile(server)
    assert failing(report) == sorted(must_fail), report["checks"]
    assert report["ok"] is False
    assert report["problems"] == len(must_fail)
    # The report names the rows: every offender of the case, in a failed check.
    named = set()
    for c in must_fail:
        named |= set(report["checks"][c].get("examples", []))
    for i in expected_ids:
        if i is not None:
            assert i in named, (i, report["checks"])
    assert metric(server, "settled_reconciliation_problems") == len(must_fail)
    fired, out = alert_fires("SettledReconciliationProblems", "settled_reconciliation_problems",
                             metric(server, "settled_reconciliation_problems"))
    assert fired, out
    imbalance = metric(server, "settled_ledger_imbalance")
    if set(must_fail) & {"transactions_balanced", "global_sum_zero"}:
        assert imbalance > 0
        fired, out = alert_fires("SettledLedgerImbalance", "settled_ledger_imbalance", imbalance)
        assert fired, out
    else:
        assert imbalance == 0
    assert int(report["imbalance"]) == int(imbalance)
