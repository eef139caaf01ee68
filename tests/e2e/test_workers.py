"""Several shards (--workers, design.md §2): every server-id's binary and
phones end up on one loop whichever shard accepted them, the totals in
/healthz and /metrics add up across shards, the cap and the rate limiter
are process-wide, and a drain reaches every shard."""
import asyncio
import json
import os
import signal
import time
import urllib.request

import pytest
import websockets

from conftest import client_headers, closed, free_port, http_request, run, server_headers
from conftest import ws_binary as binary, ws_phone as phone


def healthz(relay):
    return json.loads(http_request(relay.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")[2])


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def metric(text, line_prefix):
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_prefix} not in scrape")


SIDS = [f"srv-{i}" for i in range(24)]  # enough that every shard owns several


@pytest.mark.parametrize("workers", ["1", "3", "4"])
def test_every_server_id_routes_on_its_shard(relay_factory, workers):
    mport = free_port()
    relay = relay_factory("--workers", workers, f"--metrics-listen=127.0.0.1:{mport}")
    # one loop thread per shard (libuv may add its own threads, never fewer)
    deadline = time.time() + 5
    while len(os.listdir(f"/proc/{relay.proc.pid}/task")) < int(workers) and time.time() < deadline:
        time.sleep(0.02)
    assert len(os.listdir(f"/proc/{relay.proc.pid}/task")) >= int(workers)

    async def go():
        bins = [await binary(relay, sid) for sid in SIDS]
        phones = [[await phone(relay, sid) for _ in range(2)] for sid in SIDS]
        for i, sid in enumerate(SIDS):
            for j, p in enumerate(phones[i]):
                await p.send(json.dumps({"sid": sid, "j": j}))
        for i, sid in enumerate(SIDS):
            ids = {}
            for _ in range(2):
                env = json.loads(await asyncio.wait_for(bins[i].recv(), 5))
                assert env["frame"]["sid"] == sid  # never a neighbour's phone
                assert env["conn_id"].startswith(f"client-{sid}-")
                ids[env["frame"]["j"]] = env["conn_id"]
            for j in range(2):
                await bins[i].send(json.dumps({"conn_id": ids[j], "frame": {"back": sid, "j": j}}))
            for j, p in enumerate(phones[i]):
                assert json.loads(await asyncio.wait_for(p.recv(), 5)) == {"back": sid, "j": j}
        h = healthz(relay)
        assert h["connected_binaries"] == len(SIDS)
        assert h["connected_phones"] == 2 * len(SIDS)
        text = scrape(mport)
        assert metric(text, "pyrycode_relay_connected_binaries") == len(SIDS)
        assert metric(text, "pyrycode_relay_connected_phones") == 2 * len(SIDS)
        assert metric(text, 'pyrycode_relay_ws_upgrade_attempts_total'
                            '{endpoint="client",outcome="accept"}') == 2 * len(SIDS)
        assert metric(text, 'pyrycode_relay_ws_upgrade_attempts_total'
                            '{endpoint="server",outcome="accept"}') == len(SIDS)
        for group in phones:
            for p in group:
                await p.close()
        for b in bins:
            await b.close()
        # frames are counted once fully written, possibly just after the echo
        deadline = time.time() + 5
        while time.time() < deadline:
            text = scrape(mport)
            if metric(text, 'pyrycode_relay_frames_forwarded_total'
                            '{direction="phone_to_binary"}') == 2 * len(SIDS):
                break
            time.sleep(0.05)
        assert metric(text, 'pyrycode_relay_frames_forwarded_total'
                            '{direction="phone_to_binary"}') == 2 * len(SIDS)
        assert metric(text, 'pyrycode_relay_frames_forwarded_total'
                            '{direction="binary_to_phone"}') == 2 * len(SIDS)
    run(go())


def test_conflict_and_takeover_across_accepting_shard(relay_factory):
    """A second binary for a held id is probed on the id's shard, whichever
    shard read its request."""
    relay = relay_factory("--workers", "4", "--conflict-probe-timeout", "300ms")

    async def go():
        for sid in SIDS[:8]:
            b1 = await binary(relay, sid)
            b2 = await binary(relay, sid)  # b1 answers the probe: b2 loses
            assert await closed(b2) == (4409, "server-id already claimed")
            p = await phone(relay, sid)
            await p.send('{"still": "b1"}')
            assert json.loads(await b1.recv())["frame"] == {"still": "b1"}
            await p.close()
            await b1.close()
    run(go())


def test_connection_cap_is_process_wide(relay_factory):
    relay = relay_factory("--workers", "4", "--max-connections", "5")

    async def go():
        conns = [await binary(relay, sid) for sid in SIDS[:5]]
        for sid in SIDS[5:10]:
            with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
                await binary(relay, sid)
            assert e.value.status_code == 503
        await conns[0].close()
        await asyncio.sleep(0.2)
        conns[0] = await binary(relay, SIDS[12])  # the slot came back, on any shard
        for c in conns:
            await c.close()
    run(go())
    assert relay.logs().count("msg=conn_cap_reached") == 5


def test_rate_limit_is_process_wide(relay_factory):
    relay = relay_factory("--workers", "4", "--rate-limit-burst", "3", "--rate-limit-refill", "1h")

    async def go():
        ok = [await binary(relay, sid) for sid in SIDS[:3]]  # three different shards likely
        for sid in SIDS[3:9]:
            with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
                await binary(relay, sid)
            assert e.value.status_code == 429
        for c in ok:
            await c.close()
    run(go())


def test_drain_reaches_every_shard(relay_factory):
    relay = relay_factory("--workers", "4")

    async def go():
        bins = [await binary(relay, sid) for sid in SIDS[:12]]
        phones = [await phone(relay, sid) for sid in SIDS[:12]]
        relay.proc.send_signal(signal.SIGTERM)
        for ws in bins + phones:
            assert await closed(ws) == (1001, "shutting down")
    run(go())
    assert relay.proc.wait(10) == 0
    logs = relay.logs()
    assert "msg=\"shutdown complete\"" in logs
    assert "drain incomplete" not in logs


def test_drain_deadline_aborts_every_shard(relay_factory):
    """Clients that never answer the close frame are cut at --drain-timeout
    on every shard, and the process still exits 0."""
    relay = relay_factory("--workers", "3", "--drain-timeout", "300ms", "--close-timeout", "10s")

    async def go():
        # websockets answers close frames itself; stop reading so it cannot.
        bins = [await binary(relay, sid) for sid in SIDS[:9]]
        for b in bins:
            b.transport.pause_reading()
        t0 = time.time()
        relay.proc.send_signal(signal.SIGTERM)
        while relay.proc.poll() is None and time.time() - t0 < 10:
            await asyncio.sleep(0.05)
        assert relay.proc.poll() == 0
        assert time.time() - t0 < 5
    run(go())
    assert "msg=\"drain incomplete\" err=\"context deadline exceeded\"" in relay.logs()


def test_workers_zero_means_one_per_cpu_and_validation(relay_factory):
    relay = relay_factory("--workers", "0")

    async def go():
        b = await binary(relay, "z")
        p = await phone(relay, "z")
        await p.send("[1]")
        assert json.loads(await b.recv())["frame"] == [1]
        await p.close()
        await b.close()
    run(go())


def test_frames_sent_with_the_upgrade_request_survive_the_handoff(relay_factory):
    """A phone that writes its first frames in the same packet as its
    upgrade request: those bytes travel with the connection to its shard."""
    import socket

    from conftest import frame, upgrade_request

    relay = relay_factory("--workers", "4")

    async def go():
        for sid in SIDS[:12]:
            b = await binary(relay, sid)
            s = socket.create_connection(("127.0.0.1", relay.port))
            s.sendall(upgrade_request("/v1/client", client_headers(sid)) + frame(0x1, b'{"early":1}') + frame(0x1, b'{"early":2}'))
            for n in (1, 2):
                env = json.loads(await asyncio.wait_for(b.recv(), 5))
                assert env["frame"] == {"early": n}
            s.close()
            await b.close()
    run(go())
