#!/usr/bin/env python3
"""A real NATS cluster (three nats-server processes with JetStream) on
127.0.0.1, for the cluster-mode tests and for manual experiments.

Ports are picked free at run time; configs, JetStream stores and logs live in
one temporary directory. Everything started is stopped again and the
directory removed: by close() (context manager, pytest finalizer), by atexit,
and, should this process die without either, by the kernel (each server gets
PR_SET_PDEATHSIG = SIGKILL). Plain stdlib; no NATS client is used: readiness
and state come from the servers' HTTP monitoring endpoints.

    with NatsCluster() as c:          # blocks until the cluster is formed
        c.urls                        # "nats://127.0.0.1:p1,…" for --cluster-nats
        c.kill(0); c.wait_meta_leader(among=[1, 2]); c.restart(0)

    python3 tests/e2e/cluster/natscluster.py --serve    # foreground, Ctrl-C stops
"""
import argparse
import atexit
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HOST = "127.0.0.1"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0

_live = set()  # clusters not yet closed, for the atexit hook


def find_binary():
    """The nats-server to run: $NATS_SERVER_BIN, else the one on PATH, else
    Debian's (/usr/sbin, off a normal user's PATH), else None."""
    found = os.environ.get("NATS_SERVER_BIN") or shutil.which("nats-server")
    if not found and os.access("/usr/sbin/nats-server", os.X_OK):
        found = "/usr/sbin/nats-server"
    return found


def free_ports(n):
    """n distinct free TCP ports on HOST (all held open while choosing)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent():
    """preexec_fn: SIGKILL the server if the process that started it dies
    (PR_SET_PDEATHSIG; it fires when the starting thread exits, so start
    clusters from a thread that outlives them, as pytest and --serve do)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class ClusterError(RuntimeError):
    pass


class NatsServer:
    """One server of the cluster: its ports, files and process."""

    def __init__(self, index, name, ports, workdir):
        self.index = index
        self.name = name
        self.client_port, self.cluster_port, self.http_port = ports
        self.dir = os.path.join(workdir, name)
        self.conf = os.path.join(self.dir, "nats.conf")
        self.log = os.path.join(self.dir, "nats.log")
        self.store = os.path.join(self.dir, "jetstream")  # nats-server adds the last part
        self.proc = None
        self.paused = False
        self.history = []  # pid of every process started for this server

    @property
    def url(self):
        return f"nats://{HOST}:{self.client_port}"

    @property
    def route_url(self):
        return f"nats-route://{HOST}:{self.cluster_port}"

    @property
    def monitor_url(self):
        return f"http://{HOST}:{self.http_port}"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        """True while the process exists (paused counts as running)."""
        return self.proc is not None and self.proc.poll() is None

    def addresses(self):
        """host:port the conf listens on for clients, monitoring and routes,
        and the client address to advertise (None: the listen address). A
        server listening elsewhere overrides this alone."""
        return {"listen": f"{HOST}:{self.client_port}", "http": f"{HOST}:{self.http_port}",
                "cluster": f"{HOST}:{self.cluster_port}", "advertise": None}

    def write_conf(self, cluster_name, routes, ping_interval, ping_max, extra):
        os.makedirs(self.dir, exist_ok=True)
        a = self.addresses()
        lines = [
            "# written by tests/e2e/cluster/natscluster.py",
            f'server_name: "{self.name}"',
            f'listen: "{a["listen"]}"',
            *([f'client_advertise: "{a["advertise"]}"'] if a["advertise"] else []),
            f'http: "{a["http"]}"',
            f'ping_interval: "{ping_interval}"',
            f"ping_max: {ping_max}",
            "jetstream {",
            f'  store_dir: "{self.dir}"',
            "  max_memory_store: 268435456",
            "  max_file_store: 268435456",
            "}",
            "cluster {",
            f'  name: "{cluster_name}"',
            f'  listen: "{a["cluster"]}"',
            "  routes: [",
            *[f'    "{r}"' for r in routes],
            "  ]",
            "}",
        ]
        if extra:
            lines.append(extra)
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, binary):
        assert not self.running(), f"{self.name} is already running"
        log = open(self.log, "ab")
        try:
            log.write(f"--- natscluster: starting {self.name} at {time.strftime('%H:%M:%S')}\n"
                      .encode())
            log.flush()
            # Own session: a Ctrl-C meant for --serve reaches only this
            # script, which then stops the servers in order.
            self.proc = subprocess.Popen([binary, "-c", self.conf], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            log.close()
        self.history.append(self.proc.pid)
        self.paused = False

    def send_signal(self, sig):
        if self.running():
            self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Sends sig (a paused server is continued first so it can act on it)
        and waits; SIGKILL when it has not exited within timeout. Returns the
        exit status, or None if it was not running."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if self.paused and sig != signal.SIGKILL:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self.paused = False
        return self.proc.returncode

    def tail(self, lines=40):
        try:
            with open(self.log, "r", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)\n"


class NatsCluster:
    """size nats-servers named n1…nN on HOST, every one routed to every
    other, JetStream on each (store in the temporary directory), client and
    route pings every ping_interval with ping_max outstanding. Servers are
    addressed by index (0-based) in every method."""

    def __init__(self, size=3, name="pyry-test", ping_interval="2s", ping_max=2,
                 binary=None, ready_timeout=READY_TIMEOUT, extra_conf=""):
        self.size = size
        self.name = name
        self.ping_interval = ping_interval
        self.ping_max = ping_max
        self.binary = binary or find_binary()
        self.ready_timeout = ready_timeout
        self.extra_conf = extra_conf
        self.dir = None
        self.servers = []

    # ---- life cycle -----------------------------------------------------

    def start(self):
        """Starts every server and waits until the cluster is formed (see
        wait_ready). Raises ClusterError with the servers' logs on failure,
        after stopping whatever it started. Returns self."""
        if not self.binary:
            raise ClusterError("nats-server not found (Debian: apt-get install nats-server)")
        self.dir = tempfile.mkdtemp(prefix="natscluster-")
        _live.add(self)
        try:
            for attempt in range(3):
                self._layout()
                for s in self.servers:
                    s.start(self.binary)
                try:
                    self.wait_ready(among=range(self.size))
                    return self
                except ClusterError as e:
                    # A port taken between choosing and binding: choose again.
                    if attempt == 2 or "address already in use" not in self.logs().lower():
                        raise
                    self._stop_all()
                    for s in self.servers:
                        shutil.rmtree(s.dir, ignore_errors=True)
                    print(f"natscluster: retrying with new ports ({e.args[0].splitlines()[0]})",
                          file=sys.stderr)
        except BaseException:
            self.close()
            raise

    def _layout(self):
        ports = free_ports(3 * self.size)
        self.servers = [NatsServer(i, f"n{i + 1}", ports[3 * i:3 * i + 3], self.dir)
                        for i in range(self.size)]
        for s in self.servers:
            routes = [o.route_url for o in self.servers if o is not s]
            s.write_conf(self.name, routes, self.ping_interval, self.ping_max, self.extra_conf)

    def _stop_all(self, timeout=STOP_TIMEOUT):
        # SIGTERM to all first, so they shut down in parallel, then wait.
        for s in self.servers:
            if s.running():
                if s.paused:
                    s.send_signal(signal.SIGCONT)
                s.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for s in self.servers:
            if s.proc is None:
                continue
            try:
                s.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait(timeout=timeout)
            s.paused = False

    def close(self, timeout=STOP_TIMEOUT):
        """Stops every server (SIGTERM, SIGKILL after timeout) and removes the
        temporary directory. Idempotent; bounded by about 2 × timeout."""
        try:
            self._stop_all(timeout)
        finally:
            _live.discard(self)
            if self.dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False

    # ---- addresses ------------------------------------------------------

    @property
    def urls(self):
        """The client URLs, comma-separated (the form --cluster-nats takes)."""
        return ",".join(self.url_list)

    @property
    def url_list(self):
        return [s.url for s in self.servers]

    @property
    def pids(self):
        """Process ids by index (None for a server not started)."""
        return [s.pid for s in self.servers]

    @property
    def all_pids(self):
        """Every pid this cluster ever started, restarts included."""
        return [pid for s in self.servers for pid in s.history]

    def leftovers(self):
        """Processes still running a config of this cluster: (pid, cmdline)
        pairs found in /proc. Empty once close() has returned."""
        if not self.dir:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if any(a.startswith(self.dir.encode() + b"/") for a in argv):
                found.append((int(entry), b" ".join(argv).decode(errors="replace").strip()))
        return found

    def urls_from(self, i):
        """The client URLs with server i's first ("own server first")."""
        own = self.servers[i].url
        return ",".join([own] + [u for u in self.url_list if u != own])

    # ---- failures -------------------------------------------------------

    def stop(self, i, timeout=STOP_TIMEOUT):
        """SIGTERM server i and wait for it (SIGKILL after timeout)."""
        return self.servers[i].stop(signal.SIGTERM, timeout)

    def kill(self, i):
        """SIGKILL server i and reap it."""
        return self.servers[i].stop(signal.SIGKILL)

    def pause(self, i):
        """SIGSTOP server i: its sockets stay open, it answers nothing."""
        s = self.servers[i]
        s.send_signal(signal.SIGSTOP)
        s.paused = True

    def resume(self, i):
        """SIGCONT server i."""
        s = self.servers[i]
        s.send_signal(signal.SIGCONT)
        s.paused = False

    def send_signal(self, i, sig):
        """Any other signal, e.g. SIGUSR2 (lame-duck mode), SIGHUP (reload)."""
        self.servers[i].send_signal(sig)

    def restart(self, i, wait=True, timeout=None):
        """Stops server i if it runs, starts it again with the same config,
        ports and JetStream store and, with wait, waits until the cluster is
        formed again with it (wait_ready)."""
        s = self.servers[i]
        s.stop()
        s.start(self.binary)
        if wait:
            self.wait_ready(among=sorted(set(self.alive()) | {i}), timeout=timeout)

    # ---- state ----------------------------------------------------------

    def monitor(self, i, path, timeout=1.0):
        """GET path on server i's monitoring port: (status, parsed JSON or
        None). status 0 when nothing answered."""
        url = self.servers[i].monitor_url + path
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        except (OSError, ValueError):
            return 0, None
        try:
            return status, json.loads(body)
        except ValueError:
            return status, None

    def varz(self, i):
        return self.monitor(i, "/varz")[1]

    def routez(self, i):
        return self.monitor(i, "/routez")[1]

    def jsz(self, i):
        return self.monitor(i, "/jsz")[1]

    def healthy(self, i):
        return self.monitor(i, "/healthz?js-enabled-only=true")[0] == 200

    def alive(self):
        """Indices of servers running and not paused."""
        return [s.index for s in self.servers if s.running() and not s.paused]

    def meta_leader(self, i):
        """The JetStream meta leader's server name as server i sees it, or None."""
        jsz = self.jsz(i) or {}
        return (jsz.get("meta_cluster") or {}).get("leader") or None

    def index_of(self, name):
        return next(s.index for s in self.servers if s.name == name)

    def _formed(self, among):
        """None when the servers in among are each healthy, routed to each
        other, and agree on a meta leader among them; else what is missing."""
        ids = {}
        for i in among:
            if not self.healthy(i):
                return f"{self.servers[i].name}: /healthz?js-enabled-only=true not 200"
            ids[i] = (self.varz(i) or {}).get("server_id")
        for i in among:
            routes = (self.routez(i) or {}).get("routes") or []
            peers = [r.get("remote_id") for r in routes]
            missing = [self.servers[j].name for j in among if j != i and ids[j] not in peers]
            if missing:
                return f"{self.servers[i].name}: no route to {', '.join(missing)}"
            if len(set(peers)) != len(peers):  # two servers connected to each other at once
                return f"{self.servers[i].name}: duplicate route not yet resolved"
        names = {self.servers[i].name for i in among}
        leaders = {self.meta_leader(i) for i in among}
        if len(leaders) != 1 or not leaders <= names:
            return f"no agreed JetStream meta leader among {sorted(names)}: {sorted(map(str, leaders))}"
        return None

    def wait_ready(self, among=None, timeout=None):
        """Waits until the servers in among (default: every running, not
        paused one) are healthy with JetStream, routed to each other (one
        route per pair), and report the same meta leader, one of them. Returns that leader's name;
        raises ClusterError with the servers' logs after timeout."""
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            now = self.alive() if among is None else list(among)
            for s in self.servers:
                if s.proc is not None and s.index in now and s.proc.poll() is not None:
                    raise ClusterError(f"{s.name} exited with {s.proc.returncode}\n{self.logs()}")
            why = self._formed(now) if now else "no server running"
            if why is None:
                return self.meta_leader(now[0])
            if time.monotonic() >= deadline:
                raise ClusterError(f"cluster not formed within {timeout:g}s: {why}\n{self.logs()}")
            time.sleep(0.1)

    def wait_meta_leader(self, among=None, timeout=None):
        """wait_ready under another name: the meta leader's server name, once
        the servers in among agree on one of themselves."""
        return self.wait_ready(among=among, timeout=timeout)

    def logs(self, lines=40):
        """The last lines of every server's log, for failure messages."""
        return "".join(f"--- {s.name} ({s.log})\n{s.tail(lines)}" for s in self.servers)


@atexit.register
def _close_all():
    for c in list(_live):
        c.close()


def serve(argv=None):
    """Foreground mode for manual experiments: start, print, wait for Ctrl-C.
    Exits 0 after Ctrl-C or SIGTERM, 1 when a server exits by itself or the
    cluster does not form, 130 when interrupted while starting."""
    p = argparse.ArgumentParser(description="Run a local NATS cluster with JetStream in the "
                                "foreground until Ctrl-C (or SIGTERM).")
    p.add_argument("--serve", action="store_true", required=True)
    p.add_argument("--size", type=int, default=3)
    p.add_argument("--name", default="pyry-test", help="cluster name")
    p.add_argument("--ping-interval", default="2s")
    p.add_argument("--ping-max", type=int, default=2)
    args = p.parse_args(argv)
    cluster = NatsCluster(size=args.size, name=args.name, ping_interval=args.ping_interval,
                          ping_max=args.ping_max)
    state = {"up": False, "stop": None}

    def on_signal(sig, _frame):
        first = state["stop"] is None
        state["stop"] = sig
        if not first:  # a second Ctrl-C: no more patience
            for s in cluster.servers:
                s.send_signal(signal.SIGKILL)
        elif not state["up"]:
            raise KeyboardInterrupt  # abandon start(); it stops what it started

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        t0 = time.monotonic()
        cluster.start()
        state["up"] = True
        print(f"natscluster: {args.size} servers formed in {time.monotonic() - t0:.1f}s, "
              f"JetStream meta leader {cluster.meta_leader(0)}")
        for s in cluster.servers:
            print(f"  {s.name}  pid {s.pid}  client {s.url}  route {s.route_url}  "
                  f"monitor {s.monitor_url}")
        print(f"  configs, stores and logs under {cluster.dir} (removed on exit)")
        print(f"--cluster-nats {cluster.urls}")
        print("Ctrl-C stops every server.", flush=True)
        while state["stop"] is None:
            dead = [s for s in cluster.servers if not s.running()]
            if dead:
                print(f"natscluster: {dead[0].name} exited ({dead[0].proc.returncode})\n"
                      f"{dead[0].tail()}", file=sys.stderr)
                code = 1
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        code = 130
    except ClusterError as e:
        print(f"natscluster: {e}", file=sys.stderr)
        code = 1
    finally:
        print("natscluster: stopping", flush=True)
        cluster.close()
    return code


if __name__ == "__main__":
    sys.exit(serve())
