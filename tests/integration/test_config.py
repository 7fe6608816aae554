"""SPEC section 2: configuration. --help, bad values (exit 2 naming the
variable, nothing created), and the effective configuration logged at start
without secrets."""

import json

import pytest

from conftest import ADMIN_TOKEN, run_settled

DOCUMENTED = [
    "SETTLED_LISTEN", "SETTLED_DB", "SETTLED_DATABASE_URL", "SETTLED_REDIS_URL",
    "SETTLED_ADMIN_TOKEN", "SETTLED_WEBHOOK_SECRET", "SETTLED_STRIPE_WEBHOOK_SECRET",
    "SETTLED_STANDARD_WEBHOOK_SECRET", "SETTLED_MAX_BODY", "SETTLED_CORS_ORIGINS",
    "SETTLED_WORKERS", "SETTLED_LOG_LEVEL", "SETTLED_IDEMPOTENCY_TTL",
    "SETTLED_TRUST_PROXY", "SETTLED_REQUIRE_IDEMPOTENCY_KEY",
    "RL_REGISTER_PER_HOUR", "RL_REGISTER_PER_DAY_WALLET", "RL_CLAIM_PER_HOUR",
    "RL_WEBHOOK_PER_MIN", "RL_HEALTH_PER_MIN", "RL_AUTH_FAIL_PER_MIN",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "SETTLED_PG_WRITE_CONNS", "SETTLED_PG_BATCH_MAX", "SETTLED_PG_LOCK_TIMEOUT",
    "SETTLED_PG_GATHER_US", "SETTLED_SHUTDOWN_GRACE", "SETTLED_REDIS_TIMEOUT",
]


def test_help_lists_every_variable_and_exits_0(tmp_path):
    rc, out, err = run_settled(["--help"], cwd=tmp_path)
    assert rc == 0, err
    text = out + err
    missing = [v for v in DOCUMENTED if v not in text]
    assert not missing, f"--help does not mention {missing}"
    assert "127.0.0.1:8080" in text, "--help does not show the SETTLED_LISTEN default"
    assert "--listen" in text and "--db" in text, "--help does not show the flags"
    assert not (tmp_path / "settled.db").exists(), "--help created a database"


def _start_args(tmp_path):
    return ["--listen", "127.0.0.1:0", "--port-file", str(tmp_path / "port"),
            "--db", str(tmp_path / "settled.db")]


@pytest.mark.parametrize("name,value", [
    ("SETTLED_MAX_BODY", "abc"),
    ("SETTLED_MAX_BODY", "-5"),
    ("SETTLED_LISTEN", "nonsense"),
    ("SETTLED_LISTEN", "127.0.0.1:99999"),
    ("RL_REGISTER_PER_HOUR", "-1"),
    ("RL_HEALTH_PER_MIN", "ten"),
    ("SETTLED_LOG_LEVEL", "loud"),
    ("SETTLED_IDEMPOTENCY_TTL", "forever"),
    ("SETTLED_WORKERS", "many"),
    ("SETTLED_REQUIRE_IDEMPOTENCY_KEY", "perhaps"),
    ("RL_AUTH_FAIL_PER_MIN", "-1"),
    ("RL_AUTH_FAIL_PER_MIN", "lots"),
])
def test_bad_value_exits_2_naming_the_variable(tmp_path, name, value):
    env = {name: value}
    args = _start_args(tmp_path)
    if name == "SETTLED_LISTEN":
        args = args[2:]          # the --listen flag would override the variable
    rc, out, err = run_settled(args, env=env, cwd=tmp_path)
    assert rc == 2, f"exit {rc} for {name}={value!r}\nstderr: {err}\nstdout: {out}"
    assert name in err, f"stderr does not name {name}: {err!r}"
    assert not (tmp_path / "port").exists(), "the server started anyway"
    assert not (tmp_path / "settled.db").exists(), "a bad configuration created the store"


@pytest.mark.parametrize("name,value,reason", [
    ("SETTLED_PG_WRITE_CONNS", "0", "out of range (1..64): 0"),
    ("SETTLED_PG_WRITE_CONNS", "65", "out of range (1..64): 65"),
    ("SETTLED_PG_WRITE_CONNS", "eight", "eight"),
    ("SETTLED_PG_BATCH_MAX", "0", "out of range (1..1024): 0"),
    ("SETTLED_PG_BATCH_MAX", "1025", "out of range (1..1024): 1025"),
    ("SETTLED_PG_BATCH_MAX", "-1", "-1"),
    ("SETTLED_PG_GATHER_US", "100001", "out of range (0..100000): 100001"),
    ("SETTLED_PG_GATHER_US", "-1", "-1"),
    ("SETTLED_PG_GATHER_US", "2ms", "2ms"),
    ("SETTLED_PG_LOCK_TIMEOUT", "0", "out of range (1ms..10s): 0"),
    ("SETTLED_PG_LOCK_TIMEOUT", "11s", "out of range (1ms..10s): 11s"),
    ("SETTLED_PG_LOCK_TIMEOUT", "soon", "not a duration"),
    ("SETTLED_REDIS_TIMEOUT", "0", "out of range (1ms..1m): 0"),
    ("SETTLED_REDIS_TIMEOUT", "61s", "out of range (1ms..1m): 61s"),
    ("SETTLED_REDIS_TIMEOUT", "-5ms", "-5ms"),
    ("SETTLED_REDIS_TIMEOUT", "soon", "not a duration"),
])
@pytest.mark.parametrize("how", ["env", "flag"])
def test_bad_pg_group_commit_setting_exits_2(tmp_path, name, value, reason, how):
    """The PostgreSQL group-commit settings are checked at start on either
    backend (embedded mode ignores them, but a typo should not wait for the
    move to PostgreSQL to show), and SETTLED_REDIS_TIMEOUT likewise without
    a Redis URL: exit 2, one line naming the setting and the bad value,
    nothing created."""
    args, env = _start_args(tmp_path), {}
    flag = "--" + name[len("SETTLED_"):].lower().replace("_", "-")
    if how == "env":
        env[name] = value
    else:
        args += [flag + "=" + value]
    rc, out, err = run_settled(args, env=env, cwd=tmp_path)
    assert rc == 2, f"exit {rc} for {name}={value!r}\nstderr: {err}\nstdout: {out}"
    assert (name if how == "env" else flag) in err and reason in err, err
    assert not (tmp_path / "port").exists(), "the server started anyway"
    assert not (tmp_path / "settled.db").exists(), "a bad configuration created the store"


@pytest.mark.parametrize("value,reason", [
    ("0", "out of range (1s..1h): 0"),
    ("500ms", "out of range (1s..1h): 500ms"),
    ("2h", "out of range (1s..1h): 2h"),
    ("-1s", "-1s"),
    ("soon", "not a duration"),
])
@pytest.mark.parametrize("how", ["env", "flag"])
def test_bad_shutdown_grace_exits_2(tmp_path, value, reason, how):
    """SETTLED_SHUTDOWN_GRACE is 1s..1h: a shorter one would cut requests
    whose body is still arriving at once. Exit 2, one line naming the
    setting and the bad value, nothing created."""
    args, env = _start_args(tmp_path), {}
    if how == "env":
        env["SETTLED_SHUTDOWN_GRACE"] = value
    else:
        args += ["--shutdown-grace=" + value]
    rc, out, err = run_settled(args, env=env, cwd=tmp_path)
    name = "SETTLED_SHUTDOWN_GRACE" if how == "env" else "--shutdown-grace"
    assert rc == 2, f"exit {rc} for {name}={value!r}\nstderr: {err}\nstdout: {out}"
    assert name in err and reason in err, err
    assert len(err.strip().splitlines()) <= 2, err     # the reason, then "see settled --help"
    assert not (tmp_path / "port").exists(), "the server started anyway"
    assert not (tmp_path / "settled.db").exists(), "a bad configuration created the store"


@pytest.mark.parametrize("token", ["x", "changeme", "t" * 31, "test-admin-token"])
@pytest.mark.parametrize("how", ["env", "flag"])
def test_short_admin_token_exits_2(tmp_path, token, how):
    """An admin token under 32 characters can be guessed: refused at start
    with one clear line that names the variable and never echoes the value."""
    args, env = _start_args(tmp_path), {"SETTLED_ADMIN_TOKEN": None}
    if how == "env":
        env["SETTLED_ADMIN_TOKEN"] = token
    else:
        args += ["--admin-token", token]
    rc, out, err = run_settled(args, env=env, cwd=tmp_path)
    assert rc == 2, f"exit {rc} for a {len(token)}-character token\nstderr: {err}"
    assert ("SETTLED_ADMIN_TOKEN" if how == "env" else "--admin-token") in err, err
    assert "shorter than 32 characters" in err, err
    assert token not in err.replace("SETTLED_ADMIN_TOKEN", "") or len(token) == 1, err
    assert not (tmp_path / "port").exists(), "the server started anyway"
    assert not (tmp_path / "settled.db").exists(), "a bad configuration created the store"


def test_admin_token_of_32_characters_is_accepted(start_server):
    token = "k" * 32
    srv = start_server(env={"SETTLED_ADMIN_TOKEN": token})
    assert srv.get("/api/admin/dlq", headers={"Authorization": f"Bearer {token}"}).status == 200


def test_unknown_flag_exits_2(tmp_path):
    rc, out, err = run_settled(_start_args(tmp_path) + ["--definitely-not-a-flag"], cwd=tmp_path)
    assert rc == 2, f"exit {rc}\nstderr: {err}"
    assert "definitely-not-a-flag" in err, err


SECRETS = {
    "SETTLED_ADMIN_TOKEN": "supersecret-xyz-0123456789abcdefghij",
    "SETTLED_WEBHOOK_SECRET": "cc-sekrit-123,cc-sekrit-old-124",
    "SETTLED_STRIPE_WEBHOOK_SECRET": "whsec_stripesekrit456",
    "SETTLED_STANDARD_WEBHOOK_SECRET": "whsec_c2VrcmV0LXN0YW5kYXJkLTc4OQ==",
}


def test_effective_config_is_logged_without_secrets(start_server):
    srv = start_server(env=SECRETS)
    # use the token so a careless request log would show it
    srv.get("/api/admin/dlq", headers={"Authorization": "Bearer supersecret-xyz-0123456789abcdefghij"})
    srv.get("/api/admin/dlq", headers={"Authorization": "Bearer wrong-token-" + ADMIN_TOKEN})
    assert srv.stop() == 0
    out = srv.stdout().decode("utf-8", "replace")
    err = srv.stderr().decode("utf-8", "replace")

    for name, value in SECRETS.items():
        for part in value.split(","):
            assert part not in out and part not in err, f"{name} value leaked into the output"
    assert "c2VrcmV0LXN0YW5kYXJkLTc4OQ" not in out + err
    assert "wrong-token-" not in out + err, "an Authorization header was logged"

    # the effective configuration: a JSON log line that names our database path
    # (on PostgreSQL: the database name, in the password-redacted URL)
    db = str(srv.backend.path) if hasattr(srv.backend, "path") else getattr(srv.backend, "db", None)
    config_lines = []
    for line in out.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and db and db in json.dumps(rec) and "127.0.0.1" in json.dumps(rec):
            config_lines.append(rec)
    assert config_lines, f"no JSON log line with the effective config (db {db}, listen) in:\n{out[:3000]}"


def test_redis_timeout_is_in_the_effective_config(start_server):
    """SETTLED_REDIS_TIMEOUT shows in the configuration logged at start, in
    the form it was given (test_redis.py shows it taking effect)."""
    srv = start_server(env={"SETTLED_REDIS_TIMEOUT": "750ms"})
    assert srv.stop() == 0
    out = srv.stdout().decode("utf-8", "replace")
    assert '"redis_timeout":"750ms"' in out, out[:3000]
