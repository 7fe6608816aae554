"""`make -n` (a dry run) of any target has no side effects.

GNU make runs a recipe line that names $(MAKE) even under -n (it takes it
for a recursive make, whose own -n then keeps it dry). `make check` and
`make tsan-check` ran `tests/with-services sh -c '$(MAKE) ...'`: under -n
that line ran, and with-services started a private PostgreSQL and Redis
(then its sub-make printed the plan, and both were stopped again). The
Makefile now names that make SERVICES_MAKE, so a dry run prints the line.

Each .PHONY target (and the default one) is dry-run in a copy of the
tracked files, with no outer services (SETTLED_TEST_PG / _REDIS unset, as
in a developer's shell) and with-services' scratch directories pointed at
an empty directory of the test's (SETTLED_SERVICES_TMP: with-services
makes one there before it starts anything): that directory must stay
empty and the copy unchanged, file for file.

Backend-independent: runs in the embedded half of the suite only."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, backend_name

pytestmark = pytest.mark.skipif(backend_name() != "sqlite",
                                reason="the Makefile does not depend on the backend")

# What an outer make (this suite runs under make check) or an outer
# with-services put in the environment: the dry runs get none of it.
OUTER = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "MAKEFILES", "GNUMAKEFLAGS",
         "SETTLED_TEST_PG", "SETTLED_TEST_PG_DIR", "SETTLED_TEST_REDIS", "SETTLED_TEST_REDIS_DIR")


def phony_targets(makefile):
    """The names on the Makefile's .PHONY lines (with their continuations)."""
    text = re.sub(r"\\\n", " ", makefile.read_text())
    names = []
    for line in text.splitlines():
        if line.startswith(".PHONY:"):
            names += line.split(":", 1)[1].split()
    return [n for n in names if n != "FORCE"]


def tree_state(top):
    """Every file and directory under top, with the size and mtime of files."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(top):
        rel = os.path.relpath(dirpath, top)
        state[rel] = "dir"
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            state[os.path.join(rel, name)] = (st.st_size, st.st_mtime_ns)
    return state


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A copy of the tracked files (no build directories, no .git)."""
    listing = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True)
    if listing.returncode != 0:
        pytest.skip("not a git checkout: " + listing.stderr.decode(errors="replace"))
    top = tmp_path_factory.mktemp("tree") / "settled"
    for rel in filter(None, listing.stdout.decode().split("\0")):
        src, dst = ROOT / rel, top / rel
        if not os.path.lexists(src):
            continue   # deleted in the work tree, not yet committed
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)
    return top


def test_every_target_has_a_phony_line(tree):
    targets = phony_targets(tree / "Makefile")
    for needed in ("check", "test", "asan", "tsan", "tsan-check", "bench", "chaos", "unit"):
        assert needed in targets, targets


@pytest.mark.parametrize("target", [""] + phony_targets(ROOT / "Makefile"))
def test_a_dry_run_starts_no_service_and_writes_nothing(tree, tmp_path, target):
    services = tmp_path / "services"
    services.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in OUTER}
    env["SETTLED_SERVICES_TMP"] = str(services)
    before = tree_state(tree)
    # A hang guard only: a dry run takes well under a second.
    r = subprocess.run(["make", "-n"] + ([target] if target else []), cwd=tree, env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
    out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    assert r.returncode == 0, out
    assert "with-services:" not in out, out   # "PostgreSQL at ...", "Redis at ..."
    assert list(services.iterdir()) == [], out
    assert tree_state(tree) == before, out
