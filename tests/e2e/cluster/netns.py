"""Network namespaces for the cluster partition test (cluster.md §10 item 8).

    hub  (pyry-hub-<tag>)   bridges br-bus and br-cli; 10.77.2.254/24 on br-cli
    node k (pyry-n<k>-<tag>) veth "bus" 10.77.1.k/24, its hub end bus-n<k> on br-bus
                             veth "cli" 10.77.2.k/24, its hub end cli-n<k> on br-cli

Node k runs its nats-server (client port on every address of the node,
advertised as 10.77.1.k; routes and monitor as below) and its relay
(listening on 10.77.2.k). The bus bridge is the only path between nodes:
the client bridge's ports are isolated from each other, so a node reaches
only the hub there. Cutting node k is `ip -n HUB link set bus-n<k> down`.

Addresses and routes exist only inside these namespaces, never in the root
one. The test's clients run in the hub: hub.call(fn) runs fn on a thread
that entered the hub's network namespace (setns), and every socket that
thread and the threads it starts create lives there. Processes are started
from the calling thread with `ip netns exec` (which execs, so the pid is the
program's) and get PR_SET_PDEATHSIG = SIGKILL.

Cleanup: Topology.close() (a pytest finalizer and an atexit hook) kills
every process whose network namespace is one of ours and deletes the
namespaces (which removes their veths and bridges). Namespaces of an
earlier run whose process is gone are swept on the next start."""
import atexit
import concurrent.futures
import ctypes
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import tempfile
import time

from conftest import RELAY_BIN, WRAP, Relay, read_reply

from .natscluster import NatsCluster, NatsServer, _die_with_parent

CLONE_NEWNET = 0x40000000
NAME = re.compile(r"pyry-(hub|n\d)-(\d+)-[0-9a-f]+\Z")
NATS_PORT, ROUTE_PORT, MONITOR_PORT, RELAY_PORT = 4222, 6222, 8222, 8080

_live = set()  # topologies not yet closed, for the atexit hook


class NetnsUnavailable(RuntimeError):
    """`ip netns add` failed (no privilege, no netns support)."""


def ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def netns_list():
    out = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _inode(path):
    try:
        st = os.stat(path)
        return st.st_dev, st.st_ino
    except OSError:
        return None


def pids_in(names):
    """Pids of every process whose network namespace is one of names."""
    want = {_inode(f"/run/netns/{n}") for n in names} - {None}
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry != str(os.getpid()) and \
                _inode(f"/proc/{entry}/ns/net") in want:
            out.append(int(entry))
    return out


def _kill_and_delete(names):
    for pid in pids_in(names):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 5
    while pids_in(names) and time.monotonic() < deadline:
        time.sleep(0.05)
    for n in names:
        ip("netns", "del", n, check=False)


def sweep_stale():
    """Deletes namespaces left by a run whose process no longer exists."""
    stale = [n for n in netns_list() if NAME.match(n)
             and not os.path.exists(f"/proc/{NAME.match(n).group(2)}")]
    if stale:
        _kill_and_delete(stale)
    return stale


def _enter(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


class Topology:
    """The hub and n nodes; see the module docstring."""

    def __init__(self, n=3):
        self.n = n
        self.tag = f"{os.getpid()}-{secrets.token_hex(2)}"
        self.hub = f"pyry-hub-{self.tag}"
        self.nodes = [f"pyry-n{k}-{self.tag}" for k in range(1, n + 1)]
        self.procs = []
        self._pool = None

    @staticmethod
    def bus_addr(k):
        return f"10.77.1.{k}"

    @staticmethod
    def cli_addr(k):
        return f"10.77.2.{k}"

    def node(self, k):
        return self.nodes[k - 1]

    @property
    def names(self):
        return [self.hub, *self.nodes]

    def up(self):
        """Creates everything. NetnsUnavailable if `ip netns add` is refused."""
        sweep_stale()
        r = ip("netns", "add", self.hub, check=False)
        if r.returncode != 0:
            raise NetnsUnavailable(f"ip netns add: {r.stderr.strip()}")
        _live.add(self)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self):
        h = ["-n", self.hub]
        ip(*h, "link", "set", "lo", "up")
        for br in ("br-bus", "br-cli"):
            ip(*h, "link", "add", br, "type", "bridge")
            ip(*h, "link", "set", br, "up")
        ip(*h, "addr", "add", "10.77.2.254/24", "dev", "br-cli")
        for k, ns in enumerate(self.nodes, 1):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            for side, addr in (("bus", self.bus_addr(k)), ("cli", self.cli_addr(k))):
                ip(*h, "link", "add", f"{side}-n{k}", "type", "veth", "peer", "name", side,
                   "netns", ns)
                ip(*h, "link", "set", f"{side}-n{k}", "master", f"br-{side}", "up")
                ip("-n", ns, "addr", "add", f"{addr}/24", "dev", side)
                ip("-n", ns, "link", "set", side, "up")
            # nodes reach each other over br-bus only, the hub over br-cli
            ip(*h, "link", "set", f"cli-n{k}", "type", "bridge_slave", "isolated", "on")
        self._pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="hub", initializer=_enter, initargs=(f"/run/netns/{self.hub}",))

    # ---- the partition --------------------------------------------------

    def cut(self, k):
        ip("-n", self.hub, "link", "set", f"bus-n{k}", "down")

    def heal(self, k):
        ip("-n", self.hub, "link", "set", f"bus-n{k}", "up")

    # ---- running things -------------------------------------------------

    def call(self, fn, *args, timeout=None):
        """fn(*args) on the hub's thread (at once when the calling thread is
        already in the hub's namespace); returns its result or raises."""
        if _inode("/proc/thread-self/ns/net") == _inode(f"/run/netns/{self.hub}"):
            return fn(*args)
        return self._pool.submit(fn, *args).result(timeout)

    def popen(self, ns, argv, **kw):
        """argv in namespace ns; killed by close() at the latest."""
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL,
                             preexec_fn=_die_with_parent, **kw)
        self.procs.append(p)
        return p

    def close(self):
        """Kills what runs in our namespaces and deletes them. Idempotent."""
        try:
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            _kill_and_delete(self.names)
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
        finally:
            _live.discard(self)

    def leftovers(self):
        """What close() should have removed: namespaces and processes."""
        left = [n for n in netns_list() if n in self.names]
        return left + [f"pid {p}" for p in pids_in(left)]


@atexit.register
def _close_all():
    for t in list(_live):
        t.close()


# ---- NATS inside the nodes ---------------------------------------------------

class NsNatsServer(NatsServer):
    """Server k of the topology: clients on every address of node k
    (advertised as the bus address, so a relay that learns the cluster's
    URLs learns only bus ones), routes on the bus address, monitoring on
    the client-side address (read from the hub)."""

    def __init__(self, topo, k, workdir):
        super().__init__(k - 1, f"n{k}", (NATS_PORT, ROUTE_PORT, MONITOR_PORT), workdir)
        self.topo = topo
        self.k = k
        self.ns = topo.node(k)

    @property
    def url(self):
        return f"nats://{self.topo.bus_addr(self.k)}:{self.client_port}"

    @property
    def route_url(self):
        return f"nats-route://{self.topo.bus_addr(self.k)}:{self.cluster_port}"

    @property
    def monitor_url(self):
        return f"http://{self.topo.cli_addr(self.k)}:{self.http_port}"

    def addresses(self):
        bus = self.topo.bus_addr(self.k)
        return {"listen": f"0.0.0.0:{self.client_port}", "advertise": f"{bus}:{self.client_port}",
                "http": f"{self.topo.cli_addr(self.k)}:{self.http_port}",
                "cluster": f"{bus}:{self.cluster_port}"}

    def start(self, binary):
        assert not self.running(), f"{self.name} is already running"
        with open(self.log, "ab") as log:
            self.proc = self.topo.popen(self.ns, [binary, "-c", self.conf], stdout=log,
                                        stderr=subprocess.STDOUT)
        self.history.append(self.proc.pid)
        self.paused = False


class NsNatsCluster(NatsCluster):
    """natscluster.NatsCluster with server k in node k's namespace (fixed
    ports: every server has its own addresses); its monitoring reads run on
    the hub's thread."""

    def __init__(self, topo, **kw):
        super().__init__(size=topo.n, **kw)
        self.topo = topo

    def _layout(self):
        self.servers = [NsNatsServer(self.topo, k, self.dir) for k in range(1, self.size + 1)]
        for s in self.servers:
            routes = [o.route_url for o in self.servers if o is not s]
            s.write_conf(self.name, routes, self.ping_interval, self.ping_max, self.extra_conf)

    def monitor(self, i, path, timeout=1.0):
        return self.topo.call(super().monitor, i, path, timeout)


def nats_request(host, port, subject, payload=b"", timeout=3.0):
    """One request over the plain NATS protocol (no client library): the
    reply's payload as bytes. Call it on the hub's thread. TimeoutError when
    no reply arrives in time."""
    if isinstance(payload, str):
        payload = payload.encode()
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as s:
        f = s.makefile("rb")
        f.readline()  # INFO
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.req 1\r\n'
                  + f"PUB {subject} _INBOX.req {len(payload)}\r\n".encode() + payload
                  + b"\r\n")
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                line = f.readline()
            except socket.timeout:
                raise TimeoutError(f"no reply to {subject} within {timeout} s") from None
            if not line:
                raise ConnectionError(f"connection closed waiting for {subject}")
            if line.startswith(b"PING"):
                s.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG "):
                size = int(line.split()[-1])
                return f.read(size + 2)[:size]
            elif line.startswith(b"-ERR"):
                raise ConnectionError(line.decode().strip())


def js_request(host, subject, body=None, timeout=3.0):
    """A JetStream API request to the server at host: the parsed reply."""
    data = json.dumps(body).encode() if body is not None else b""
    return json.loads(nats_request(host, NATS_PORT, subject, data, timeout))


# ---- a relay inside a node ---------------------------------------------------

class NsRelay(Relay):
    """conftest.Relay (logs(), wait_log(), stop(), assert_clean()) running in
    node k's namespace, listening on its client-side address; url() and
    healthz() reach it from the hub."""

    def __init__(self, topo, k, args):
        self.topo = topo
        self.k = k
        self.label = f"R{k}"
        self.host = topo.cli_addr(k)
        self.port = RELAY_PORT
        self.log = tempfile.NamedTemporaryFile(prefix=f"relay-r{k}-", suffix=".log",
                                               delete=False)
        cmd = WRAP + [RELAY_BIN, "--insecure-listen", f"{self.host}:{self.port}",
                      "--metrics-listen=", "--close-timeout", "500ms", "--rate-limit-burst", "0",
                      "--max-connections", "100000", *args]
        self.proc = topo.popen(topo.node(k), cmd, stdout=subprocess.DEVNULL, stderr=self.log)
        self.exit_code = None
        self._wait_ready()

    def _wait_ready(self):
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited early ({self.proc.returncode}):\n"
                                   + self.logs())
            if "msg=ready" in self.logs() and self.topo.call(self._answers):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.label} did not start:\n" + self.logs())

    def _answers(self):
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def url(self, path):
        return f"ws://{self.host}:{self.port}{path}"

    def healthz(self, timeout=2.0):
        """(status, body) of GET /healthz; call it on the hub's thread."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status, _, body = read_reply(s)
        return status, body
