"""Shared fixtures for the end-to-end tests: start the real relay binary on a
free loopback port, talk to it with independent clients (Python websockets,
raw sockets, Node ws), and check on teardown that it exits cleanly without a
sanitizer report."""
import asyncio
import base64
import os
import signal
import socket
import struct
import subprocess
import tempfile
import time

import pytest
import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELAY_BIN = os.environ.get("RELAY_BIN", os.path.join(ROOT, "build", "asan", "pyrycode-relay"))
# The relay refuses to run with Linux capabilities beyond NET_BIND_SERVICE
# (spec §6.4); as root, tests drop them the way an operator would.
def _cap_eff():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


EXTRA_CAPS = _cap_eff() & ~(1 << 10) != 0
WRAP = ["setpriv", "--bounding-set=-all", "--"] if EXTRA_CAPS else []
def _binary_version():
    try:
        return subprocess.run([RELAY_BIN, "--version"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except OSError:
        return ""


# What this build reports (git describe, a VERSION file, or "dev").
VERSION = _binary_version()
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
                   "WARNING: ThreadSanitizer")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bus_of(args):
    """The --cluster-nats value in args ("" when absent or empty)."""
    args = list(args)
    for i, a in enumerate(args):
        if a.startswith("--cluster-nats="):
            return a.split("=", 1)[1]
        if a == "--cluster-nats" and i + 1 < len(args):
            return args[i + 1]
    return ""


class Relay:
    def __init__(self, args, env=None, listen=None, admission=True):
        """listen(port) returns the listener flags; default insecure mode.
        admission=False leaves --max-connections and --rate-limit-burst at
        their defaults (or to a --config-file)."""
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="relay-", suffix=".log", delete=False)
        # Clients a test leaves open must not hold the drain up for the
        # default 5 s close timeout; tests that care pass their own value.
        # Admission limits are off by default here; their own tests set them.
        listen_args = listen(self.port) if listen else ["--insecure-listen",
                                                        f"127.0.0.1:{self.port}"]
        cmd = WRAP + [RELAY_BIN, *listen_args, "--metrics-listen=", "--close-timeout", "500ms"]
        if admission:
            cmd += ["--rate-limit-burst", "0", "--max-connections", "100000"]
        cmd += list(args)
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, env=full_env)
        self.exit_code = None
        self._wait_ready()
        if listen is None and _bus_of(args):
            self._wait_cluster_ready()

    def _wait_cluster_ready(self, timeout=10.0):
        """A cluster node logs "ready" as soon as it listens, but answers
        /healthz 200 (and upgrades at all: 503 until then) only once every
        shard's bus connection is up, a moment later. Waits for that,
        bounded; never fails: a test about readiness checks it itself."""
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            try:
                if http_request(self.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                "Connection: close\r\n\r\n", timeout=1.0)[0] == 200:
                    return
            except (OSError, ValueError, IndexError):  # refused or cut short: ask again
                pass
            time.sleep(0.02)

    def _wait_ready(self):
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited early ({self.proc.returncode}):\n{self.logs()}")
            logs = self.logs()
            if "msg=ready" in logs or '"msg":"ready"' in logs:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        return
                except OSError:
                    pass
            time.sleep(0.02)
        raise RuntimeError("relay did not start:\n" + self.logs())

    def url(self, path):
        return f"ws://127.0.0.1:{self.port}{path}"

    def logs(self):
        with open(self.log.name, "r", errors="replace") as f:
            return f.read()

    def wait_log(self, needle, timeout=5.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if needle in self.logs():
                return
            time.sleep(0.02)
        raise AssertionError(f"log line {needle!r} not seen:\n{self.logs()}")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.exit_code is None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            try:
                self.exit_code = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:  # never leave it running: -9 fails the check
                self.proc.kill()
                self.exit_code = self.proc.wait(timeout=10)
        return self.exit_code

    def assert_clean(self):
        text = self.logs()
        for mark in SANITIZER_MARKS:
            assert mark not in text, text


@pytest.fixture
def relay_factory():
    started = []

    def make(*args, env=None, listen=None, admission=True):
        r = Relay(args, env=env, listen=listen, admission=admission)
        started.append(r)
        return r

    yield make
    # Every relay is stopped before any is judged: a failed check must not
    # leave the others running.
    codes = [r.stop() for r in started]
    for r, code in zip(started, codes):
        r.assert_clean()
        assert code == 0, f"relay exit code {code}:\n{r.logs()}"
        os.unlink(r.log.name)


@pytest.fixture
def relay(relay_factory):
    return relay_factory()


def run_relay(*args, env=None, timeout=10, wrap=True):
    """Runs the binary to completion (for flag and boot checks)."""
    full_env = dict(os.environ)
    for k in ("FLY_APP_NAME", "PYRYCODE_RELAY_PRODUCTION", "PYRYCODE_RELAY_SINGLE_INSTANCE",
              "PYRYCODE_RELAY_FCM_CREDENTIALS"):
        full_env.pop(k, None)
    full_env.update(env or {})
    cmd = (WRAP if wrap else []) + [RELAY_BIN, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)


SERVER_HEADERS = {"X-Pyrycode-Server": "s1", "X-Pyrycode-Version": "0.1.0", "User-Agent": "pyry/0.1"}
CLIENT_HEADERS = {"X-Pyrycode-Server": "s1", "X-Pyrycode-Token": "SECRET-TOKEN-123",
                  "User-Agent": "UA-SECRET", "X-Pyrycode-Device-Name": "Pixel"}


def server_headers(sid="s1", **extra):
    h = dict(SERVER_HEADERS, **{"X-Pyrycode-Server": sid})
    h.update(extra)
    return h


def client_headers(sid="s1", **extra):
    h = dict(CLIENT_HEADERS, **{"X-Pyrycode-Server": sid})
    h.update(extra)
    return h


# ---- raw protocol helpers ---------------------------------------------------

class Raw:
    """A hand-driven WebSocket client over a plain socket, for what
    well-behaved libraries refuse to do (unmasked frames, silence, dribbling)."""

    def __init__(self, port, path="/v1/server", headers=None, key=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        self.key = key or base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(upgrade_request(path, headers if headers is not None else SERVER_HEADERS,
                                          host=f"127.0.0.1:{port}", key=self.key))
        self.status, self.headers = self.read_head()

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed before response head")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return parse_head(head)

    def send_frame(self, opcode, payload=b"", fin=True, mask=True, rsv=0):
        self.sock.sendall(frame(opcode, payload, fin=fin, mask=mask, rsv=rsv))

    def send_raw(self, data):
        self.sock.sendall(data)

    def _fill(self, n, timeout):
        self.sock.settimeout(timeout)
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk

    def recv_frame(self, timeout=5.0):
        """Returns (fin, opcode, payload) of the next server frame."""
        self._fill(2, timeout)
        b0, b1 = self.buf[0], self.buf[1]
        assert b1 & 0x80 == 0, "server frames must not be masked"
        n, pos = b1 & 0x7F, 2
        if n == 126:
            self._fill(4, timeout)
            n, pos = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            self._fill(10, timeout)
            n, pos = struct.unpack(">Q", self.buf[2:10])[0], 10
        self._fill(pos + n, timeout)
        payload = self.buf[pos:pos + n]
        self.buf = self.buf[pos + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_close(self, timeout=5.0, skip_pings=True):
        """Reads frames until a close frame; returns (code, reason)."""
        while True:
            _, op, payload = self.recv_frame(timeout)
            if op == 0x8:
                if len(payload) < 2:
                    return None, ""
                return struct.unpack(">H", payload[:2])[0], payload[2:].decode()
            if op == 0x9 and not skip_pings:
                raise AssertionError("unexpected ping")

    def eof(self, timeout=5.0):
        """True when the server closes TCP within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0):
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
    else:
        head = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code, reason=b""):
    return struct.pack(">H", code) + reason


def parse_head(head):
    """(status, headers with lower-case names) of a reply head without its blank line."""
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers


def read_reply(s):
    """Reads one HTTP reply from socket s; returns (status, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, headers = parse_head(head)
    want = int(headers.get("content-length", "0"))
    while len(body) < want:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def http_request(port, raw, timeout=5.0):
    """Sends raw request bytes, returns (status, headers, body) of the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw if isinstance(raw, bytes) else raw.encode())
        return read_reply(s)


def upgrade_request(path, headers, host="x", key=None):
    """The bytes of a WebSocket upgrade request for path with extra headers."""
    hdrs = {"Host": host, "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Key": key or base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version": "13", **headers}
    return (f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
            + "\r\n").encode()


# ---- helpers for tests written with Python websockets ------------------------

def run(coro, timeout=60):
    """Runs a test coroutine with an overall deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def ws_binary(relay, sid="s1", **kw):
    """A binary (websockets client) claiming sid on relay."""
    return await websockets.connect(relay.url("/v1/server"), extra_headers=server_headers(sid),
                                    max_size=None, close_timeout=0.5, **kw)


async def ws_phone(relay, sid="s1", **kw):
    """A phone (websockets client) for sid on relay."""
    return await websockets.connect(relay.url("/v1/client"), extra_headers=client_headers(sid),
                                    max_size=None, close_timeout=0.5, **kw)


async def closed(ws, timeout=5):
    """Waits for the close and returns (code, reason)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.exceptions.ConnectionClosed as e:
        return e.code, e.reason
