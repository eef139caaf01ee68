"""Cluster mode, claims through JetStream KV (docs/features/cluster-ownership.md,
"The claim path"): a server-id has one owner across relays. Real binaries,
a real 3-server NATS cluster, websockets clients; every wait bounded."""
import asyncio
import re
import signal
import time
import uuid

import pytest
import websockets

from conftest import Raw, client_headers, run, server_headers

LEASE_S = 6


def cluster_args(nats, i, name, *extra):
    return ("--cluster-nats", nats.urls_from(i), "--cluster-name", name, "--cluster-lease",
            f"{LEASE_S}s", "--workers", "2", *extra)


def nodes(relay_factory, nats, n=2, *extra):
    name = "c" + uuid.uuid4().hex[:10]
    return [relay_factory(*cluster_args(nats, i, name, *extra)) for i in range(n)]


def claimed(relay, sid, timeout=5.0):
    relay.wait_log(f"msg=server_claimed server_id={sid} ", timeout=timeout)


def test_graceful_stop_hands_server_ids_back_at_once(nats_cluster, relay_factory):
    r1, r2 = nodes(relay_factory, nats_cluster)
    b1 = Raw(r1.port, "/v1/server", server_headers("g1"))
    claimed(r1, "g1")
    assert r1.stop() == 0
    assert b1.recv_close() == (1001, "shutting down")
    t0 = time.monotonic()
    b2 = Raw(r2.port, "/v1/server", server_headers("g1"))
    claimed(r2, "g1")
    assert time.monotonic() - t0 < 2.0  # no lease wait: the record was freed
    assert "server_id_takeover" not in r2.logs()
    b2.close()


def test_killed_owner_is_taken_over_after_its_lease(nats_cluster, relay_factory):
    r1, r2 = nodes(relay_factory, nats_cluster)
    Raw(r1.port, "/v1/server", server_headers("k1"))
    claimed(r1, "k1")
    r1.proc.send_signal(signal.SIGKILL)
    r1.proc.wait(timeout=5)
    r1.exit_code = 0  # killed on purpose: the teardown must not count it
    t0 = time.monotonic()
    b2 = Raw(r2.port, "/v1/server", server_headers("k1"))
    r2.wait_log("msg=server_id_takeover server_id=k1 ", timeout=LEASE_S + 5)
    claimed(r2, "k1")
    assert time.monotonic() - t0 < LEASE_S + 3
    b2.close()


@pytest.mark.parametrize("ctl_threads", ["1", "3"])
def test_racing_claims_on_two_nodes_give_one_owner(nats_cluster, relay_factory, ctl_threads):
    """Binaries for the same fresh ids dial two relays at the same moment:
    for every id exactly one is accepted; the loser gets 4409. With
    --cluster-ctl-threads 3 a node's KV operations run side by side."""
    r1, r2 = nodes(relay_factory, nats_cluster, 2, "--conflict-probe-timeout", "1s",
                   "--cluster-ctl-threads", ctl_threads)
    sids = [f"race{i}" for i in range(8)]

    async def claim(relay, sid):
        ws = await websockets.connect(relay.url("/v1/server"), extra_headers=server_headers(sid),
                                      close_timeout=0.5)
        try:
            # an accepted binary stays open; a loser is closed 4409
            await asyncio.wait_for(ws.recv(), LEASE_S + 8)
        except asyncio.TimeoutError:
            return ws, None
        except websockets.exceptions.ConnectionClosed as e:
            return None, (e.code, e.reason)
        return ws, None

    async def main():
        results = await asyncio.gather(*[claim(r, s) for s in sids for r in (r1, r2)])
        for i, sid in enumerate(sids):
            pair = results[2 * i: 2 * i + 2]
            winners = [ws for ws, _ in pair if ws is not None]
            losers = [c for _, c in pair if c is not None]
            assert len(winners) == 1, (sid, pair)
            assert losers == [(4409, "server-id already claimed")], (sid, pair)
            await winners[0].close()

    run(main(), timeout=60)
    owners = re.findall(r"msg=server_claimed server_id=(race\d) ", r1.logs() + r2.logs())
    assert sorted(owners) == sorted(sids)


def test_reconnecting_binary_on_the_same_node_is_single_node_logic(nats_cluster, relay_factory):
    """A binary that reconnects to the relay holding its slot (grace) is a
    local reclaim: no cluster round trip, accepted at once."""
    r1, _ = nodes(relay_factory, nats_cluster)
    b = Raw(r1.port, "/v1/server", server_headers("l1"))
    claimed(r1, "l1")
    b.close()
    r1.wait_log("msg=server_released server_id=l1")
    t0 = time.monotonic()
    b2 = Raw(r1.port, "/v1/server", server_headers("l1"))
    deadline = time.time() + 5
    while r1.logs().count("msg=server_claimed server_id=l1 ") < 2 and time.time() < deadline:
        time.sleep(0.02)
    assert r1.logs().count("msg=server_claimed server_id=l1 ") == 2
    assert time.monotonic() - t0 < 1.0
    b2.close()


# ---- the owner decides: CLAIM over the bus (cluster.md §3.3 step 4) -------

def test_live_incumbent_on_another_node_gets_4409_at_once(nats_cluster, relay_factory):
    """The owner probes its binary like a local second claim; a pong means
    the newcomer on the other node is refused 4409 right away."""
    r1, r2 = nodes(relay_factory, nats_cluster)

    async def main():
        a = await websockets.connect(r1.url("/v1/server"), extra_headers=server_headers("v1"),
                                     close_timeout=0.5)  # answers pings by itself
        claimed(r1, "v1")
        t0 = time.monotonic()
        b = await websockets.connect(r2.url("/v1/server"), extra_headers=server_headers("v1"),
                                     close_timeout=0.5)
        try:
            await asyncio.wait_for(b.recv(), 5)
            raise AssertionError("the newcomer was not refused")
        except websockets.exceptions.ConnectionClosed as e:
            assert (e.code, e.reason) == (4409, "server-id already claimed")
        assert time.monotonic() - t0 < 3.0
        await a.ping()  # the incumbent is untouched
        await a.close()

    run(main(), timeout=30)
    r1.wait_log("msg=cluster_claim_forwarded server_id=v1 ")
    r2.wait_log("msg=server_id_conflict server_id=v1 ")


def test_silent_incumbent_on_another_node_is_taken_over(nats_cluster, relay_factory):
    r1, r2 = nodes(relay_factory, nats_cluster, 2, "--conflict-probe-timeout", "1s")
    old = Raw(r1.port, "/v1/server", server_headers("t1"))  # never answers a ping
    claimed(r1, "t1")
    phone = Raw(r1.port, "/v1/client", client_headers("t1"))
    r1.wait_log("msg=phone_registered server_id=t1 ")
    t0 = time.monotonic()
    new = Raw(r2.port, "/v1/server", server_headers("t1"))
    r2.wait_log("msg=server_id_takeover server_id=t1 ", timeout=5)
    claimed(r2, "t1")
    assert time.monotonic() - t0 < 4.0
    assert old.recv_close() == (1011, "heartbeat timeout")
    assert phone.recv_close() == (4404, "binary reclaimed server-id")
    r1.wait_log("msg=cluster_handover server_id=t1 ")
    assert "reason=takeover" in r1.logs()
    new.close()


def test_grace_slot_is_reclaimed_from_another_node(nats_cluster, relay_factory):
    r1, r2 = nodes(relay_factory, nats_cluster)
    old = Raw(r1.port, "/v1/server", server_headers("r1"))
    claimed(r1, "r1")
    phone = Raw(r1.port, "/v1/client", client_headers("r1"))
    r1.wait_log("msg=phone_registered server_id=r1 ")
    old.close()
    r1.wait_log("msg=server_released server_id=r1")
    new = Raw(r2.port, "/v1/server", server_headers("r1"))
    claimed(r2, "r1")
    assert phone.recv_close() == (4404, "binary reclaimed server-id")
    assert "server_id_takeover" not in r2.logs()
    r1.wait_log("msg=cluster_handover server_id=r1 ")
    assert "reason=reclaim" in r1.logs()
    new.close()


def test_expired_grace_frees_the_record(nats_cluster, relay_factory):
    r1, r2 = nodes(relay_factory, nats_cluster, 2, "--grace-period", "500ms")
    old = Raw(r1.port, "/v1/server", server_headers("e1"))
    claimed(r1, "e1")
    old.close()
    r1.wait_log("msg=server_released server_id=e1")
    time.sleep(1.5)  # the 0.5 s grace expires, then the owner's CAS to "0" runs
    t0 = time.monotonic()
    new = Raw(r2.port, "/v1/server", server_headers("e1"))
    claimed(r2, "e1")
    assert time.monotonic() - t0 < 2.0  # no owner to ask: the free record is taken
    assert "cluster_claim_forwarded" not in r1.logs()
    new.close()
