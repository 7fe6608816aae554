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

Each tool's own code starts a real server here (chaos: its PgBackend and
Server; bench: run_pg_instances with no rows), and the configuration the
server logged at start says which timeout it runs with."""

import importlib.machinery
import importlib.util
import json
import os
import types

import pytest

from conftest import BIN, ROOT, TEST_REDIS_TIMEOUT, backend_name, redis_test_url, wait_until

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


def test_chaos_servers_get_the_harness_redis_timeout(services, tmp_path):
    chaos = load_tool("chaos", services)
    backend = chaos.PgBackend(str(tmp_path), types.SimpleNamespace(fault="kill"))
    srv = None
    try:
        assert backend.redis_url == services["SETTLED_TEST_REDIS"]
        workdir = tmp_path / "server"
        workdir.mkdir()
        srv = chaos.Server(BIN, str(workdir), backend, {})
        srv.spawn()
        assert srv.wait_listening(), open(srv.stderr_path).read()
        cfg = wait_until(lambda: logged_config(srv.stdout_path), timeout=30,
                         what="the server's logged configuration")
        assert cfg["redis_url"] and cfg["redis_timeout"] == TEST_REDIS_TIMEOUT, cfg
    finally:
        if srv is not None:
            assert srv.stop() == 0
        backend.close(False)


def test_bench_pg_rows_get_the_harness_redis_timeout(services, tmp_path):
    bench = load_tool("bench", {**services, "SETTLED_BIN": BIN, "BENCH_REDIS_TIMEOUT": ""})
    notes = []
    # No rows: the instance is started, answers, and is stopped.
    bench.run_pg_instances(str(tmp_path), 1, [], [], [], notes)
    cfg = logged_config(tmp_path / "pg1-0" / "settled.log")
    assert cfg and cfg["redis_url"] and cfg["redis_timeout"] == TEST_REDIS_TIMEOUT, cfg
