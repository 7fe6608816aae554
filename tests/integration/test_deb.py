"""The Debian package (make deb, scripts/mkdeb), built from the binary under
test and installed into a scratch root.

The install is `dpkg --root=DIR --force-script-chrootless -i`: dpkg keeps
its database in DIR and runs the maintainer scripts with DPKG_ROOT=DIR,
which they honour for every path (the system user goes into DIR/etc/passwd
with useradd --prefix, the unit is enabled with systemctl --root). Nothing
of the machine running the test changes: the test checks that its
/etc/passwd and /etc/group are byte-for-byte the same afterwards. The
scratch root's dpkg database lists the packages of Depends, copied from
this machine's, so the install also proves Depends is satisfiable here.

Backend-independent: runs in the embedded half of the suite only."""

import hashlib
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, ROOT, backend_name

pytestmark = pytest.mark.skipif(backend_name() != "sqlite",
                                reason="the package does not depend on the backend")

MKDEB = ROOT / "scripts" / "mkdeb"
OPS_UNIT = ROOT / "ops" / "settled.service"


def run(*args, **kw):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, **kw)
    assert p.returncode == 0, f"{' '.join(map(str, args))}:\n{p.stdout}\n{p.stderr}"
    return p.stdout


def tool(name):
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} is missing (scripts/deps installs it)", pytrace=False)
    return path


def version_of(binary):
    m = re.fullmatch(r"settled (\S+) \(commit (\S+)\)\n", run(binary, "--version"))
    assert m, "settled --version"
    return m.group(1), m.group(2)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    for t in ("dpkg-deb", "dpkg-shlibdeps", "systemd-analyze", "useradd", "systemctl"):
        tool(t)
    out = tmp_path_factory.mktemp("deb")
    version, _ = version_of(BIN)
    path = run(MKDEB, BIN, version, out).strip()
    arch = run("dpkg", "--print-architecture").strip()
    assert path == str(out / f"settled_{version}_{arch}.deb")
    return path, version


def fields(deb_path):
    text = run("dpkg-deb", "-f", deb_path)
    return dict(re.findall(r"^(\S+): (.*)$", text, flags=re.M))


def contents(deb_path):
    """{path: (mode string, owner/group)} of dpkg -c."""
    out = {}
    for line in run("dpkg", "-c", deb_path).splitlines():
        mode, owner, _size, _date, _time, name = line.split(None, 5)
        out[name.split(" -> ")[0].rstrip("/").removeprefix(".") or "/"] = (mode, owner)
    return out


def scratch_root(base, depends):
    """A root with a minimal passwd/group and a dpkg database that lists the
    packages of Depends (as this machine has them)."""
    r = base / "root"
    admin = r / "var" / "lib" / "dpkg"
    for d in ("info", "updates", "triggers"):
        (admin / d).mkdir(parents=True)
    (r / "etc").mkdir()
    (r / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (r / "etc" / "group").write_text("root:x:0:\n")
    (r / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (r / "etc" / "gshadow").write_text("root:*::\n")
    status = []
    for dep in depends.split(","):
        name = dep.strip().split()[0]
        status.append(run("dpkg-query", "-s", name))
        qualified = run("dpkg-query", "-W", "-f", "${binary:Package}", name).strip()
        (admin / "info" / f"{qualified}.list").touch()
    (admin / "status").write_text("\n".join(status))
    return r


def dpkg(root, *args):
    return run("dpkg", f"--root={root}", "--force-script-chrootless", f"--log={root}/dpkg.log",
               *args)


def test_package_contents_and_depends(deb):
    path, version = deb
    f = fields(path)
    assert f["Package"] == "settled" and f["Version"] == version
    assert f["Architecture"] == run("dpkg", "--print-architecture").strip()
    depends = [d.strip().split()[0] for d in f["Depends"].split(",")]
    # From the binary's shared libraries (dpkg-shlibdeps), not a list kept by hand.
    for lib in ("libc6", "libsqlite3-", "libpq5", "libmicrohttpd", "libjansson", "libcurl",
                "libssl", "libhiredis"):
        assert any(d.startswith(lib) for d in depends), (lib, depends)
    c = contents(path)
    want = {
        "/usr/bin/settled": ("-rwxr-xr-x", "root/root"),
        "/lib/systemd/system/settled.service": ("-rw-r--r--", "root/root"),
        "/etc/settled/settled.env": ("-rw-r-----", "root/root"),
        "/var/lib/settled": ("drwx------", "root/root"),
        "/usr/share/doc/settled/README.md": ("-rw-r--r--", "root/root"),
    }
    for name, attrs in want.items():
        assert c.get(name) == attrs, (name, c.get(name))
    assert all(owner == "root/root" for _, owner in c.values())
    info = run("dpkg-deb", "-I", path, "conffiles")
    assert info.split() == ["/etc/settled/settled.env"]


def test_unit_keeps_every_hardening_line(deb, tmp_path):
    path, _ = deb
    x = tmp_path / "x"
    run("dpkg-deb", "-x", path, x)
    unit = (x / "lib/systemd/system/settled.service").read_text()
    ops = OPS_UNIT.read_text()
    ops_lines = [ln for ln in ops[ops.index("[Unit]"):].splitlines()
                 if ln and not ln.startswith("#")]
    for ln in ops_lines:
        if ln.startswith(("ExecStart=", "Documentation=", "DynamicUser=")):
            continue
        assert ln in unit.splitlines(), f"the package's unit lost {ln!r}"
    assert "ExecStart=/usr/bin/settled" in unit.splitlines()
    assert "User=settled" in unit.splitlines() and "Group=settled" in unit.splitlines()
    assert "DynamicUser=yes" not in unit


def test_install_into_a_scratch_root(deb, tmp_path):
    path, version = deb
    host = {p: digest(p) for p in (Path("/etc/passwd"), Path("/etc/group"))}
    r = scratch_root(tmp_path, fields(path)["Depends"])

    dpkg(r, "-i", path)
    assert re.search(r"^Status: install ok installed$",
                     run("dpkg-query", f"--admindir={r}/var/lib/dpkg", "-s", "settled"), re.M)
    # The binary runs and says what it is.
    assert version_of(r / "usr/bin/settled")[0] == version
    # The system user and group, in the scratch root only.
    users = [ln.split(":") for ln in (r / "etc/passwd").read_text().splitlines()]
    settled = [u for u in users if u[0] == "settled"]
    assert len(settled) == 1
    uid, gid, home, shell = int(settled[0][2]), int(settled[0][3]), settled[0][5], settled[0][6]
    assert 0 < uid < 1000 and home == "/var/lib/settled" and shell == "/usr/sbin/nologin"
    assert any(g.startswith(f"settled:x:{gid}:") for g in (r / "etc/group").read_text().splitlines())
    # Owners and modes as installed.
    expect = {
        "usr/bin/settled": (0o755, 0, 0),
        "lib/systemd/system/settled.service": (0o644, 0, 0),
        "etc/settled/settled.env": (0o640, 0, 0),
        "var/lib/settled": (0o700, uid, gid),
    }
    for name, (mode, u, g) in expect.items():
        st = os.stat(r / name)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, u, g), name
    # Enabled (offline, inside the root).
    link = r / "etc/systemd/system/multi-user.target.wants/settled.service"
    assert os.readlink(link) == "/lib/systemd/system/settled.service"
    # systemd-analyze verify: the installed unit, its paths pointed into the root.
    unit = (r / "lib/systemd/system/settled.service").read_text()
    unit = re.sub(r"^ExecStart=/usr/bin/settled", f"ExecStart={r}/usr/bin/settled", unit, flags=re.M)
    unit = re.sub(r"^EnvironmentFile=/etc", f"EnvironmentFile={r}/etc", unit, flags=re.M)
    checked = tmp_path / "settled.service"
    checked.write_text(unit)
    p = subprocess.run([tool("systemd-analyze"), "verify", str(checked)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and not (p.stdout + p.stderr).strip(), p.stdout + p.stderr

    # Reinstall (an upgrade): one user still, the operator's conffile kept.
    env = r / "etc/settled/settled.env"
    env.write_text(env.read_text() + "SETTLED_ADMIN_TOKEN=operator-set\n")
    dpkg(r, "--force-confold", "-i", path)
    assert sum(1 for u in (r / "etc/passwd").read_text().splitlines()
               if u.startswith("settled:")) == 1
    assert "SETTLED_ADMIN_TOKEN=operator-set" in env.read_text()

    # Remove keeps the configuration and the state; purge keeps the state.
    (r / "var/lib/settled/settled.db").write_bytes(b"ledger")
    dpkg(r, "-r", "settled")
    assert not (r / "usr/bin/settled").exists() and not link.is_symlink()
    assert env.exists() and (r / "var/lib/settled/settled.db").exists()
    dpkg(r, "--purge", "settled")
    assert not (r / "etc/settled").exists()
    assert (r / "var/lib/settled/settled.db").read_bytes() == b"ledger"

    assert {p: digest(p) for p in host} == host, "the host's users or groups changed"
