#!/usr/bin/python3
"""claims.py — `make bench-claims`: how fast one cluster node takes fresh
server-ids, by --cluster-ctl-threads (cluster.md §2: one ctl thread runs the
KV operations one at a time; more threads run them side by side).

Starts a 3-server NATS cluster with JetStream on loopback
(tests/e2e/cluster/natscluster.py, as bench/cluster.py does). For every
thread count in --threads, --reps times, interleaved: a fresh release relay
(`--workers 2`, its own cluster name, so every id is new) dials NATS
server 1, then bench/loadgen.c's `claims` scenario opens --binaries
binaries of distinct server-ids at once (128 handshakes in flight at most)
and holds them. A cluster claim completes after the 101 (one KV Create of
the record for a fresh id), so the time is read off the relay:
pyrycode_relay_cluster_claims_total polled every 10 ms from the loadgen's
start until it has grown by --binaries. One warm-up run first (the first
run on a fresh NATS cluster is the slowest), not reported. Reported per run: claims/s, the
time to the last 101, the mean KV Create latency the relay measured, relay
and nats-server CPU per claim, claim failures, binaries still open at the
end; and the medians per thread count. No pinning: the relay's ctl
threads, its two shards, three nats-servers and the generator share the
machine's CPUs, as they would on a small host.

Everything started is stopped on exit, Ctrl-C or failure. Plain stdlib;
run with /usr/bin/python3."""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import (BUILD, HZ, ROOT, Relay, build_loadgen, cpu_ticks, fmt, http_get,  # noqa: E402
                     interrupt, kv, loadavg, med, natscluster, on_signals, preflight, say,
                     stop_relays)

CLAIMS = "pyrycode_relay_cluster_claims_total"
KV_SUM = 'pyrycode_relay_cluster_kv_latency_seconds_sum{op="create"}'
KV_COUNT = 'pyrycode_relay_cluster_kv_latency_seconds_count{op="create"}'


def parse_args(argv):
    p = argparse.ArgumentParser(description="Cluster claims per second by ctl threads.")
    p.add_argument("--relay", default=os.path.join(BUILD, "pyrycode-relay"))
    p.add_argument("--binaries", type=int, default=3000, help="claims per run (default 3000)")
    p.add_argument("--threads", default="1,2,4",
                   help="--cluster-ctl-threads values, comma-separated (default 1,2,4)")
    p.add_argument("--reps", type=int, default=5, help="runs per thread count (default 5)")
    p.add_argument("--workers", type=int, default=2, help="relay --workers (default 2)")
    p.add_argument("--out", default=None,
                   help="report path (default bench/results/<date>-claims.md)")
    args = p.parse_args(argv)
    args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    args.lease = "20s"
    return args


def metric(relay, name):
    """A family summed over its labels (name without '{'), or the value of
    the one series named exactly (name with its labels); None if unread."""
    if "{" not in name:
        return relay.metric_sum(name)
    status, body = http_get(f"http://{natscluster.HOST}:{relay.metrics_port}/metrics")
    for line in body.splitlines() if status == 200 else []:
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def run_one(args, binary, loadgen, cluster, logdir, threads, rep):
    ports = natscluster.free_ports(2)
    relay = Relay(0, ports[0], ports[1], logdir)
    relay.name = f"c{threads}-{rep}"
    args.relay_extra = ("--cluster-ctl-threads", str(threads))
    relay.start(binary, cluster.servers[0].url, "claims" + uuid.uuid4().hex[:8], args, False)
    try:
        deadline = time.monotonic() + 60
        while relay.healthz() != 200:
            if not relay.running() or time.monotonic() > deadline:
                raise RuntimeError(f"relay ({threads} ctl threads) not ready, rc "
                                   f"{relay.proc.poll()}")
            time.sleep(0.05)
        claims0 = metric(relay, CLAIMS) or 0
        kv_sum0, kv_n0 = metric(relay, KV_SUM) or 0, metric(relay, KV_COUNT) or 0
        cpu0 = cpu_ticks(relay.pid)
        nats0 = sum(cpu_ticks(p) for p in cluster.pids if p)
        load0 = loadavg()
        t0 = time.monotonic()
        child = subprocess.Popen([loadgen, "--scenario", "claims", "--port", str(relay.port),
                                  "--binaries", str(args.binaries), "--duration", "1"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 preexec_fn=natscluster._die_with_parent)
        done = None
        claims = claims0
        while time.monotonic() < t0 + 60:
            claims = metric(relay, CLAIMS) or claims
            if claims - claims0 >= args.binaries:
                done = time.monotonic()
                break
            time.sleep(0.01)
        try:
            out, err = child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
        res = kv(out.strip().splitlines()[-1]) if out.strip() else {}
        kv_sum, kv_n = metric(relay, KV_SUM) or 0, metric(relay, KV_COUNT) or 0
        failed = len([ln for ln in open(relay.log, errors="replace")
                      if "msg=cluster_claim_failed" in ln])
        rec = {"threads": threads, "rep": rep, "rc": child.returncode, "err": err.strip()[:200],
               "claims": claims - claims0, "secs": (done - t0) if done else None,
               "upgraded_s": res.get("upgraded_s"), "alive": res.get("alive_after"),
               "kv_ms": (kv_sum - kv_sum0) * 1e3 / (kv_n - kv_n0) if kv_n > kv_n0 else None,
               "relay_us": (cpu_ticks(relay.pid) - cpu0) / HZ * 1e6 / args.binaries,
               "nats_us": (sum(cpu_ticks(p) for p in cluster.pids if p) - nats0) / HZ * 1e6
               / args.binaries,
               "failed": failed, "load": f"{load0} → {loadavg()}"}
        rec["per_s"] = args.binaries / rec["secs"] if rec["secs"] else None
        say(f"  {threads} ctl thread(s), run {rep + 1 if rep >= 0 else 'warm-up'}: {fmt(rec['per_s'])} claims/s, last 101 "
            f"{fmt(rec['upgraded_s'], '.2f')} s, KV create {fmt(rec['kv_ms'], '.2f')} ms, "
            f"relay {rec['relay_us']:.0f} µs/claim, nats {rec['nats_us']:.0f} µs/claim, "
            f"failed {failed}, open {fmt(rec['alive'])}")
        return rec
    finally:
        stop_relays([relay])


def write_report(path, args, runs, started_at, elapsed, nats_version):
    lines = [f"# Cluster claims per second by `--cluster-ctl-threads` — {started_at}", "",
             "`bench/claims.py` (`make bench-claims`): one release relay (`--workers "
             f"{args.workers}`) on a 3-server NATS cluster with JetStream ({nats_version}, "
             "R3 memory streams), all on this machine's "
             f"{os.cpu_count()} CPUs, no pinning. Per run a fresh relay and cluster name; "
             f"loadgen opens {args.binaries} binaries of fresh server-ids at once (128 "
             "handshakes in flight) and the time runs until the relay's "
             "`pyrycode_relay_cluster_claims_total` has grown by as many. Thread counts "
             f"interleaved after one unreported warm-up run, {args.reps} runs each; "
             f"{elapsed:.0f} s in all.", "",
             "| ctl threads | claims/s (median) | runs | KV create mean | relay CPU / claim | "
             "nats-server CPU / claim | failed |", "|---|---|---|---|---|---|---|"]
    base = None
    for t in args.threads:
        rs = [r for r in runs if r["threads"] == t]
        per = med([r["per_s"] for r in rs])
        if t == args.threads[0]:
            base = per
        ratio = f" ({per / base:.2f}×)" if per and base and t != args.threads[0] else ""
        lines.append(f"| {t} | {fmt(per)}{ratio} | "
                     f"{', '.join(fmt(r['per_s']) for r in rs)} | "
                     f"{fmt(med([r['kv_ms'] for r in rs]), '.2f')} ms | "
                     f"{fmt(med([r['relay_us'] for r in rs]))} µs | "
                     f"{fmt(med([r['nats_us'] for r in rs]))} µs | "
                     f"{sum(r['failed'] for r in rs)} |")
    lines += ["", "Every run:", "", "| threads | run | claims/s | last 101 | KV create | "
              "relay µs | nats µs | failed | open at end | load |", "|---|---|---|---|---|---|"
              "---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['threads']} | {r['rep'] + 1} | {fmt(r['per_s'])} | "
                     f"{fmt(r['upgraded_s'], '.2f')} s | {fmt(r['kv_ms'], '.2f')} ms | "
                     f"{r['relay_us']:.0f} | {r['nats_us']:.0f} | {r['failed']} | "
                     f"{fmt(r['alive'])} | {r['load']} |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    binary = preflight("bench-claims", args.relay)
    if not binary:
        return 2
    out = args.out or os.path.join(ROOT, "bench", "results",
                                   time.strftime("%Y-%m-%d", time.gmtime()) + "-claims.md")

    on_signals(interrupt)
    loadgen = build_loadgen()
    logdir = tempfile.mkdtemp(prefix="bench-claims-")
    cluster = natscluster.NatsCluster(size=3, name="pyry-claims")
    runs = []
    code = 0
    t_start = time.monotonic()
    started_at = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())
    try:
        say("bench-claims: starting a 3-server NATS cluster with JetStream")
        cluster.start()
        version = subprocess.run([cluster.binary, "--version"], capture_output=True,
                                 text=True).stdout.strip() or "nats-server"
        say("bench-claims: one warm-up run (not reported)")
        run_one(args, binary, loadgen, cluster, logdir, args.threads[0], -1)
        for rep in range(args.reps):
            for t in args.threads:
                runs.append(run_one(args, binary, loadgen, cluster, logdir, t, rep))
        write_report(out, args, runs, started_at, time.monotonic() - t_start, version)
        say(f"report: {out}")
        if any(r["rc"] or r["per_s"] is None for r in runs):
            code = 1
    except KeyboardInterrupt:
        say("bench-claims: interrupted; stopping everything")
        code = 130
    except (RuntimeError, natscluster.ClusterError, subprocess.CalledProcessError) as e:
        say(f"bench-claims: {e}")
        code = 1
    finally:
        on_signals(signal.SIG_IGN)  # cleanup is not interruptible
        cluster.close()
        shutil.rmtree(logdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
