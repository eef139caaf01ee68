"""Cluster mode under a bus partition (cluster.md §7 row "bus partition", §10
test plan item 8, §3.2 lease and fencing). Three nodes, each a network
namespace holding one nats-server and one relay, joined by a hub namespace
with a bus bridge and a client bridge (netns.py); the test's clients run in
the hub. The cut takes node 3's bus port down (`ip -n HUB link set bus-n3
down`): n3 and R3 are the minority, n1/n2 with R1/R2 keep JetStream quorum.

Asserted, with deadlines scaled to the lease (see LEASE_S): R3's /healthz
goes 503 "cluster_unavailable"; R3 fences and closes its WebSockets 1001;
R1 and R2 take R3's server-ids over once R3's lease has expired, and only
after R3 closed the old binaries (never two owners); phones via R1 reach the
new binaries; leader reads of the ownership records (JetStream API, through
n1 and n2) name the new owners; after the heal R3 registers again (new node
id, higher epoch), is ready, and a binary for a taken id dialing R3 is
refused 4409 (the owner on R1 answers; it re-dials after a 1011 "cluster
unavailable" while JetStream still elects), never accepted. R1 and R2 never
fence during the partition, nor, normally, on the heal (see LEASE_S for when
they may, which the test then tolerates with a warning, checking only that
there is still one owner at a time). Throughout, numbered frames run between
a binary on R1 and phones on R1 and R2 (checker.py): no gap, no close; a
checked phone on R3 is closed 1001 or 1011 with one close notice. Before the
cut, the KV streams' leaders are moved off n3 (the cut tests a partition,
not a leader election on top of it).

Skipped when `ip netns add` is refused. Every process runs inside one of the
test's namespaces and is killed, and the namespaces deleted, by the fixture
(also on SIGTERM) and an atexit hook; the fixture fails if anything is left
behind. About 35 s, most of it the 20 s lease. PARTITION_KEEP_LOGS=DIR keeps
the relays' and servers' logs in DIR/<tag>/."""
import asyncio
import base64
import hashlib
import os
import re
import shutil
import signal
import time
import warnings

import pytest

from conftest import closed, run
from conftest import ws_binary as binary, ws_phone as phone

from .checker import Checker
from .natscluster import find_binary
from .netns import NetnsUnavailable, NsNatsCluster, NsRelay, Topology, js_request
from .relays import cluster_name, log_lines
from .test_cluster_faults import claim, closes_ok, roundtrip, stop_checked

# Deadlines scale with the lease L (docs/features/cluster-ownership.md, lease
# table): a node is ready only with a renewal sent less than L/2 ago, it
# fences at its last successful renewal + 3L/4, and its lease key lives L
# after that renewal, which was sent at most R = L/10 before the cut. At the
# default L = 20 s these are the design's numbers: 503 within 11 s (L/2 +
# 1 s), WebSockets closed by 15 s (+ 1 s), ids taken after 20 s.
#
# L = 20 s, not the 6 s minimum: healing the partition costs the whole
# JetStream cluster an election (nats-server 2.9.10 has no pre-vote: n3
# comes back with a higher term and deposes every leader; measured 5.7 s
# without any leader, meta and streams, at L = 6 s; at L = 20 s R1's renewals
# failed for 12.3 s after one heal, and in 1 run of about 20, on a loaded
# machine, for more than 13 s). A node rides out L - L/4 - L/10 of
# write outage (3.9 s at L = 6 s, 5.2 s at 8 s), so below about 15 s R1 and
# R2 fence on the heal too (seen at 6 s: cluster_lease_lost on all three,
# "No responders available for request (jetstream error 10076)"), which is
# cluster.md §8's "below 15 s a stream-leader election can fence every
# node". At 20 s the tolerance is 13 s: usually enough.
LEASE_S = 20.0
SLACK = 1.0
NOT_READY_BY = LEASE_S / 2 + SLACK            # 11 s
FENCED_BY = LEASE_S * 3 / 4 + SLACK           # 16 s
TAKEN_AFTER = LEASE_S * 9 / 10 - 0.2          # 17.8 s: not before R3's lease key can expire
TAKEN_BY = LEASE_S + 1 + 3                    # 24 s: + lease poll period + lock, CAS, slack
READY_AFTER_HEAL_BY = 30.0                    # routes, the JetStream election, register
LATE_BY = 10 + 2 + LEASE_S + 4                # probe + 2 s, or R1's lease read for L + 2 s

SHUTTING_DOWN = (1001, "shutting down")
LINK_LOST = (1011, "cluster link lost")
UNAVAILABLE = (1011, "cluster unavailable")
CLAIM_FAILED_REASON = re.compile(   # docs/operations.md, cluster_claim_failed
    r" reason=(bus_errors|not_writer|not_serving|write_unacknowledged)(\s|$)")
CONFLICT = (4409, "server-id already claimed")


@pytest.fixture
def partition():
    """(topology, NATS cluster, list to append relays to). Teardown: each
    relay stopped (SIGTERM, SIGKILL after 15 s) and checked for sanitizer
    reports, the servers stopped, the namespaces deleted; nothing may
    remain."""
    if not find_binary():
        pytest.skip("nats-server is not installed")
    topo = Topology()
    try:
        topo.up()
    except NetnsUnavailable as e:
        pytest.skip(f"network namespaces unavailable (needs root / CAP_SYS_ADMIN): {e}")
    nc = None
    relays = []
    # SIGTERM (a CI timeout) ends the run like Ctrl-C, through this
    # finalizer; atexit alone would not run on a default SIGTERM.
    term = signal.getsignal(signal.SIGTERM)
    if term == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        nc = NsNatsCluster(topo, name="pyry-part").start()
        yield topo, nc, relays
        for r in relays:
            r.stop()   # a no-op after stop_checked
            r.assert_clean()
    finally:
        for r in relays:
            if r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait(timeout=10)
        if nc is not None:
            nc._stop_all()
            keep = os.environ.get("PARTITION_KEEP_LOGS")   # a directory
            if keep:
                dest = os.path.join(keep, topo.tag)
                os.makedirs(dest, exist_ok=True)
                for r in relays:
                    shutil.copy(r.log.name, os.path.join(dest, f"{r.label}.log"))
                for srv in nc.servers:
                    shutil.copy(srv.log, os.path.join(dest, f"{srv.name}.log"))
            nc.close()
        topo.close()
        signal.signal(signal.SIGTERM, term)
        for r in relays:
            os.unlink(r.log.name)
    left = topo.leftovers() + (nc.leftovers() if nc else [])
    assert not left, f"left behind: {left}"


# ---- ownership records, read through the stream leader ------------------------

def record(topo, name, sid, via, timeout=15.0):
    """The sids record of sid as the stream leader has it, asked through
    server `via` (1-based): (value, revision), or (None, None) if absent.
    Retried while JetStream answers "temporarily unavailable" (10008: an
    election, e.g. right after the heal) or not at all."""
    stream = f"KV_pyry_{name}_sids"
    key = hashlib.sha256(sid.encode()).hexdigest()
    deadline = time.monotonic() + timeout
    while True:
        try:
            rep = topo.call(js_request, topo.cli_addr(via), f"$JS.API.STREAM.MSG.GET.{stream}",
                            {"last_by_subj": f"$KV.pyry_{name}_sids.{key}"})
        except (TimeoutError, OSError) as e:
            rep = {"error": {"err_code": 10008, "description": repr(e)}}
        err = rep.get("error", {}).get("err_code")
        if err != 10008 or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if "error" in rep:
        assert err == 10037, rep
        return None, None
    return base64.b64decode(rep["message"]["data"]).decode(), rep["message"]["seq"]


def owner(topo, name, sid):
    """The owner's node id (None when free), after checking that the reads
    through n1 and n2 agree."""
    reads = {via: record(topo, name, sid, via) for via in (1, 2)}
    assert len(set(reads.values())) == 1, f"{sid}: reads differ {reads}"
    value = reads[1][0]
    assert value is not None, f"{sid}: no record"
    m = re.fullmatch(r"1 (\S+) (\d+) (\d+)", value)
    return m.group(1) if m else None


def node_ids(relay):
    """(node id, epoch) of every registration the relay logged, in order."""
    return [(re.search(r" node=(\S+)", ln).group(1), int(re.search(r" epoch=(\d+)", ln).group(1)))
            for ln in log_lines(relay, "cluster_node_registered")]


def trail(relays, sid):
    """What the relays logged about sid and the cluster (for messages)."""
    return "\n".join(f"{r.label}: {ln}" for r in relays for ln in r.logs().splitlines()
                     if re.search(f" server_id={sid}( |$)", ln) or "msg=cluster_" in ln
                     and "renew_failed" not in ln)


def stream_leader(topo, stream):
    rep = topo.call(js_request, topo.cli_addr(1), f"$JS.API.STREAM.INFO.{stream}")
    return (rep.get("cluster") or {}).get("leader")


def lead_off(topo, name, server="n3", timeout=15.0):
    """Moves the leadership of the cluster's KV streams off `server` (leader
    step-down until another server leads). The cut is meant to isolate a
    node; a stream-leader election on top (4-9 s) would stall R1/R2's
    renewals and delay the takeovers. (The meta leader may stay on n3: the
    KV reads and writes do not use it, and moving it needs the system
    account.) Returns {stream: leader}."""
    out = {}
    for b in ("nodes", "sids", "claims"):
        stream = f"KV_pyry_{name}_{b}"
        deadline = time.monotonic() + timeout
        while True:
            leader = stream_leader(topo, stream)
            if leader and leader != server:
                out[stream] = leader
                break
            assert time.monotonic() < deadline, f"{stream} still led by {leader}"
            if leader == server:
                topo.call(js_request, topo.cli_addr(1),
                          f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}")
            time.sleep(0.2)
    return out


# ---- the test ------------------------------------------------------------------

def test_bus_partition_minority_fences_majority_takes_over(partition):
    """R3's nats-server is cut off the bus: see the module docstring."""
    topo, nc, relays = partition
    name = cluster_name()
    urls = {1: [1, 2], 2: [2, 1], 3: [3]}   # a relay dials the servers of its side
    for k in (1, 2, 3):
        nats = ",".join(nc.servers[i - 1].url for i in urls[k])
        relays.append(NsRelay(topo, k, ["--cluster-nats", nats, "--cluster-name", name,
                                        "--cluster-node-name", f"r{k}", "--cluster-lease",
                                        f"{LEASE_S:g}s", "--workers", "2"]))
    r1, r2, r3 = relays
    r3_id, r3_epoch = node_ids(r3)[0]
    report = {}

    async def go():
        b = await claim(r1, "s1")
        chk = Checker(b, interval=0.02)
        for r in relays:
            await chk.add(await phone(r, "s1"), f"s1@{r.label}", relay=r)
        old = {sid: await claim(r3, sid) for sid in ("p3a", "p3b")}
        idle = await phone(r1, "p3a")        # a remote phone of R3's binary
        assert await roundtrip(old["p3b"], r1, "p3b", "pre"), "R1 -> R3 forwarding"
        for sid in old:
            assert await asyncio.to_thread(owner, topo, name, sid) == r3_id
        report["leaders"] = await asyncio.to_thread(lead_off, topo, name)
        for r in relays:
            assert (await asyncio.to_thread(r.healthz))[0] == 200, r.label
        chk.start()
        await asyncio.sleep(1.0)

        t0 = time.monotonic()
        await asyncio.to_thread(topo.cut, 3)

        def since():
            return round(time.monotonic() - t0, 2)

        async def r3_unready():
            while True:
                try:
                    status, body = await asyncio.to_thread(r3.healthz)
                except OSError:
                    status, body = 0, b""
                if status == 503:
                    return since(), body
                assert time.monotonic() - t0 < NOT_READY_BY, f"R3 /healthz still {status}"
                await asyncio.sleep(0.1)

        async def close_of(ws):
            code = await closed(ws, timeout=FENCED_BY + 2)
            return since(), code

        async def take(relay, sid):
            # A real binary re-dials at once after losing its relay: here it
            # dials the majority right after the cut and waits for the claim.
            nb = await claim(relay, sid, timeout=TAKEN_BY)
            return since(), nb

        unready, c3a, c3b, cidle, (ta, na), (tb, nb) = await asyncio.gather(
            r3_unready(), close_of(old["p3a"]), close_of(old["p3b"]), close_of(idle),
            take(r1, "p3a"), take(r2, "p3b"))
        report.update(r3_503_s=unready[0], r3_closed_binaries_s=(c3a[0], c3b[0]),
                      idle_phone_closed=cidle, taken_s=(ta, tb))
        assert b'"status":"cluster_unavailable"' in unready[1], unready[1]
        assert c3a[1] == SHUTTING_DOWN and c3b[1] == SHUTTING_DOWN, (c3a, c3b)
        # never two owners: the old binary is gone before the new one is in
        assert c3a[0] <= ta and c3b[0] <= tb, report
        assert min(ta, tb) >= TAKEN_AFTER, f"taken before R3's lease could expire: {report}"
        assert cidle[1][0] in (1011, 4404, 1001), cidle
        for nbin, sid in ((na, "p3a"), (nb, "p3b")):
            assert await roundtrip(nbin, r1, sid, "after", timeout=3), f"phone via R1 -> {sid}"
        report["owners"] = {sid: await asyncio.to_thread(owner, topo, name, sid)
                            for sid in ("p3a", "p3b")}

        report["majority_fenced_before_heal"] = [r.label for r in (r1, r2)
                                                 if log_lines(r, "cluster_lease_lost")]
        t_heal = time.monotonic()
        await asyncio.to_thread(topo.heal, 3)
        while True:
            try:
                status = (await asyncio.to_thread(r3.healthz))[0]
            except OSError:
                status = 0
            if status == 200:
                break
            assert time.monotonic() - t_heal < READY_AFTER_HEAL_BY, \
                "R3 not ready again after the heal:\n" + "\n".join(r3.logs().splitlines()[-20:])
            await asyncio.sleep(0.2)
        report["r3_ready_after_heal_s"] = round(time.monotonic() - t_heal, 2)
        # A binary for a taken id dialing R3 again: the owner on R1 answers,
        # 4409. Right after the heal JetStream may still be electing: the
        # claim then fails 1011 "cluster unavailable" and, like a real
        # binary, this one dials again.
        t_late = time.monotonic()
        late_closes = []
        while True:
            before = len(log_lines(r3, "server_claimed", server_id="p3a"))
            late = await binary(r3, "p3a")
            got = None
            while got is None:
                try:
                    got = await closed(late, timeout=0.2)
                except asyncio.TimeoutError:
                    if len(log_lines(r3, "server_claimed", server_id="p3a")) > before:
                        got = "accepted"
                    elif time.monotonic() > t_late + LATE_BY:
                        got = f"still open after {LATE_BY:g} s"
            if got != UNAVAILABLE:
                await late.close()
            late_closes.append(got)
            if got != UNAVAILABLE or time.monotonic() > t_late + LATE_BY:
                break
            await asyncio.sleep(0.5)
        report["late_binary_on_r3"] = late_closes
        # each 1011 was logged with why the claim failed
        fails = log_lines(r3, "cluster_claim_failed", server_id="p3a")
        assert len(fails) >= late_closes.count(UNAVAILABLE), fails
        assert all(CLAIM_FAILED_REASON.search(line) for line in fails), fails
        report["new_binary_closes"] = (na.close_code, nb.close_code)
        await chk.stop(settle=8)
        await chk.close()
        report["flows"] = chk.summary()
        report["owners_after_heal"] = {sid: await asyncio.to_thread(owner, topo, name, sid)
                                       for sid in ("p3a", "p3b")}
        return chk

    chk = topo.call(run, go(), 120)
    ids = {r.label: node_ids(r) for r in relays}
    print(f"\npartition (L = {LEASE_S:g} s): {report}\nregistrations: {ids}")
    assert report["owners"] == {"p3a": ids["R1"][0][0], "p3b": ids["R2"][0][0]}, report
    for sid, r in (("p3a", r1), ("p3b", r2)):
        assert log_lines(r, "server_id_takeover", server_id=sid), r.label
    # R3 fenced once and came back under a new node id with a higher epoch
    assert len(log_lines(r3, "cluster_lease_lost")) == 1, r3.logs()[-3000:]
    assert ids["R3"][1][0] != r3_id and ids["R3"][1][1] > r3_epoch, ids
    assert chk.violations() == [], chk.summary()
    assert {f.label: f for f in chk.flows.values()}["s1@R3"].phone_close in \
        (SHUTTING_DOWN, LINK_LOST), chk.summary()
    assert closes_ok(chk, (SHUTTING_DOWN, LINK_LOST)) == [], chk.summary()
    # The majority never fences while the partition lasts.
    assert report["majority_fenced_before_heal"] == [], trail(relays, "p3a")
    late = report["late_binary_on_r3"]
    assert set(late[:-1]) <= {UNAVAILABLE}, f"{report}\n{trail(relays, 'p3a')}"
    healed_fence = [r.label for r in (r1, r2) if log_lines(r, "cluster_lease_lost")]
    if not healed_fence:
        # ... nor after the heal: ownership stays where the takeover put it
        assert len(ids["R3"]) == 2 and len(ids["R1"]) == 1 and len(ids["R2"]) == 1, ids
        assert report["owners_after_heal"] == report["owners"], report
        assert late[-1] == CONFLICT, f"{report}\n{trail(relays, 'p3a')}"
        assert report["new_binary_closes"] == (None, None), f"{report}\n{trail(relays, 'p3a')}"
        for sid in ("p3a", "p3b"):
            assert len(log_lines(r3, "server_claimed", server_id=sid)) == 1, trail(relays, sid)
        assert chk.binary_close is None, chk.summary()
        flows = {f.label: f for f in chk.flows.values()}
        assert not flows["s1@R1"].closed and not flows["s1@R2"].closed, chk.summary()
    else:
        # The heal's JetStream election outlived the majority's lease
        # tolerance (L - L/4 - L/10 = 13 s; seen: 12-15 s with nats-server
        # 2.9.10, see LEASE_S). A fenced node's records die with its lease,
        # so a claim on R3 may then win p3a: still one owner at a time.
        assert late[-1] in (CONFLICT, "accepted"), f"{report}\n{trail(relays, 'p3a')}"
        if late[-1] == "accepted":
            assert report["new_binary_closes"][0] == 1001, report
            assert report["owners_after_heal"]["p3a"] == ids["R3"][-1][0], report
        warnings.warn(f"{healed_fence} fenced on the heal (R3 ready "
                      f"{report['r3_ready_after_heal_s']} s after it): JetStream elections "
                      f"after the heal took longer than the lease tolerates")
    stop_checked(relays)
