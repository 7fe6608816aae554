"""The operations files in ops/ are valid and name what settled exports.

* ops/prometheus.yml: `promtool check config` (which also loads the rule
  files it names); ops/alerts.yml: `promtool check rules`, and the unit
  tests of ops/alerts.test.yml with `promtool test rules` (promtool is in
  Debian's prometheus package, installed by scripts/deps).
* Every metric name in the alert rules and in the Grafana dashboard
  (ops/grafana/settled.json) is one a live server exports (# TYPE lines of
  GET /metrics, histograms with their _bucket/_sum/_count series), and each
  dashboard query is valid PromQL (checked by promtool as recording rules).
  The dashboard and the alerts cover the golden signals, the queue and the ledger.
* Every alert has a severity, a summary and a runbook that exists.
* ops/settled.service passes `systemd-analyze verify` with no warning and
  has the systemd hardening a money service needs; every variable of
  ops/settled.env.example is one `settled --help` knows, and the server
  starts with the example's active settings.
"""

import json
import re
import shutil
import subprocess

import pytest

from conftest import ADMIN_TOKEN, BIN, ROOT, run_settled

OPS = ROOT / "ops"
PROM = OPS / "prometheus.yml"
ALERTS = OPS / "alerts.yml"
ALERT_TESTS = OPS / "alerts.test.yml"
DASHBOARD = OPS / "grafana" / "settled.json"
UNIT = OPS / "settled.service"
ENV_EXAMPLE = OPS / "settled.env.example"
RUNBOOKS = ROOT / "docs" / "runbooks"

# Series that come from Prometheus or the blackbox exporter, not settled.
EXTERNAL_METRICS = {"up", "probe_success"}
METRIC_RE = re.compile(r"\b((?:settled|http|process)_[a-z0-9_]+)\b")


def tool(name):
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found: scripts/deps installs it", pytrace=False)
    return path


def promtool(*args):
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, timeout=60)


def exported_metrics(server):
    text = server.metrics()
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names.add(name)
        if kind == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
    assert "http_requests_total" in names, text[:500]
    return names


def dashboard_exprs():
    dash = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            exprs.append((panel["title"], t["expr"]))
    return dash, exprs


def test_prometheus_config_is_valid():
    p = promtool("check", "config", str(PROM))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout + p.stderr


def test_alert_rules_are_valid_and_their_unit_tests_pass():
    p = promtool("check", "rules", str(ALERTS))
    assert p.returncode == 0, p.stdout + p.stderr
    p = promtool("test", "rules", str(ALERT_TESTS))
    assert p.returncode == 0 and "SUCCESS" in p.stdout, p.stdout + p.stderr


def test_every_alert_has_severity_summary_and_an_existing_runbook():
    text = ALERTS.read_text()
    blocks = re.split(r"^\s*- alert:\s*", text, flags=re.M)[1:]
    assert len(blocks) >= 10, "alerts not found"
    problems = []
    for block in blocks:
        name = block.split("\n", 1)[0].strip()
        body = re.split(r"^\s*- name:", block, flags=re.M)[0]
        sev = re.search(r"^\s*severity:\s*(\S+)", body, re.M)
        if not sev or sev.group(1) not in ("page", "ticket"):
            problems.append(f"{name}: severity page|ticket missing")
        if not re.search(r"^\s*summary:", body, re.M):
            problems.append(f"{name}: no summary")
        rb = re.search(r"^\s*runbook_url:\s*(\S+)", body, re.M)
        if name != "SettledFileDescriptorsNearLimit":
            if not rb:
                problems.append(f"{name}: no runbook_url")
            elif not (ROOT / rb.group(1)).is_file():
                problems.append(f"{name}: runbook {rb.group(1)} does not exist")
    assert not problems, "\n".join(problems)
    for topic in ("settled_ledger_imbalance", "settled_dlq_jobs", "http_request_duration_seconds_bucket",
                  'http_requests_total{status=~"5..', 'up{job="settled"}', "probe_success"):
        assert topic in text, f"no alert on {topic}"


def test_runbooks_cover_the_issue():
    for name in ("stuck-intents", "dlq-growth", "webhook-failures", "ledger-imbalance",
                 "redis-down", "postgres-down"):
        text = (RUNBOOKS / f"{name}.md").read_text()
        for part in ("## What shows it", "## Inspect", "## Fix"):
            assert part in text, f"{name}.md has no {part!r}"
        assert "curl " in text and "$ADMIN" in text or "curl -s $S" in text, \
            f"{name}.md shows no admin call"
        assert METRIC_RE.search(text), f"{name}.md names no metric"


def test_dashboard_and_alerts_use_only_exported_metrics(server):
    exported = exported_metrics(server) | EXTERNAL_METRICS
    dash, exprs = dashboard_exprs()
    used = {m for _, e in exprs for m in METRIC_RE.findall(e)}
    used_alerts = set(METRIC_RE.findall(ALERTS.read_text()))
    unknown = sorted((used | used_alerts) - exported)
    assert not unknown, f"metrics not exported by settled: {unknown}"
    # What an operator must see on the dashboard.
    for metric in ("http_requests_total", "http_request_duration_seconds_bucket",
                   "settled_idempotency_total", "settled_rate_limited_total", "settled_jobs",
                   "settled_dlq_jobs", "settled_job_retries_total",
                   "settled_settlement_duration_seconds_bucket", "settled_ledger_imbalance",
                   "settled_stuck_intents_total"):
        assert metric in used, f"the dashboard does not show {metric}"


def test_dashboard_is_well_formed_and_its_queries_are_promql(tmp_path):
    dash, exprs = dashboard_exprs()
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for p in dash["panels"]:
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]), p["title"]
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "instance"} <= names
    # Each query as a recording rule, with Grafana's variables filled in.
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, (title, expr) in enumerate(exprs):
        e = expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
        assert "$" not in e, f"{title}: unknown variable in {expr}"
        lines += [f"      - record: dashboard:query_{i}", f"        expr: {json.dumps(e)}"]
    rules = tmp_path / "dashboard-rules.yml"
    rules.write_text("\n".join(lines) + "\n")
    p = promtool("check", "rules", str(rules))
    assert p.returncode == 0, p.stdout + p.stderr


def test_systemd_unit_verifies_and_is_hardened(tmp_path):
    text = UNIT.read_text()
    for line in ("DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "StateDirectory=settled", "LimitNOFILE=65536", "Restart=on-failure",
                 "KillSignal=SIGTERM", "PrivateTmp=yes", "CapabilityBoundingSet="):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), f"{line} missing"
    assert re.search(r"^TimeoutStopSec=\d+", text, re.M)
    assert re.search(r"^EnvironmentFile=/etc/settled/settled.env$", text, re.M)
    # Verify a copy that runs the binary under test with the example env.
    env_file = tmp_path / "settled.env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    unit = tmp_path / "settled.service"
    unit.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={BIN}",
                           re.sub(r"^EnvironmentFile=\S+", f"EnvironmentFile={env_file}", text,
                                  flags=re.M), flags=re.M))
    p = subprocess.run([tool("systemd-analyze"), "verify", str(unit)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and not (p.stdout + p.stderr).strip(), p.stdout + p.stderr


def env_example_vars():
    """{name: value} of every NAME=value line, commented out or not, and
    the set of active (uncommented) names."""
    every, active = {}, set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            every[m.group(2)] = m.group(3)
            if not m.group(1):
                active.add(m.group(2))
    return every, active


def test_env_example_names_only_known_variables_and_boots(start_server):
    rc, out, _ = run_settled(["--help"])
    assert rc == 0
    known = set(re.findall(r"\(([A-Z][A-Z0-9_]+)\)", out))
    every, active = env_example_vars()
    assert len(every) >= 30, "the example lists few variables"
    unknown = sorted(set(every) - known)
    assert not unknown, f"ops/settled.env.example names variables settled does not know: {unknown}"
    missing = sorted(known - set(every) - {"SETTLED_PORT_FILE"})
    assert not missing, (f"ops/settled.env.example does not mention {missing}: add each new "
                         "setting there (commented out, with its default)")
    # The harness's --listen/--db flags beat the example's values.
    boot = {k: every[k] for k in active}
    # The admin token is a placeholder settled refuses (under 32 characters),
    # so an installed, unedited file cannot start with a token everyone
    # knows; the boot uses a real one.
    assert len(boot.get("SETTLED_ADMIN_TOKEN", "")) < 32, "the example's admin token would work"
    boot["SETTLED_ADMIN_TOKEN"] = ADMIN_TOKEN
    srv = start_server(env=boot)
    r = srv.get("/health/ready")
    assert r.status == 200, r
