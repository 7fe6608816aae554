"""A fault-injecting TCP proxy for the links between settled and its
services (PostgreSQL, Redis), on loopback.

    proxy = FaultProxy("127.0.0.1", pg_port, protocol="pg")
    proxy.start()                      # proxy.port: point settled at it
    proxy.cut_after_commit(3)          # the next 3 COMMITs reach the server,
                                       # their answers never reach settled
    proxy.reset_randomly(0.02)         # each chunk: 2% chance of a reset
    proxy.stall(1.5)                   # hold every byte for 1.5 s
    proxy.reset_all()                  # cut every open connection now
    proxy.stop()

Faults are injected at message boundaries the proxy understands: for
PostgreSQL it parses the frontend protocol (startup, then typed messages)
and recognises a COMMIT sent as a simple Query or as a Parse of "COMMIT"
(how libpq's pipeline sends it); a cut then forwards the COMMIT, waits for
the server to receive it, and resets both sides, so the server commits and
the client never learns it. For Redis (and anything else) faults fall on
chunk boundaries. Resets close with SO_LINGER 0 (an RST, as a dead peer or
a firewall would), not a polite FIN.

Counters (`commits_cut`, `resets`, `stalls`, `connections`) say what was
injected, for the tests' and the chaos run's summaries.
"""

import random
import socket
import struct
import threading
import time


def _rst(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _PgFrontendParser:
    """Splits the client's byte stream into PostgreSQL protocol messages."""

    SSL_REQUEST = 80877103
    GSSENC_REQUEST = 80877104

    def __init__(self):
        self.buf = b""
        self.started = False
        self.statements = {}    # prepared statement name -> its SQL
        self.tx_sql = []        # the SQL run since the last COMMIT

    def _sql_of(self, kind, body):
        """The SQL a message runs or prepares, if any."""
        parts = body.split(b"\x00")
        if kind == b"Q":
            return parts[0]
        if kind == b"P" and len(parts) > 1:
            self.statements[parts[0]] = parts[1]
            return parts[1]
        if kind == b"B" and len(parts) > 1:
            return self.statements.get(parts[1], b"")
        return None

    def commit_touches(self, marker):
        """Whether the transaction now committing ran SQL containing marker."""
        return any(marker in q for q in self.tx_sql)

    def feed(self, data):
        """Returns [(message_bytes, is_commit)] for every whole message;
        keeps the rest."""
        self.buf += data
        out = []
        while True:
            if not self.started:
                if len(self.buf) < 8:
                    break
                n = struct.unpack("!I", self.buf[:4])[0]
                if len(self.buf) < n:
                    break
                code = struct.unpack("!I", self.buf[4:8])[0]
                msg, self.buf = self.buf[:n], self.buf[n:]
                if code not in (self.SSL_REQUEST, self.GSSENC_REQUEST):
                    self.started = True
                out.append((msg, False))
                continue
            if len(self.buf) < 5:
                break
            n = struct.unpack("!I", self.buf[1:5])[0]
            if len(self.buf) < 1 + n:
                break
            msg, self.buf = self.buf[:1 + n], self.buf[1 + n:]
            kind, body = msg[:1], msg[5:]
            sql = self._sql_of(kind, body)
            commit = sql == b"COMMIT" and kind in (b"Q", b"P")
            if sql and not commit:
                self.tx_sql.append(sql)
            out.append((msg, commit))
        return out


class FaultProxy:
    def __init__(self, target_host, target_port, protocol="raw", seed=None):
        self.target = (target_host, target_port)
        self.protocol = protocol
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self._cut_commits = 0
        self._cut_marker = None
        self._reset_p = 0.0
        self._stall_until = 0.0
        self._pairs = set()
        self._dead = {}
        self._stopping = False
        self.commits_cut = 0
        self.resets = 0
        self.stalls = 0
        self.connections = 0
        self.listener = None
        self.port = None

    # ---- control

    def cut_after_commit(self, n=1, touching=None):
        """Cut the link after each of the next n COMMITs (PostgreSQL only);
        with touching (bytes), only COMMITs of transactions whose SQL
        contains it (b"INSERT INTO accounts": a registration)."""
        with self.lock:
            self._cut_commits += n
            self._cut_marker = touching

    def reset_randomly(self, p):
        with self.lock:
            self._reset_p = p

    def stall(self, seconds):
        with self.lock:
            self._stall_until = time.monotonic() + seconds
            self.stalls += 1

    def reset_all(self):
        with self.lock:
            pairs = list(self._pairs)
            self.resets += len(pairs)
        for pair in pairs:
            self._close(pair)

    def quiet(self):
        """No more faults (pending cuts dropped, no random resets)."""
        with self.lock:
            self._cut_commits = 0
            self._cut_marker = None
            self._reset_p = 0.0
            self._stall_until = 0.0

    def summary(self):
        return {"connections": self.connections, "commits_cut": self.commits_cut,
                "resets": self.resets, "stalls": self.stalls}

    # ---- running

    def start(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self):
        self._stopping = True
        try:
            self.listener.close()
        except OSError:
            pass
        self.reset_all()

    def _accept(self):
        while not self._stopping:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                _rst(client)
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                # A thread blocked in recv() is not woken when another
                # thread closes the socket: pumps wake up to see the pair
                # is gone.
                s.settimeout(0.2)
            pair = (client, server)
            held = threading.Event()    # set: the server's answers are swallowed
            dead = threading.Event()    # set: the pair was cut
            with self.lock:
                self._pairs.add(pair)
                self.connections += 1
            parser = _PgFrontendParser() if self.protocol == "pg" else None
            with self.lock:
                self._dead[pair] = dead
            threading.Thread(target=self._pump, args=(pair, client, server, parser, held, dead),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, server, client, None, held, dead, True),
                             daemon=True).start()

    def _wait_stall(self):
        while True:
            with self.lock:
                left = self._stall_until - time.monotonic()
            if left <= 0 or self._stopping:
                return
            time.sleep(min(left, 0.05))

    def _random_reset(self):
        with self.lock:
            if self._reset_p and self.rng.random() < self._reset_p:
                self.resets += 1
                return True
        return False

    def _take_commit_cut(self, parser):
        with self.lock:
            if self._cut_commits > 0 and (self._cut_marker is None or
                                          parser.commit_touches(self._cut_marker)):
                self._cut_commits -= 1
                self.commits_cut += 1
                return True
        return False

    def _close(self, pair):
        with self.lock:
            self._pairs.discard(pair)
            dead = self._dead.pop(pair, None)
        if dead is not None:
            dead.set()
            for s in pair:
                _rst(s)

    def _pump(self, pair, src, dst, parser, held, dead, answers=False):
        cutting = False
        try:
            while not dead.is_set():
                try:
                    data = src.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                self._wait_stall()
                if answers and held.is_set():
                    break       # the answer to a cut COMMIT: never delivered
                if self._random_reset():
                    break
                if parser is None:
                    dst.sendall(data)
                    continue
                for msg, is_commit in parser.feed(data):
                    if is_commit and not cutting and self._take_commit_cut(parser):
                        cutting = True
                        held.set()
                    if is_commit:
                        parser.tx_sql = []
                    dst.sendall(msg)
                    # A simple Query runs at once; a pipelined COMMIT (Parse,
                    # Bind, Execute) runs when its Sync arrives.
                    if cutting and msg[:1] in (b"Q", b"S"):
                        # Let the server commit, then cut the link; its
                        # answer is swallowed meanwhile.
                        time.sleep(0.05)
                        raise ConnectionAbortedError("commit cut")
        except OSError:
            pass
        self._close(pair)
