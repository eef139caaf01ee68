"""Cluster mode under faults (issue #13; cluster.md §4.3 back-pressure, §4.4
loss detection, §7 failure table, §10 test plan items 5-9). Three relays
R1, R2, R3 (relay i dials its own nats-server first, --workers 2, a private
cluster name, a metrics listener each) on a real 3-server NATS cluster.

The checker (checker.py) sends numbered frames both ways between a binary
and its phones through every fault and asserts each frame is delivered
once, in order, or the phone was closed: never a hole without a close,
never a duplicate, never two owners. Every wait is bounded; every process
and cluster started here is stopped by the fixtures. Which nats-server a
relay's connections sit on is read from /connz, not assumed.

The network-namespace partition of cluster.md §10 item 8 is
test_cluster_partition.py."""
import asyncio
import json
import re
import signal
import subprocess
import threading
import time
import urllib.request

import pytest
import websockets

from conftest import closed, free_port, run
from conftest import ws_binary as binary, ws_phone as phone

from .checker import Checker
from .relays import cluster_name, healthz, log_lines, stop_nodes

LINK_LOST = (1011, "cluster link lost")
BACKLOG_FULL = (1011, "phone backlog full")
SHUTTING_DOWN = (1001, "shutting down")
SEND_FAILED = (1000, "")  # remote.c: P2B refused while the bus is disconnected

# What must never appear when no relay lost its lease or its binary.
OWNERSHIP_EVENTS = ("server_id_takeover", "cluster_lease_lost", "cluster_handover",
                    "cluster_takeover_dead_owner")


# ---- relays with metrics ----------------------------------------------------

def start_relays(relay_factory, nc, lease, *args):
    """R1..R3 on cluster nc, each with its own metrics port (relay.mport)."""
    name = cluster_name()
    out = []
    for i in range(3):
        mport = free_port()
        r = relay_factory("--cluster-nats", nc.urls_from(i), "--cluster-name", name,
                          "--cluster-node-name", f"r{i + 1}", "--cluster-lease", lease,
                          "--workers", "2", "--metrics-listen", f"127.0.0.1:{mport}", *args)
        r.mport = mport
        r.label = f"R{i + 1}"
        out.append(r)
    return out


def metrics(relay):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{relay.mport}/metrics", timeout=5) as r:
            return r.read().decode()
    except OSError as e:
        return f"# unreachable: {e!r}\n"


def series(text, name):
    """{label-string: value} of every sample of metric family name."""
    out = {}
    for m in re.finditer(r"^" + re.escape(name) + r"(\{[^}]*\})? (\S+)$", text, re.M):
        out[m.group(1) or ""] = float(m.group(2))
    return out


def link_resets(relays):
    """{relay label: {reason: count}} of pyrycode_relay_cluster_link_resets_total."""
    out = {}
    for r in relays:
        s = series(metrics(r), "pyrycode_relay_cluster_link_resets_total")
        out[r.label] = {re.search(r'reason="([^"]+)"', k).group(1): v for k, v in s.items()}
    return out


def total(resets):
    return sum(v for per in resets.values() for v in per.values())


def stop_checked(relays, timeout=15.0):
    """SIGTERM every relay at once; each must exit 0 within timeout. A relay
    that hangs is killed (SIGKILL) and one that died is recorded, so the
    fixture's teardown stays quiet; the failures are raised here with the
    end of each log."""
    bad = []

    def one(r):
        if r.proc.poll() is None:
            r.proc.send_signal(signal.SIGTERM)
        try:
            code = r.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait(timeout=10)
            code = f"hung > {timeout:g} s after SIGTERM (killed)"
        if code != 0:
            tail = "\n".join(r.logs().splitlines()[-12:])
            bad.append(f"{r.label} exit {code}:\n{tail}")
        r.exit_code = 0

    threads = [threading.Thread(target=one, args=(r,)) for r in relays]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 15)
    assert not bad, "\n".join(bad)


def binary_ends(relay):
    """How the relay saw its binaries' connections end (for messages)."""
    return [ln for ln in relay.logs().splitlines() if "msg=binary_forwarder_read_end" in ln
            or "msg=binary_forwarder_write" in ln]


def ownership_events(relays):
    return [f"{r.label}: {line}" for r in relays for ev in OWNERSHIP_EVENTS
            for line in log_lines(r, ev)]


def placement(nc, relays):
    """Which nats-server each relay's connections are on, from /connz: {server
    index: {"data": {labels}, "ctl": {labels}}}. cnats shuffles the server
    list (the relay does not set natsOptions_SetNoRandomize), so "own server
    first" does not decide where a connection lands: the tests look."""
    out = {}
    for s in nc.servers:
        conns = ((nc.monitor(s.index, "/connz?limit=4096")[1] or {}).get("connections")) or []
        data, ctl = set(), set()
        for c in conns:
            name = c.get("name") or ""
            m = re.match(r"pyry-(r\d)-[0-9a-f]{8}-\d+\Z", name)
            if m:
                data.add(m.group(1).upper())
            m = re.match(r"pyry-(r\d)\S*-ctl\Z", name)
            if m:
                ctl.add(m.group(1).upper())
        out[s.index] = {"data": data, "ctl": ctl}
    return out


# ---- clients ---------------------------------------------------------------

def claims(relay, sid):
    return len(log_lines(relay, "server_claimed", server_id=sid)
               + log_lines(relay, "server_id_takeover", server_id=sid))


async def claim(relay, sid, timeout=5.0):
    """A binary for sid on relay, once its claim is accepted (a phone must
    only dial after that, cluster.md §3.3)."""
    before = claims(relay, sid)
    b = await binary(relay, sid)
    deadline = time.monotonic() + timeout
    while claims(relay, sid) == before:
        assert b.close_code is None, f"binary {sid} closed {b.close_code} {b.close_reason!r}"
        assert time.monotonic() < deadline, \
            f"claim of {sid} on {relay.label} not accepted within {timeout:g} s:\n" \
            + relay.logs()[-4000:]
        await asyncio.sleep(0.02)
    return b


async def roundtrip(b, relay, sid, tag, timeout=2.0):
    """A fresh phone of sid on relay reaches binary b and back: True/False.
    b must be read by nobody else. Stale frames of older tries are skipped."""
    p = None
    try:
        p = await asyncio.wait_for(phone(relay, sid), timeout)
        await p.send(json.dumps({"probe": tag}))
        deadline = time.monotonic() + timeout
        while True:
            raw = await asyncio.wait_for(b.recv(), max(0.01, deadline - time.monotonic()))
            m = re.match(r'\{"conn_id":"([^"]+)","frame":(.*)\}\Z', raw, re.S)
            if m and json.loads(m.group(2)) == {"probe": tag}:
                break
        await b.send('{"conn_id":"%s","frame":{"back":"%s"}}' % (m.group(1), tag))
        back = await asyncio.wait_for(p.recv(), max(0.01, deadline - time.monotonic()))
        return json.loads(back) == {"back": tag}
    except (asyncio.TimeoutError, OSError, websockets.exceptions.WebSocketException):
        return False
    finally:
        if p is not None:
            try:
                await asyncio.wait_for(p.close(), 1.0)
            except (asyncio.TimeoutError, OSError, websockets.exceptions.WebSocketException):
                pass


async def wait_healthz(relays, want, timeout):
    """Waits until every relay's /healthz answers want; {label: (s after
    start, body)}."""
    t0 = time.monotonic()
    seen = {}
    while len(seen) < len(relays):
        for r in relays:
            if r.label in seen:
                continue
            try:
                status, body = await asyncio.to_thread(healthz, r, 2.0)
            except OSError:
                continue
            if status == want:
                seen[r.label] = (time.monotonic() - t0, body)
        if len(seen) < len(relays):
            assert time.monotonic() - t0 < timeout, \
                f"/healthz {want} within {timeout} s only on {sorted(seen)}"
            await asyncio.sleep(0.1)
    return seen


def closes_ok(chk, allowed_close):
    """Problems with the phones' closes: a code not in allowed_close, a
    closed phone whose binary got no notice or several. A 1000 "" is
    accepted where its relay logged phone_forwarder_send_failed "cluster bus
    unavailable": remote.c closes a phone so when its shard's bus is
    disconnected at the moment it sends (the publish is refused), where
    cluster.md §7 has 1011 "cluster link lost" for phones on a link with a
    gap. Drop that branch to hold the relay to the table."""
    out = []
    for f in chk.flows.values():
        if f.closed:
            if f.phone_close == SEND_FAILED and SEND_FAILED not in allowed_close:
                lines = log_lines(f.relay, "phone_forwarder_send_failed", conn_id=f.cid)
                if not any("cluster bus unavailable" in ln for ln in lines):
                    out.append(f"{f.label}: closed {f.phone_close} without a refused send")
            elif f.phone_close not in allowed_close and f.phone_close != SEND_FAILED:
                out.append(f"{f.label}: closed {f.phone_close}, allowed {allowed_close}")
            if chk.binary_close is None and len(f.notices) != 1:
                out.append(f"{f.label}: closed but the binary got notices {f.notices}")
        elif f.notices:
            out.append(f"{f.label}: open but the binary got notices {f.notices}")
    return out


# ---- 1. SIGKILL and restart of one nats-server of three ----------------------

@pytest.mark.parametrize("which", ["other-server", "binary-relays-server"])
def test_nats_server_sigkill_and_restart(nats_cluster, relay_factory, which):
    """kill -9 of one nats-server of three, restart after 5 s. Default lease
    (20 s): an election fits the 13 s tolerance. The victim is chosen from
    /connz: "other-server" is one holding none of R1's data connections
    (R1 has the binary), "binary-relays-server" one holding at least one.
    A binary of s1 on R1 has two phones on each of R1, R2, R3 exchanging
    numbered frames (100/s each way) through the fault. Asserts: the checker
    holds for every phone; routing resumes through every relay (fresh
    phones reach a probe binary and back); no ownership change (no binary
    closed, no takeover, handover or lease loss logged, lease_losses_total
    0, one claim); only phones riding a relay with a data connection on the
    victim may be closed (none on R1 itself, whose phones are local), each
    with 1011 "cluster link lost" (or 1000 "" after a send refused while
    disconnected, logged phone_forwarder_send_failed) and exactly one close
    notice to the binary; link_resets_total moved if a phone got 1011."""
    nc = nats_cluster
    relays = start_relays(relay_factory, nc, "20s")
    r1, r2, r3 = relays
    where = placement(nc, relays)
    if which == "other-server":
        # none of R1's data connections; fewest other relays' ctl on it
        cands = [i for i in where if "R1" not in where[i]["data"]]
        victim = min(cands, key=lambda i: ("R1" in where[i]["ctl"], i))
    else:
        victim = max(where, key=lambda i: (len([x for x in where[i]["data"] if x == "R1"]), -i))
        assert "R1" in where[victim]["data"], where
    hit = set(where[victim]["data"])   # relays whose data connections fail over
    report = {}

    async def go():
        b = await claim(r1, "s1")
        pb = await claim(r1, "probe")
        chk = Checker(b, interval=0.01)
        for r in relays:
            for j in range(2):
                await chk.add(await phone(r, "s1"), f"{r.label}.{j}", relay=r)
        for r in relays:
            assert await roundtrip(pb, r, "probe", f"pre-{r.label}"), r.label
        chk.start()
        await asyncio.sleep(1.5)
        t_kill = time.monotonic()
        await asyncio.to_thread(nc.kill, victim)
        # while the server is down: when does every relay route again?
        first_ok = {}
        n = 0
        while time.monotonic() < t_kill + 5 and len(first_ok) < 3:
            for r in relays:
                if r.label not in first_ok:
                    n += 1
                    if await roundtrip(pb, r, "probe", f"down{n}"):
                        first_ok[r.label] = round(time.monotonic() - t_kill, 2)
            await asyncio.sleep(0.1)
        report["routing_ok_while_down_s"] = dict(first_ok)
        await asyncio.sleep(max(0.0, t_kill + 5 - time.monotonic()))
        t_restart = time.monotonic()
        await asyncio.to_thread(nc.restart, victim)   # waits until formed again
        report["nats_formed_after_restart_s"] = round(time.monotonic() - t_restart, 2)
        after = {}
        while len(after) < 3:
            assert time.monotonic() < t_restart + 25, \
                f"routing through {sorted({r.label for r in relays} - set(after))} " \
                f"did not resume within 25 s of the restart"
            for r in relays:
                if r.label not in after:
                    n += 1
                    if await roundtrip(pb, r, "probe", f"up{n}"):
                        after[r.label] = round(time.monotonic() - t_restart, 2)
            await asyncio.sleep(0.1)
        report["routing_ok_after_restart_s"] = after
        await asyncio.sleep(2.0)   # traffic keeps flowing a while after the heal
        await chk.stop(settle=10)
        await chk.close()
        report["flows"] = chk.summary()
        assert pb.close_code is None, (pb.close_code, pb.close_reason)
        return chk

    chk = run(go(), timeout=70)
    print(f"\nvictim n{victim + 1} ({which}), placement {where}: {report}")
    assert chk.violations() == [], chk.summary()
    assert chk.binary_close is None, f"{chk.summary()}; R1 saw {binary_ends(r1)}"
    assert closes_ok(chk, (LINK_LOST,)) == [], chk.summary()
    for f in chk.flows.values():
        if f.closed:
            assert f.relay is not r1 and (f.relay.label in hit or "R1" in hit), \
                f"{f.label} was closed although no connection of its link to R1 was on " \
                f"n{victim + 1} (placement {where}): {f.summary()}"
    assert ownership_events(relays) == []
    for r in relays:
        text = metrics(r)
        assert series(text, "pyrycode_relay_cluster_lease_losses_total") == {"": 0.0}, r.label
        assert r.logs().count("msg=cluster_node_registered") == 1, r.label
    assert claims(r1, "s1") == 1 and claims(r2, "s1") == 0 and claims(r3, "s1") == 0
    resets = link_resets(relays)
    print(f"link resets: {resets}")
    if any(f.phone_close == LINK_LOST for f in chk.flows.values()):
        assert total(resets) > 0, resets
    for r in relays:
        assert healthz(r)[0] == 200, r.label
    stop_nodes(relays)


# ---- 2. JetStream quorum loss: 2 of 3 servers killed ------------------------

def test_quorum_loss_fences_every_node_then_service_returns(nats_cluster_factory,
                                                            relay_factory):
    """A private NATS cluster; n2 and n3 are killed (JetStream loses quorum;
    R2 and R3 fail over to n1). Lease 6 s. Every node fences within
    L·¾ + slack: R1's binary s1 and its idle phones on R1, R2, R3 and R2's
    binary s2 with its idle phone on R3 are closed 1001 "shutting down";
    checked phones (numbered frames to s1 from R2 and R3) are closed 1001
    or 1011 "cluster link lost" and the checker holds; every /healthz
    answers 503 "cluster_unavailable"; cluster_lease_lost is logged on
    every node. After both servers restart every node is ready again, s1
    can be claimed again on R1 and a phone on R2 (and on R3) reaches it
    both ways."""
    nc = nats_cluster_factory()
    relays = start_relays(relay_factory, nc, "6s")
    r1, r2, r3 = relays
    report = {}

    async def go():
        b1 = await claim(r1, "s1")
        b2 = await claim(r2, "s2")
        idle = [(await phone(r, "s1"), f"s1@{r.label}") for r in relays]
        idle.append((await phone(r3, "s2"), "s2@R3"))
        chk = Checker(b1, interval=0.02)
        for r in (r2, r3):
            await chk.add(await phone(r, "s1"), f"chk@{r.label}", relay=r)
        chk2 = Checker(b2, interval=0.02)   # proves the idle s2 phone is attached
        await chk2.add(idle[3][0], "s2@R3", relay=r3)
        for r in relays:
            assert (await asyncio.to_thread(healthz, r))[0] == 200
        chk.start()
        await asyncio.sleep(1.0)
        t_kill = time.monotonic()
        await asyncio.to_thread(nc.kill, 1)
        await asyncio.to_thread(nc.kill, 2)
        unhealthy = await wait_healthz(relays, 503, 8)
        report["healthz_503_after_s"] = {k: round(v[0], 2) for k, v in unhealthy.items()}
        for label, (_, body) in unhealthy.items():
            assert b'"status":"cluster_unavailable"' in body, (label, body)
        got = {}
        for ws, label in idle:
            got[label] = await closed(ws, timeout=max(0.5, t_kill + 9 - time.monotonic()))
        for c, label in ((chk, "binary s1@R1"), (chk2, "binary s2@R2")):
            while c.binary_close is None and time.monotonic() < t_kill + 9:
                await asyncio.sleep(0.05)
            got[label] = c.binary_close
        report["closed_within_s"] = round(time.monotonic() - t_kill, 2)
        await chk.stop(settle=3)
        await chk.close()
        await chk2.close()
        # s1's idle phones on R2 and R3 may ride the very links the checked
        # phones' traffic loses messages on while R2/R3 fail over to n1: a
        # reset there closes every association of the link (cluster.md
        # §4.4), so 1011 "cluster link lost" is right for them too. The
        # others share no link with traffic: 1001 only.
        bad = {k: v for k, v in got.items()
               if v != SHUTTING_DOWN and not (k in ("s1@R2", "s1@R3") and v == LINK_LOST)}
        assert not bad, f"expected 1001 'shutting down', got {got}"
        assert time.monotonic() - t_kill < 9
        assert chk.violations() == [], chk.summary()
        assert closes_ok(chk, (SHUTTING_DOWN, LINK_LOST)) == [], chk.summary()
        assert all(f.closed for f in chk.flows.values()), chk.summary()
        for r in relays:   # fenced: no new upgrades
            status = (await asyncio.to_thread(healthz, r))[0]
            assert status == 503, (r.label, status)

        t_restart = time.monotonic()
        await asyncio.to_thread(nc.restart, 1, False)
        await asyncio.to_thread(nc.restart, 2, False)
        await asyncio.to_thread(nc.wait_ready, None, 30)
        report["nats_formed_after_restart_s"] = round(time.monotonic() - t_restart, 2)
        ready = await wait_healthz(relays, 200, 40)
        report["ready_after_restart_s"] = {k: round(v[0] + report["nats_formed_after_restart_s"], 2)
                                           for k, v in ready.items()}
        t_claim = time.monotonic()
        refused = []
        while True:   # a binary re-dials after a 1011, as a real one does
            try:
                nb = await claim(r1, "s1", timeout=6 + 8)
                break
            except AssertionError as e:
                refused.append(str(e).splitlines()[0])
                assert time.monotonic() < t_claim + 20, f"s1 not claimable again: {refused}"
                await asyncio.sleep(0.5)
        report["s1_reclaimed_after_s"] = round(time.monotonic() - t_claim, 2)
        report["claims_refused_after_ready"] = refused
        t_phones = time.monotonic()
        tries = {}
        for r in (r2, r3):   # a phone re-dials too; each try is bounded
            tries[r.label] = 1
            while not await roundtrip(nb, r, "s1", f"after-{r.label}-{tries[r.label]}",
                                      timeout=3):
                assert time.monotonic() < t_phones + 15, \
                    f"no phone on {r.label} reached the reclaimed s1 on R1 within 15 s " \
                    f"({tries[r.label]} tries):\n" + "\n".join(r.logs().splitlines()[-15:])
                tries[r.label] += 1
                await asyncio.sleep(0.3)
        report["phone_tries_after_reclaim"] = tries
        report["service_back_after_restart_s"] = round(time.monotonic() - t_restart, 2)

    run(go(), timeout=90)
    print(f"\nquorum loss: {report}")
    for r in relays:
        assert log_lines(r, "cluster_lease_lost"), r.label
        assert r.logs().count("msg=cluster_node_registered") >= 2, r.label
    stop_checked(relays)   # each must still shut down cleanly


# ---- 3. slow consumer: max_pending 1MB ------------------------------------

FLOOD_PAD = 64 * 1024


def bus_state(relays, nc, conn_prefix):
    """For a failure message: each relay's bus disconnects and peers heard,
    its cluster_ log lines, and the servers' lines about connections named
    conn_prefix… (did the cut connection come back?)."""
    out = []
    for r in relays:
        text = metrics(r)
        out.append(f"{r.label}: disconnects "
                   f"{series(text, 'pyrycode_relay_cluster_bus_disconnects_total')} peers "
                   f"{series(text, 'pyrycode_relay_cluster_peers')}")
        out += [ln for ln in r.logs().splitlines() if "msg=cluster_" in ln][-12:]
    out += [ln for s in nc.servers for ln in s.tail(100000).splitlines()
            if conn_prefix in ln][-20:]
    return "\n".join(out)


def slow_consumer_lines(nc):
    return [ln for s in nc.servers for ln in s.tail(100000).splitlines()
            if "Slow Consumer" in ln]


@pytest.fixture
def small_pending(nats_cluster_factory):
    return nats_cluster_factory(extra_conf="max_pending: 1MB")


def test_slow_binary_under_flood_no_silent_loss(small_pending, relay_factory):
    """Servers with max_pending 1MB. A phone on R2 floods its binary on R1
    with 64 KiB frames while the binary stops reading for 4 s; meanwhile an unrelated pair (binary q1 on
    R1, phone on R2, small frames) runs the checker too. Weak invariant (the
    server may or may not cut a consumer; XOFF/XON may hold the flood): for
    both pairs every frame arrived once and in order or the phone was closed
    (1011 "cluster link lost" or "phone backlog full") with one close
    notice; a 1011 "cluster link lost" implies link_resets_total moved; the
    binaries are never closed; afterwards the unrelated pair still works
    (a fresh phone of q1 on R2 round-trips)."""
    nc = small_pending
    relays = start_relays(relay_factory, nc, "20s")
    r1, r2, _ = relays
    report = {}

    async def go():
        b = await claim(r1, "flood")
        q = await claim(r1, "q1")
        chk = Checker(b, interval=0.0, pad=FLOOD_PAD)
        chk.down = False   # the phone floods; a binary flooding back trips the
        #                    phone's own 4 MiB backlog first (1011 "phone backlog full")
        fp = await chk.add(await phone(r2, "flood"), "flood@R2", relay=r2)
        other = Checker(q, interval=0.01)
        await other.add(await phone(r2, "q1"), "q1@R2", relay=r2)
        chk.start()
        other.start()
        await asyncio.sleep(1.0)
        chk.hold.set()                  # the binary stops reading
        await asyncio.sleep(4.0)
        held_at = (fp.sent_up, len(fp.got_up))
        chk.hold.clear()
        await asyncio.sleep(3.0)
        await chk.stop(settle=15)
        await other.stop(settle=5)
        await chk.close()
        await other.close()
        report["flood"] = chk.summary()
        report["other"] = other.summary()
        report["held_at(sent,got)"] = held_at
        alive = await roundtrip(q, r2, "q1", "after") if other.binary_close is None else False
        return chk, other, alive

    chk, other, alive = run(go(), timeout=60)
    resets = link_resets(relays)
    sc = slow_consumer_lines(nc)
    for r in relays:
        print(f"--- {r.label}\n" + "\n".join(
            ln for ln in r.logs().splitlines()
            if "server_id=flood" in ln or "cluster_" in ln and "renew" not in ln)[-3000:])
    print(f"\nslow binary: {report}\nlink resets: {resets}\nserver slow consumers: {sc[:5]}")
    assert chk.violations() == [], chk.summary()
    assert other.violations() == [], other.summary()
    assert chk.binary_close is None and other.binary_close is None, \
        f"a binary was closed: flood {chk.binary_close}, q1 {other.binary_close}; R1 saw " \
        f"{binary_ends(r1)} (1007 from the client: it got a text frame that is not UTF-8)"
    assert closes_ok(chk, (LINK_LOST, BACKLOG_FULL)) == [], chk.summary()
    assert closes_ok(other, (LINK_LOST,)) == [], other.summary()
    if any(f.phone_close == LINK_LOST for c in (chk, other) for f in c.flows.values()):
        assert total(resets) > 0, resets
    assert alive, "a fresh phone of q1 on R2 no longer reaches its binary on R1"
    assert ownership_events(relays) == []
    stop_nodes(relays)


def test_slow_consumer_cut_by_the_server(small_pending, relay_factory):
    """Servers with max_pending 1MB. A phone on R2 floods its binary on R1
    with 64 KiB frames at about 8 MB/s (slow enough that the binary keeps up
    and R1 never sends XOFF, which would pause the phone and spare the bus);
    R1 is frozen (SIGSTOP) for 3 s - inside the 20 s lease and the 5 s peer
    silence - so the server's pending bytes for R1 pass 1 MB once the
    socket buffers are full and it cuts R1's connection as a slow consumer
    ("Slow Consumer Detected" in its log). The messages dropped with it make a
    sequence gap: the flood phone is closed 1011 "cluster link lost", its
    binary gets one 1011 notice, link_resets_total moves, and the checker
    holds (the binary got 0..k-1 exactly). The binary is never closed and
    no ownership changes; a pair of another server-id (binary on R3, phone
    on R2) is never closed and loses nothing; the flood's binary serves a
    fresh phone on R2 afterwards."""
    nc = small_pending
    relays = start_relays(relay_factory, nc, "20s")
    r1, r2, r3 = relays
    report = {"placement": placement(nc, relays)}

    async def go():
        b = await claim(r1, "flood")
        q = await claim(r3, "q3")
        chk = Checker(b, interval=0.008, pad=FLOOD_PAD)
        chk.down = False   # only the phone floods
        fp = await chk.add(await phone(r2, "flood"), "flood@R2", relay=r2)
        other = Checker(q, interval=0.01)
        await other.add(await phone(r2, "q3"), "q3@R2", relay=r2)
        chk.start()
        other.start()
        await asyncio.sleep(1.0)
        before = (fp.sent_up, len(fp.got_up))
        r1.proc.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(3.0)
        finally:
            r1.proc.send_signal(signal.SIGCONT)
        t_cont = time.monotonic()
        while not fp.closed and time.monotonic() < t_cont + 8:
            await asyncio.sleep(0.05)
        report["flood_closed_after_resume_s"] = round(time.monotonic() - t_cont, 2) \
            if fp.closed else None
        await asyncio.sleep(1.0)
        await chk.stop(settle=10)
        await other.stop(settle=5)
        await chk.close()
        await other.close()
        report["before_freeze(sent,got)"] = before
        report["flood"] = chk.summary()
        report["other"] = other.summary()
        alive = await roundtrip(b, r2, "flood", "after", timeout=5)
        return chk, other, fp, alive

    chk, other, fp, alive = run(go(), timeout=60)
    resets = link_resets(relays)
    sc = slow_consumer_lines(nc)
    print(f"\nslow consumer: {report}\nlink resets: {resets}\nserver: {sc[:5]}")
    assert chk.violations() == [], chk.summary()
    assert other.violations() == [], other.summary()
    assert chk.binary_close is None and other.binary_close is None, \
        f"a binary was closed: flood {chk.binary_close}, q3 {other.binary_close}; R1 saw " \
        f"{binary_ends(r1)}, R3 saw {binary_ends(r3)}"
    assert sc, "no nats-server logged a slow consumer: the fault was not injected"
    assert fp.phone_close == LINK_LOST, chk.summary()
    assert closes_ok(chk, (LINK_LOST,)) == [], chk.summary()
    assert fp.notices == [1011], chk.summary()
    assert total(resets) > 0, resets
    assert not any(f.closed for f in other.flows.values()), \
        f"{other.summary()}: its link R2<->R3 never went through R1; resets " + "; ".join(
            ln for r in (r2, r3) for ln in r.logs().splitlines() if "cluster_link_reset" in ln)
    assert alive, "the flood's binary does not serve a fresh phone on R2 afterwards; " + \
        bus_state(relays, nc, "pyry-r1-")
    assert ownership_events(relays) == []
    stop_nodes(relays)
