"""A real local EVM chain for the evm rail's tests: ganache from the npm
registry on a free loopback port, an ERC-20 compiled at test time with
solcjs and deployed through JSON-RPC (ganache's unlocked accounts accept
eth_sendTransaction, so no signing library is needed), and a
fault-injecting JSON-RPC proxy to put in front of it.

Both packages are installed by `npm ci` from tests/evm/package-lock.json
into build/evm-chain, once per lock (like the OpenAPI validator)."""

import fcntl
import hashlib
import http.server
import json
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NPM_SRC = ROOT / "tests" / "evm"
NPM_DIR = ROOT / "build" / "evm-chain"
CHAIN_ID = 31337
TRANSFER_SELECTOR = "a9059cbb"


def have_node():
    return bool(shutil.which("node") and shutil.which("npm"))


def npm_dir():
    """build/evm-chain/node_modules with ganache and solc, from the lock."""
    lock = (NPM_SRC / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock + (NPM_SRC / "package.json").read_bytes()).hexdigest()
    NPM_DIR.mkdir(parents=True, exist_ok=True)
    with open(NPM_DIR / ".lock", "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        stamp = NPM_DIR / ".installed"
        mods = [NPM_DIR / "node_modules" / p / "package.json" for p in ("ganache", "solc")]
        if not (stamp.exists() and stamp.read_text() == digest and all(m.exists() for m in mods)):
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(NPM_SRC / name, NPM_DIR / name)
            # --ignore-scripts: ganache's optional native add-ons would
            # try to build (and fetch headers); it runs without them.
            p = subprocess.run(["npm", "ci", "--prefix", str(NPM_DIR), "--ignore-scripts",
                                "--no-audit", "--no-fund", "--loglevel=error"],
                               capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"npm ci of ganache/solc failed:\n{p.stdout}\n{p.stderr}")
            stamp.write_text(digest)
    return NPM_DIR / "node_modules"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rpc_at(url, method, params=None, timeout=10):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    req = urllib.request.Request(url, data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        ans = json.loads(r.read())
    if "error" in ans:
        raise RuntimeError(f"{method}: {ans['error']}")
    return ans["result"]


def word(v):
    return f"{v:064x}"


class Chain:
    """ganache on a free port; accounts[0] pays, the tokens are deployed."""

    def __init__(self, tmp_dir):
        self.mods = npm_dir()
        self.log_path = Path(tmp_dir) / "ganache.log"
        self.log = open(self.log_path, "w")
        # ganache cannot listen on port 0 and tell us the port (it prints
        # the port it was given, and --logging.quiet prints nothing), so
        # the port is picked by a bind(0) that is closed before ganache
        # binds it, seconds later (node starts slowly): any other bind(0)
        # on the machine (the suites run side by side, the other backend
        # starts its own ganache) may take it meanwhile. So each start has
        # a network id of its own, and the chain is ours only when the
        # port answers net_version with it; a ganache that lost its port
        # exits (EADDRINUSE) and the start is tried again on a new port.
        self.proc = None
        for attempt in range(1, 6):
            if self._start(attempt):
                break
        else:
            raise RuntimeError("ganache did not start on any of 5 ports:\n"
                               + self.log_path.read_text()[-2000:])
        self.payer = self.accounts[0]
        art = subprocess.run(["node", str(NPM_SRC / "compile.js"), str(self.mods),
                              str(NPM_SRC / "TestToken.sol")],
                             capture_output=True, text=True, timeout=300, check=True)
        self.bytecode = json.loads(art.stdout)["bytecode"]
        self.token = self.deploy(10**30)
        self.other_token = self.deploy(10**30)

    def _start(self, attempt):
        """Starts ganache on a free port; True once that port answers with
        this start's network id, False when this ganache exited (its port
        was taken) or another server answers there: the caller tries a new
        port."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        network_id = secrets.randbelow(2**31 - 2**20) + 2**20
        self.log.write(f"-- start {attempt}: port {self.port}, network id {network_id}\n")
        self.log.flush()
        # Instamine "eager": each transaction is mined into its own block
        # before eth_sendTransaction answers; evm_mine adds empty blocks,
        # so the tests decide how many confirmations a transaction has.
        self.proc = subprocess.Popen(
            ["node", str(self.mods / "ganache" / "dist" / "node" / "cli.js"),
             "--server.host", "127.0.0.1", "--server.port", str(self.port),
             "--chain.chainId", str(CHAIN_ID), "--chain.networkId", str(network_id),
             "--wallet.deterministic", "--miner.instamine", "eager", "--logging.quiet"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = rpc_at(self.url, "net_version", timeout=2)
            except Exception:
                answer = None
            if answer is not None and str(answer) == str(network_id):
                self.accounts = rpc_at(self.url, "eth_accounts")
                return True
            if answer is not None or self.proc.poll() is not None:
                # Another server on the port, or ours died (port taken).
                self._stop_proc()
                return False
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("ganache did not start:\n" + self.log_path.read_text()[-2000:])
            time.sleep(0.2)

    def _stop_proc(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def rpc(self, method, params=None):
        return rpc_at(self.url, method, params)

    def send(self, **tx):
        tx.setdefault("from", self.payer)
        tx.setdefault("gas", hex(200000))
        return self.rpc("eth_sendTransaction", [tx])

    def receipt(self, h):
        return self.rpc("eth_getTransactionReceipt", [h])

    def deploy(self, supply):
        h = self.send(data="0x" + self.bytecode + word(supply), gas=hex(2000000))
        return self.receipt(h)["contractAddress"].lower()

    def pay_native(self, to, wei):
        return self.send(to=to, value=hex(wei))

    def pay_token(self, to, units, token=None, gas=200000):
        data = "0x" + TRANSFER_SELECTOR + word(int(to, 16)) + word(units)
        return self.send(to=token or self.token, data=data, gas=hex(gas))

    def mine(self, n=1):
        for _ in range(n):
            self.rpc("evm_mine", [])

    def head(self):
        return int(self.rpc("eth_blockNumber"), 16)

    def close(self):
        self._stop_proc()
        self.log.close()


class FaultProxy:
    """A JSON-RPC proxy in front of the chain. mode:
      ok        forward
      429, 500  answer that status
      garbage   200 with a body that is not JSON
      stall     hold the request for `stall_s`, then forward
    delay_s slows every answer (a provider that is healthy but slower).
      reorg     forward, but eth_getBlockByNumber answers another hash
      mempool   forward, but the transaction is not mined yet (no receipt)
      chain:<n> forward, but transactions (and eth_chainId) name chain n
    Counts requests; remembers the paths asked for."""

    def __init__(self, upstream, mode="ok", stall_s=5.0, delay_s=0.0):
        self.upstream = upstream
        self.mode = mode
        self.stall_s = stall_s
        self.delay_s = delay_s   # every answer this late (a slower provider)
        self.requests = 0
        self.paths = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, status, body):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.requests += 1
                proxy.paths.append(self.path)
                mode = proxy.mode
                if proxy.delay_s:
                    time.sleep(proxy.delay_s)
                if mode in ("429", "500", "502", "503"):
                    return self.reply(int(mode), b'{"error":"injected"}')
                if mode == "garbage":
                    return self.reply(200, b"<html>not json-rpc</html>")
                if mode == "stall":
                    time.sleep(proxy.stall_s)
                req = urllib.request.Request(proxy.upstream, data=body,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=30) as r:
                    out = r.read()
                if mode in ("reorg", "mempool") or mode.startswith("chain:"):
                    out = json.dumps(proxy.rewrite(json.loads(body), json.loads(out))).encode()
                try:
                    self.reply(200, out)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def rewrite(self, req, ans):
        reqs = req if isinstance(req, list) else [req]
        answers = ans if isinstance(ans, list) else [ans]
        methods = {r.get("id"): r.get("method") for r in reqs}
        for a in answers:
            m, res = methods.get(a.get("id")), a.get("result")
            if self.mode == "reorg" and m == "eth_getBlockByNumber" and isinstance(res, dict):
                res["hash"] = "0x" + "ee" * 32
            if self.mode == "mempool" and m == "eth_getTransactionReceipt":
                a["result"] = None
            if self.mode == "mempool" and m == "eth_getTransactionByHash" and isinstance(res, dict):
                res.update(blockHash=None, blockNumber=None, transactionIndex=None)
            if self.mode.startswith("chain:") and m == "eth_getTransactionByHash" and \
                    isinstance(res, dict):
                res["chainId"] = hex(int(self.mode.split(":")[1]))
        return ans

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
