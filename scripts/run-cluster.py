#!/usr/bin/python3
"""run-cluster.py — `make run-cluster`: cluster mode on one machine, for
trying it out. Starts a 3-server NATS cluster with JetStream
(tests/e2e/cluster/natscluster.py) and three relays r1–r3 on loopback ports
(relay i dials NATS server i first), waits until every relay's /healthz
answers 200, prints the URLs, and runs until Ctrl-C or SIGTERM.

Stopping: the relays get SIGTERM (SIGKILL after --stop-timeout), then the
NATS servers are stopped and the temporary directories removed; exit 0.
A relay or NATS server that exits by itself is reported (with the tail of its
log) and everything is stopped; exit 1. A second Ctrl-C kills at once. Each
child gets PR_SET_PDEATHSIG = SIGKILL, so nothing outlives this script.

    scripts/run-cluster.py --relay build/release/pyrycode-relay [--lease 10s]
        [--base-port 9000] [--follow] [-- extra relay flags]

Plain stdlib; run with /usr/bin/python3 (Debian's)."""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # leave no __pycache__ behind in the tree
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e", "cluster"))
import natscluster  # noqa: E402  (the same helper the cluster tests use)

HOST = natscluster.HOST
NODES = 3
POLL = 0.1

# The relay refuses Linux capabilities beyond NET_BIND_SERVICE (spec §6.4);
# as root it runs under setpriv, as `make run` and the e2e tests do.
CAP_NET_BIND_SERVICE = 10


def _extra_caps():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16) & ~(1 << CAP_NET_BIND_SERVICE) != 0
    except OSError:
        pass
    return False


WRAP = ["setpriv", "--bounding-set=-all,+net_bind_service", "--"] if _extra_caps() else []

# Variables that would put the relay in production or single-instance mode
# (the latter conflicts with a cluster bus: exit 2).
DROP_ENV = ("FLY_APP_NAME", "PYRYCODE_RELAY_PRODUCTION", "PYRYCODE_RELAY_SINGLE_INSTANCE")


def say(msg="", file=sys.stdout):
    print(msg, file=file, flush=True)


class Stop(Exception):
    """Ctrl-C or SIGTERM while starting."""


class RelayNode:
    def __init__(self, index, port, metrics_port, logdir):
        self.index = index
        self.name = f"r{index + 1}"
        self.port = port
        self.metrics_port = metrics_port
        self.log = os.path.join(logdir, f"{self.name}.log")
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def url(self, path, scheme="ws", port=None):
        return f"{scheme}://{HOST}:{port or self.port}{path}"

    def start(self, binary, nats_urls, cluster_name, lease, extra):
        cmd = WRAP + [binary, "--insecure-listen", f"{HOST}:{self.port}",
                      "--metrics-listen", f"{HOST}:{self.metrics_port}",
                      "--cluster-nats", nats_urls, "--cluster-name", cluster_name,
                      "--cluster-node-name", self.name, "--cluster-lease", lease,
                      "--workers", "2", "--log-format", "text", *extra]
        env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
        with open(self.log, "ab") as log:
            # Own session: Ctrl-C reaches only this script, which stops the
            # relays before the NATS servers they depend on.
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True,
                                         preexec_fn=natscluster._die_with_parent)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def healthz(self):
        try:
            with urllib.request.urlopen(self.url("/healthz", "http"), timeout=1.0) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (OSError, ValueError):
            return 0

    def tail(self, lines=40):
        try:
            with open(self.log, "r", errors="replace") as f:
                return "".join(f.readlines()[-lines:]) or "(empty)\n"
        except OSError:
            return "(no log)\n"


def stop_relays(relays, timeout):
    """SIGTERM to every running relay (they drain in parallel), wait up to
    timeout, SIGKILL what is left, reap everything."""
    for r in relays:
        if r.running():
            r.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for r in relays:
        if r.proc is None:
            continue
        try:
            r.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"run-cluster: {r.name} did not stop within {timeout:g}s; SIGKILL", sys.stderr)
            r.proc.kill()
            r.proc.wait(timeout=10)


def follow(relays, done):
    """--follow: the relays' log lines on stdout, prefixed r1/r2/r3."""
    lock = threading.Lock()

    def tail(r):
        with open(r.log, "r", errors="replace") as f:
            f.seek(0)
            partial = ""
            while True:
                chunk = f.readline()
                if not chunk:
                    if done.is_set():
                        return
                    time.sleep(0.1)
                    continue
                partial += chunk
                if partial.endswith("\n"):
                    with lock:
                        sys.stdout.write(f"{r.name} | {partial}")
                        sys.stdout.flush()
                    partial = ""

    threads = [threading.Thread(target=tail, args=(r,), daemon=True) for r in relays]
    for t in threads:
        t.start()
    return threads


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Run a local NATS cluster (3 servers, JetStream) and three relays in "
        "cluster mode on 127.0.0.1 until Ctrl-C. Flags after -- go to every relay.")
    p.add_argument("--relay", default=os.path.join(ROOT, "build", "release", "pyrycode-relay"),
                   help="the relay binary (default: build/release/pyrycode-relay)")
    p.add_argument("--lease", default="20s", help="--cluster-lease of every relay (default 20s, "
                   "at least 6s)")
    p.add_argument("--cluster-name", default="local", help="--cluster-name (default local)")
    p.add_argument("--base-port", type=int, default=0,
                   help="fixed ports: relays listen on N, N+1, N+2, their /metrics on N+3, N+4, "
                   "N+5 (default: free ports; NATS ports are always chosen free)")
    p.add_argument("--ready-timeout", type=float, default=60.0,
                   help="seconds to wait for the NATS cluster, then for every relay's /healthz "
                   "200 (default 60)")
    p.add_argument("--stop-timeout", type=float, default=15.0,
                   help="seconds a relay gets to exit after SIGTERM before SIGKILL (default 15)")
    p.add_argument("--follow", action="store_true",
                   help="also print the relays' logs on stdout, prefixed r1/r2/r3")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep the relays' log directory on exit (NATS logs are removed)")
    if "--" in argv:
        i = argv.index("--")
        args, extra = p.parse_args(argv[:i]), argv[i + 1:]
    else:
        args, extra = p.parse_args(argv), []
    if not 0 <= args.base_port <= 65535 - 2 * NODES:
        p.error("--base-port out of range")
    return args, extra


def ports(base):
    if base:
        return list(range(base, base + 2 * NODES))
    return natscluster.free_ports(2 * NODES)


def wait_relays(relays, cluster, timeout, state):
    """Waits until every relay's /healthz is 200. Returns None, or why not."""
    deadline = time.monotonic() + timeout
    pending = list(relays)
    while pending:
        if state["stop"] is not None:
            raise Stop()
        for r in list(pending):
            if not r.running():
                return f"{r.name} exited with {r.proc.returncode} while starting"
            if r.healthz() == 200:
                pending.remove(r)
        dead = [s for s in cluster.servers if not s.running()]
        if dead:
            return f"NATS server {dead[0].name} exited ({dead[0].proc.returncode})"
        if pending and time.monotonic() >= deadline:
            names = ", ".join(r.name for r in pending)
            return f"/healthz of {names} not 200 within {timeout:g}s"
        time.sleep(POLL)
    return None


def print_ready(args, cluster, relays, logdir, t_relays):
    say(f"run-cluster: {len(relays)} relays ready in {t_relays:.1f}s "
        f"(cluster {args.cluster_name}, lease {args.lease}, relay {args.relay})")
    for r in relays:
        say(f"  {r.name}  pid {r.pid}")
        say(f"      binary   {r.url('/v1/server')}")
        say(f"      phone    {r.url('/v1/client')}")
        say(f"      healthz  {r.url('/healthz', 'http')}")
        say(f"      metrics  {r.url('/metrics', 'http', r.metrics_port)}")
        say(f"      log      {r.log}")
    say(f"  NATS client URLs: {cluster.urls}")
    kept = " (kept on exit)" if args.keep_logs else " (removed on exit)"
    say(f"  relay logs: {logdir}{kept}; NATS logs: {cluster.dir}/n*/nats.log (removed on exit)")
    say("run-cluster: ready. Ctrl-C stops everything.")


def main(argv=None):
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    binary = os.path.abspath(args.relay)
    if not os.access(binary, os.X_OK):
        say(f"run-cluster: relay binary {args.relay} not found or not executable "
            "(make build, or pass --relay)", sys.stderr)
        return 2
    if WRAP and not shutil.which("setpriv"):
        say("run-cluster: running with extra capabilities but setpriv is missing "
            "(apt-get install util-linux)", sys.stderr)
        return 2
    if not natscluster.find_binary():
        say("run-cluster: nats-server not found (Debian: apt-get install nats-server, "
            "which `make run-cluster` does through scripts/deps.sh test)", sys.stderr)
        return 2

    state = {"stop": None, "starting": True}
    relays = []
    cluster = natscluster.NatsCluster(size=NODES, name="pyry-dev",
                                      ready_timeout=args.ready_timeout)

    def on_signal(sig, _frame):
        first = state["stop"] is None
        state["stop"] = sig
        if not first:  # a second Ctrl-C: no more patience
            for r in relays:
                if r.running():
                    r.proc.kill()
            for s in cluster.servers:
                s.send_signal(signal.SIGKILL)
        elif state["starting"]:
            raise KeyboardInterrupt  # abandon whatever start-up wait is running

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    logdir = tempfile.mkdtemp(prefix="run-cluster-")
    done = threading.Event()
    code = 0
    try:
        t0 = time.monotonic()
        say(f"run-cluster: starting a {NODES}-server NATS cluster with JetStream")
        cluster.start()
        t_nats = time.monotonic() - t0
        say(f"run-cluster: NATS cluster formed in {t_nats:.1f}s, "
            f"JetStream meta leader {cluster.meta_leader(0)}")
        for s in cluster.servers:
            say(f"  {s.name}  pid {s.pid}  client {s.url}  monitor {s.monitor_url}")
        say(f"  NATS files under {cluster.dir}")
        p = ports(args.base_port)
        relays.extend(RelayNode(i, p[i], p[NODES + i], logdir) for i in range(NODES))
        t1 = time.monotonic()
        say(f"run-cluster: starting relays {', '.join(r.name for r in relays)} "
            f"(logs in {logdir})")
        for r in relays:
            r.start(binary, cluster.urls_from(r.index), args.cluster_name, args.lease, extra)
            say(f"  {r.name}  pid {r.pid}  ws://{HOST}:{r.port}  --cluster-nats "
                f"{cluster.urls_from(r.index)}")
        why = wait_relays(relays, cluster, args.ready_timeout, state)
        if why:
            raise natscluster.ClusterError(why)
        state["starting"] = False
        if state["stop"] is not None:
            raise Stop()
        print_ready(args, cluster, relays, logdir, time.monotonic() - t1)
        if args.follow:
            follow(relays, done)
        while state["stop"] is None:
            dead = [r for r in relays if not r.running()]
            if dead:
                raise natscluster.ClusterError(f"{dead[0].name} (pid {dead[0].pid}) exited "
                                               f"with {dead[0].proc.returncode}")
            gone = [s for s in cluster.servers if not s.running()]
            if gone:
                raise natscluster.ClusterError(f"NATS server {gone[0].name} (pid "
                                               f"{gone[0].pid}) exited with "
                                               f"{gone[0].proc.returncode}\n--- "
                                               f"{gone[0].log}\n{gone[0].tail()}")
            time.sleep(0.2)
    except (KeyboardInterrupt, Stop):
        code = 0
    except natscluster.ClusterError as e:
        msg = str(e)
        say(f"run-cluster: {msg.splitlines()[0]}", sys.stderr)
        rest = "\n".join(msg.splitlines()[1:])
        if rest:
            say(rest, sys.stderr)
        started = [r for r in relays if r.proc is not None]
        show = [r for r in started if not r.running()] or \
            [r for r in started if r.healthz() != 200]
        for r in show:
            say(f"--- {r.name} log ({r.log}), last lines:\n{r.tail()}", sys.stderr)
        code = 1
    finally:
        # From here on any Ctrl-C counts as the second one: it kills at once.
        state["starting"] = False
        if state["stop"] is None:
            state["stop"] = "stopping"
        say("run-cluster: stopping the relays", sys.stderr if code else sys.stdout)
        stop_relays(relays, args.stop_timeout)
        done.set()
        say("run-cluster: stopping the NATS cluster", sys.stderr if code else sys.stdout)
        try:
            cluster.close()
        finally:
            if not args.keep_logs:
                shutil.rmtree(logdir, ignore_errors=True)
    say(f"run-cluster: stopped (exit {code})", sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())
