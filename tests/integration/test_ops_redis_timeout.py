"""The Redis timeout of the servers ops/chaos and ops/bench start.

Both ran their PostgreSQL + Redis servers with the product's default
SETTLED_REDIS_TIMEOUT, 200 ms, left over from before the option existed
(186d26b gave the test harness's servers 5 s and left the tools as they
were). Their Redis shares the machine with the servers, PostgreSQL and the
tool's own load (and, under tests/with-services, with the suites beside
it): one kept off the CPU past 200 ms made the money-moving routes answer
503 rate_limiter_unavailable, a retry storm in chaos and rows marked
"[errors]" in the bench, the tool's own making. They now give 5 s, as the
harness does (conftest TEST_REDIS_TIMEOUT); --redis-timeout and
BENCH_REDIS_TIMEOUT choose another.

Each tool's own code composes the server's environment (chaos: its
PgBackend and Server, which also starts the server; bench:
run_pg_instances, whose server this test starts with that environment),
and the configuration the server logged at start says which timeout it
runs with. The waits are the harness's (the tools' own 30 s boot bounds
are for a bench machine, not a loaded CI one); the server listens on a
port of its choosing."""

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import types
import urllib.parse

import pytest

from conftest import (BAD_OUTPUT, BIN, ROOT, STOP_TIMEOUT, TEST_REDIS_TIMEOUT, backend_name,
                      psql, redis_test_url, wait_until)

pytestmark = pytest.mark.skipif(backend_name() != "pg", reason="the tools' scale-out servers")


def load_tool(name, env):
    """ops/<name> as a module, its module-level settings read from env."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        path = str(ROOT / "ops" / name)
        loader = importlib.machinery.SourceFileLoader(f"settled_ops_{name}", path)
        spec = importlib.util.spec_from_loader(loader.name, loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        return module
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def logged_config(path):
    """The configuration a server logged at start ("starting settled")."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if '"msg":"starting settled"' in line:
                return json.loads(line)
    return None


@pytest.fixture
def services():
    """SETTLED_TEST_PG and SETTLED_TEST_REDIS as the tools read them."""
    if not os.environ.get("SETTLED_TEST_PG"):
        pytest.skip("needs SETTLED_TEST_PG (tests/with-services)")
    return {"SETTLED_TEST_PG": os.environ["SETTLED_TEST_PG"], "SETTLED_TEST_REDIS": redis_test_url()}


def read_outputs(outputs):
    return "".join(f"--- {p.name} ---\n{p.read_text(errors='replace') if p.exists() else ''}"
                   for p in outputs)


def run_until_listening(proc, port_file, outputs):
    """Waits for proc to listen (its port file), then stops it: its exit
    code. Fails with its output when it exits first, or when any of its
    output files (stdout and stderr: a sanitizer reports on stderr) holds a
    sanitizer's report."""
    try:
        wait_until(lambda: port_file.exists() or proc.poll() is not None, timeout=60,
                   what="the server to listen")
        assert proc.poll() is None, read_outputs(outputs)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for p in outputs:
        text = p.read_text(errors="replace") if p.exists() else ""
        for marker in BAD_OUTPUT:
            assert marker not in text, f"{marker!r} in {p.name}:\n{text[-3000:]}"
    return proc.returncode


def test_chaos_servers_get_the_harness_redis_timeout(services, tmp_path):
    chaos = load_tool("chaos", services)
    backend = chaos.PgBackend(str(tmp_path), types.SimpleNamespace(fault="kill"))
    try:
        assert backend.redis_url == services["SETTLED_TEST_REDIS"]
        workdir = tmp_path / "server"
        workdir.mkdir()
        srv = chaos.Server(BIN, str(workdir), backend, {})
        proc = srv.spawn(port=0)
        outputs = [workdir / "stdout.log", workdir / "stderr.log"]
        rc = run_until_listening(proc, workdir / "port", outputs)
        assert rc == 0, read_outputs(outputs)
        cfg = logged_config(srv.stdout_path)
        assert cfg and cfg["redis_url"] and cfg["redis_timeout"] == TEST_REDIS_TIMEOUT, cfg
    finally:
        backend.close(False)


def test_bench_pg_rows_get_the_harness_redis_timeout(services, tmp_path, monkeypatch):
    bench = load_tool("bench", {**services, "SETTLED_BIN": BIN, "BENCH_REDIS_TIMEOUT": ""})
    made = []

    class Recorded(bench.Settled):
        """The bench's server as run_pg_instances makes it, not started."""

        def start(self):
            made.append(self)

        def stop(self):
            pass

    monkeypatch.setattr(bench, "Settled", Recorded)
    bench.run_pg_instances(str(tmp_path / "bench"), 1, [], [], [], [])
    assert len(made) == 1
    env = made[0].env()
    assert env.get("SETTLED_REDIS_URL") == services["SETTLED_TEST_REDIS"], env

    # That environment, on a database of its own (the bench dropped its own).
    db = "ops_" + os.urandom(6).hex()
    psql(services["SETTLED_TEST_PG"], f'CREATE DATABASE "{db}"')
    try:
        env["SETTLED_DATABASE_URL"] = urllib.parse.urlsplit(
            services["SETTLED_TEST_PG"])._replace(path="/" + db).geturl()
        workdir = tmp_path / "server"
        workdir.mkdir()
        output = workdir / "output"
        with open(output, "wb") as log:
            proc = subprocess.Popen([BIN, "--listen", "127.0.0.1:0", "--port-file",
                                     str(workdir / "port")], env=env, cwd=workdir,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        assert run_until_listening(proc, workdir / "port", [output]) == 0, \
            read_outputs([output])
    finally:
        psql(services["SETTLED_TEST_PG"], f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    cfg = logged_config(output)
    assert cfg and cfg["redis_url"] and cfg["redis_timeout"] == TEST_REDIS_TIMEOUT, cfg
