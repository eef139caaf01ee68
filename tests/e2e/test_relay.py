"""Relay semantics end to end (spec §2.1, §2.2, §3, §4, §5) with Python
websockets as both the binary and the phones."""
import asyncio
import json
import socket
import time

import pytest
import websockets

from conftest import Raw, client_headers, closed, http_request, run, server_headers
from conftest import ws_binary as binary, ws_phone as phone


def healthz(relay):
    return json.loads(http_request(relay.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")[2])


def test_claim_route_both_ways(relay):
    async def go():
        b = await binary(relay)
        p = await phone(relay)
        await p.send('{"op": "hello",  "n": [1, 2]}')
        env = json.loads(await b.recv())
        assert env["frame"] == {"op": "hello", "n": [1, 2]}
        assert env["conn_id"].startswith("client-s1-") and len(env["conn_id"]) == len("client-s1-") + 16
        raw = await asyncio.wait_for(b.recv(), 0.2) if False else None
        await b.send('{"conn_id":"%s","frame": {"x" : 1} }' % env["conn_id"])
        assert await p.recv() == '{"x" : 1}'  # byte for byte, whitespace kept
        assert healthz(relay)["connected_binaries"] == 1
        assert healthz(relay)["connected_phones"] == 1
        await p.close()
        await b.close()
    run(go())
    logs = relay.logs()
    assert "msg=server_claimed server_id=s1 binary_version=0.1.0 remote=127.0.0.1" in logs
    assert "msg=phone_registered server_id=s1 conn_id=client-s1-" in logs
    assert "device_name=Pixel" in logs


def test_phone_frame_forwarded_verbatim(relay):
    async def go():
        b = await binary(relay)
        p = await phone(relay)
        inner = '{ "a" : "<&>",\n "b":[ 1 ,2 ] }'
        await p.send(inner)
        raw = await b.recv()
        assert raw.endswith(',"frame":' + inner + '}')
        assert raw.startswith('{"conn_id":"client-s1-')
    run(go())


def test_live_incumbent_4409(relay_factory):
    relay = relay_factory("--conflict-probe-timeout", "2s")

    async def go():
        b1 = await binary(relay)
        p = await phone(relay)
        b2 = await binary(relay)
        assert await closed(b2) == (4409, "server-id already claimed")
        # incumbent and its phone untouched
        await p.send("1")
        assert json.loads(await b1.recv())["frame"] == 1
    run(go())
    assert "msg=server_id_conflict server_id=s1 remote=127.0.0.1" in relay.logs()


def test_silent_incumbent_taken_over(relay_factory):
    relay = relay_factory("--conflict-probe-timeout", "300ms")
    old = Raw(relay.port, "/v1/server", server_headers("s1"))  # never answers pings
    relay.wait_log("msg=server_claimed")

    async def go():
        p = await phone(relay)
        start = time.time()
        b2 = await binary(relay)
        # the new binary is accepted after the probe and the old phone is evicted
        assert await closed(p) == (4404, "binary reclaimed server-id")
        assert time.time() - start < 3
        p2 = await phone(relay)
        await p2.send('"hi"')
        assert json.loads(await b2.recv())["frame"] == "hi"
        assert healthz(relay)["connected_binaries"] == 1
    run(go())
    assert old.recv_close() == (1011, "heartbeat timeout")
    logs = relay.logs()
    assert "msg=server_id_takeover server_id=s1" in logs


def test_no_server_4404(relay):
    async def go():
        p = await phone(relay, "nobody")
        assert await closed(p) == (4404, "no server with that id")
    run(go())
    assert "msg=phone_register_no_server server_id=nobody remote=127.0.0.1" in relay.logs()


def test_phone_cap_4429_and_recovery(relay_factory):
    relay = relay_factory("--max-phones-per-server", "2")

    async def go():
        b = await binary(relay)
        p1, p2 = await phone(relay), await phone(relay)
        p3 = await phone(relay)
        assert await closed(p3) == (4429, "too many phones for server-id")
        await p1.close()
        assert json.loads(await b.recv())["close_code"] == 1000  # p1's close notice
        p4 = await phone(relay)
        await p4.send("4")
        assert json.loads(await b.recv())["frame"] == 4
        assert healthz(relay)["connected_phones"] == 2
    run(go())
    assert "msg=phone_register_at_cap server_id=s1" in relay.logs()


def test_grace_expiry_closes_phones_1000(relay_factory):
    relay = relay_factory("--grace-period", "500ms")

    async def go():
        b = await binary(relay)
        p = await phone(relay)
        await b.close()
        await asyncio.sleep(0.1)
        h = healthz(relay)
        assert h["connected_binaries"] == 0 and h["connected_phones"] == 1
        start = time.time()
        assert await closed(p) == (1000, "")
        assert 0.3 < time.time() - start < 3
        p2 = await phone(relay)
        assert (await closed(p2))[0] == 4404
    run(go())
    assert "msg=server_released server_id=s1" in relay.logs()


def test_reclaim_within_grace(relay_factory):
    relay = relay_factory("--grace-period", "5s")

    async def go():
        b = await binary(relay)
        p = await phone(relay)
        await b.close()
        b2 = await binary(relay)
        assert await closed(p) == (4404, "binary reclaimed server-id")
        p2 = await phone(relay)
        await p2.send('{"first":true}')
        # the reclaiming binary's first frame is the new phone's, no stray notice
        assert json.loads(await b2.recv())["frame"] == {"first": True}
    run(go())


def test_two_server_ids_isolated(relay):
    async def go():
        ba, bb = await binary(relay, "a"), await binary(relay, "b")
        pa, pb = await phone(relay, "a"), await phone(relay, "b")
        await pa.send('"to-a"')
        env = json.loads(await ba.recv())
        # binary b cannot address a's phone
        await bb.send(json.dumps({"conn_id": env["conn_id"], "frame": "intrusion"}))
        await pb.send('"to-b"')
        assert json.loads(await bb.recv())["frame"] == "to-b"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pa.recv(), 0.3)
    run(go())
    assert "msg=binary_forwarder_unknown_conn_id server_id=b conn_id=client-a-" in relay.logs()


def test_many_phones_routing_and_ordering(relay_factory):
    relay = relay_factory("--max-phones-per-server", "0")

    async def go():
        b = await binary(relay)
        phones = [await phone(relay) for _ in range(20)]
        ids = []
        for i, p in enumerate(phones):
            await p.send(json.dumps({"i": i}))
            env = json.loads(await b.recv())
            assert env["frame"] == {"i": i}
            ids.append(env["conn_id"])
        assert len(set(ids)) == 20
        # 1000 frames each way, in order
        target = phones[3]
        for n in range(1000):
            await b.send(json.dumps({"conn_id": ids[3], "frame": n}))
        for n in range(1000):
            assert json.loads(await target.recv()) == n
        for n in range(1000):
            await target.send(str(n))
        for n in range(1000):
            assert json.loads(await b.recv())["frame"] == n
    run(go())


def test_close_directives(relay):
    async def go():
        b = await binary(relay)
        p1, p2 = await phone(relay), await phone(relay)
        ids = []
        for p in (p1, p2):
            await p.send("0")
            ids.append(json.loads(await b.recv())["conn_id"])
        await b.send(json.dumps({"conn_id": ids[0], "close_code": 4401}))
        assert await closed(p1) == (4401, "")
        await b.send(json.dumps({"conn_id": ids[1], "frame": {"bye": 1}, "close_code": 4403}))
        assert json.loads(await p2.recv()) == {"bye": 1}
        assert await closed(p2) == (4403, "")
        # frames after the directive are dropped; no close notice was sent
        await b.send(json.dumps({"conn_id": ids[1], "frame": 1}))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(b.recv(), 0.5)
    run(go())
    assert "msg=binary_forwarder_phone_closed server_id=s1" in relay.logs()


def test_directive_with_unsendable_code_uses_1011(relay):
    async def go():
        b = await binary(relay)
        p = await phone(relay)
        await p.send("0")
        cid = json.loads(await b.recv())["conn_id"]
        await b.send(json.dumps({"conn_id": cid, "close_code": 1005}))
        assert (await closed(p))[0] == 1011
    run(go())


def test_close_notices(relay):
    async def go():
        b = await binary(relay)
        p = await phone(relay)
        await p.send("0")
        cid = json.loads(await b.recv())["conn_id"]
        await p.close()
        assert await b.recv() == '{"conn_id":"%s","close_code":1000}' % cid
        # abrupt TCP drop -> 1001
        raw = Raw(relay.port, "/v1/client", client_headers("s1"))
        relay.wait_log("msg=phone_registered", 2)
        raw.send_frame(1, b"1")
        cid2 = json.loads(await b.recv())["conn_id"]
        raw.sock.close()
        assert await b.recv() == '{"conn_id":"%s","close_code":1001}' % cid2
        # phone closes with its own code
        p3 = await phone(relay)
        await p3.send("3")
        cid3 = json.loads(await b.recv())["conn_id"]
        await p3.close(4000)
        assert await b.recv() == '{"conn_id":"%s","close_code":4000}' % cid3
    run(go())


def test_invalid_json_from_phone(relay):
    async def go():
        b = await binary(relay)
        p = await phone(relay)
        await p.send("0")
        cid = json.loads(await b.recv())["conn_id"]
        await p.send("{not json")
        assert await closed(p) == (1000, "")
        assert await b.recv() == '{"conn_id":"%s","close_code":1000}' % cid
    run(go())
    assert "msg=phone_forwarder_marshal_err" in relay.logs()
    assert 'err="relay: frame is not valid JSON"' in relay.logs()


def test_malformed_envelopes_keep_binary_up(relay):
    async def go():
        b = await binary(relay)
        p = await phone(relay)
        await p.send("0")
        cid = json.loads(await b.recv())["conn_id"]
        for bad in ("not json", "[1,2]", '{"frame":1}', '{"conn_id":"%s"}' % cid,
                    '{"conn_id":"client-s1-0000000000000000","frame":1}',
                    '{"push_wake":{"platform":"fcm","token":"tok"}}',
                    '{"conn_id":"%s","frame":1,"close_code":"x"}' % cid):
            await b.send(bad)
        await b.send(json.dumps({"conn_id": cid, "frame": "still"}))
        assert json.loads(await p.recv()) == "still"
    run(go())
    logs = relay.logs()
    assert 'err="relay: routing envelope missing conn_id"' in logs
    assert 'err="relay: routing envelope missing frame"' in logs
    assert "relay: malformed routing envelope" in logs
    assert "msg=binary_forwarder_push_wake_dropped" in logs
    assert "tok" not in logs.split("push_wake_dropped")[1].split("\n")[0]


def test_stalled_phone_does_not_block_sibling(relay_factory):
    relay = relay_factory("--phone-backlog-bytes", "1048576")

    async def go():
        b = await binary(relay)
        stalled = Raw(relay.port, "/v1/client", client_headers("s1"))  # never reads
        fast = await phone(relay)
        stalled.send_frame(1, b"0")
        sid = json.loads(await b.recv())["conn_id"]
        await fast.send("1")
        fid = json.loads(await b.recv())["conn_id"]
        blob = "x" * 60000
        for i in range(200):   # ~12 MB at the stalled phone: it must overflow, not block
            await b.send(json.dumps({"conn_id": sid, "frame": blob}))
            await b.send(json.dumps({"conn_id": fid, "frame": i}))
            assert json.loads(await asyncio.wait_for(fast.recv(), 5)) == i
        assert await b.recv() == '{"conn_id":"%s","close_code":1011}' % sid
    run(go())
    assert 'err="relay: phone delivery backlog full"' in relay.logs()


def test_256k_boundary(relay):
    async def go():
        b = await binary(relay)
        p = await phone(relay)
        at_cap = '"' + "y" * (262144 - 2) + '"'
        await p.send(at_cap)
        env = await b.recv()
        assert env.endswith(at_cap + "}")
        await p.send('"' + "y" * (262144 - 1) + '"')
        assert (await closed(p))[0] == 1009
    run(go())


def test_phone_send_during_grace_closed_1000(relay_factory):
    relay = relay_factory("--grace-period", "5s")

    async def go():
        b = await binary(relay)
        p = await phone(relay)
        await b.close()
        await asyncio.sleep(0.1)
        await p.send("1")
        assert await closed(p) == (1000, "")
    run(go())
    assert "msg=phone_forwarder_send_failed" in relay.logs()


def test_peer_vanishing_mid_write_does_not_kill_relay(relay):
    """Writes to a reset socket must fail with EPIPE, not raise SIGPIPE."""
    import socket
    import struct as st
    b = Raw(relay.port, "/v1/server", server_headers("s1"))
    relay.wait_log("msg=server_claimed")
    for _ in range(5):
        p = Raw(relay.port, "/v1/client", client_headers("s1"))
        p.send_frame(1, b"0")
        cid = json.loads(b.recv_frame()[2])["conn_id"]
        p.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, st.pack("ii", 1, 0))
        p.sock.close()  # RST
        blob = json.dumps({"conn_id": cid, "frame": "x" * 4000}).encode()
        for _ in range(100):
            b.send_frame(1, blob)
    time.sleep(0.3)
    assert relay.proc.poll() is None, relay.logs()
    assert healthz(relay)["status"] == "ok"


def _stalled_phone(relay, sid):
    """A raw phone that registers, then never reads again."""
    ph = Raw(relay.port, "/v1/client", client_headers(sid))
    assert ph.status == 101
    ph.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ph.send_frame(1, b'"hello"')
    return ph


def test_phone_write_failure_closes_1011_with_log_line(relay_factory):
    """Spec §5.3: a phone whose writes stop making progress is closed 1011
    ("phone write failed"): binary_forwarder_phone_send_failed is logged and
    the binary's close notice carries 1011."""
    relay = relay_factory("--write-timeout", "1s", "--phone-backlog-bytes", str(64 << 20))

    async def go():
        b = await binary(relay, "wf")
        ph = _stalled_phone(relay, "wf")
        cid = json.loads(await b.recv())["conn_id"]
        blob = "y" * 60000
        for _ in range(140):                   # ~8 MB: far more than the kernel buffers
            await b.send(json.dumps({"conn_id": cid, "frame": blob}))
        notice = json.loads(await asyncio.wait_for(b.recv(), 10))
        assert notice == {"conn_id": cid, "close_code": 1011}
        ph.close()
        await b.close()
    run(go())
    relay.wait_log("msg=binary_forwarder_phone_send_failed server_id=wf conn_id=client-wf-")
    assert 'err="relay: write timed out"' in relay.logs()


def test_directive_frame_unwritable_logs_close_frame_send_failed(relay_factory):
    """A close directive whose frame cannot be written: the phone is closed
    with the directive's code and binary_forwarder_close_frame_send_failed
    is logged (no close notice: the binary asked for the close)."""
    relay = relay_factory("--write-timeout", "1s", "--close-timeout", "1s",
                          "--phone-backlog-bytes", str(64 << 20))

    async def go():
        b = await binary(relay, "wd")
        ph = _stalled_phone(relay, "wd")
        cid = json.loads(await b.recv())["conn_id"]
        blob = "z" * 60000
        for _ in range(140):
            await b.send(json.dumps({"conn_id": cid, "frame": blob}))
        await b.send(json.dumps({"conn_id": cid, "frame": "bye", "close_code": 4000}))
        relay.wait_log("msg=binary_forwarder_close_frame_send_failed", timeout=10)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(b.recv(), 0.5)   # no notice for a directive
        ph.close()
        await b.close()
    run(go())
    assert ("msg=binary_forwarder_close_frame_send_failed server_id=wd conn_id=client-wd-"
            in relay.logs())
    assert "close_code=4000" in relay.logs()


def test_bandwidth_limit_per_server_id(relay_factory):
    """--max-bytes-per-second-per-server: a server-id over its budget is not
    read until it refills (both directions, nothing dropped, order kept), the
    time shows in pyrycode_relay_throttled_seconds_total, and another
    server-id is not slowed."""
    mport = __import__("conftest").free_port()
    relay = relay_factory("--max-bytes-per-second-per-server", "100000",
                          "--metrics-listen", f"127.0.0.1:{mport}")
    blob = "b" * 16000

    async def go():
        b = await binary(relay, "bulk")
        p = await phone(relay, "bulk")
        await p.send('"hi"')
        cid = json.loads(await b.recv())["conn_id"]
        qb = await binary(relay, "quiet")
        qp = await phone(relay, "quiet")
        # binary -> phone: 20 x 16 KB = 320 KB at 100 KB/s (burst 100 KB): >= ~2 s
        t0 = time.time()
        for i in range(20):
            await b.send(json.dumps({"conn_id": cid, "frame": [i, blob]}))
        quiet_rtts = []
        for i in range(20):
            assert json.loads(await asyncio.wait_for(p.recv(), 10))[0] == i
            if i % 4 == 0:                      # the other server-id meanwhile
                q0 = time.time()
                await qp.send(str(i))
                env = json.loads(await asyncio.wait_for(qb.recv(), 5))
                assert env["frame"] == i
                quiet_rtts.append(time.time() - q0)
        down = time.time() - t0
        # phone -> binary: the same budget, the same way
        t0 = time.time()
        for i in range(20):
            await p.send(json.dumps([i, blob]))
        for i in range(20):
            assert json.loads(await asyncio.wait_for(b.recv(), 10))["frame"][0] == i
        up = time.time() - t0
        for ws in (p, b, qp, qb):
            await ws.close()
        return down, up, quiet_rtts

    down, up, quiet = run(go())
    assert 1.5 < down < 8 and 1.5 < up < 8, (down, up)
    assert max(quiet) < 0.5, quiet
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    line = [l for l in text.splitlines() if l.startswith("pyrycode_relay_throttled_seconds_total ")]
    assert line and float(line[0].split()[1]) > 1.0, line
