"""Heartbeat: a silent peer is closed 1011 "heartbeat timeout"; a peer that
answers pings stays open."""
import asyncio
import time

import websockets

from conftest import SERVER_HEADERS, Raw


def test_silent_peer_closed_1011(relay_factory):
    relay = relay_factory("--heartbeat-interval", "200ms", "--heartbeat-timeout", "300ms")
    b = Raw(relay.port)
    start = time.time()
    fin, op, payload = b.recv_frame()
    assert op == 0x9  # the relay's ping; we stay silent
    assert b.recv_close() == (1011, "heartbeat timeout")
    assert 0.4 <= time.time() - start < 2.5


def test_answering_peer_stays_open(relay_factory):
    relay = relay_factory("--heartbeat-interval", "100ms", "--heartbeat-timeout", "200ms")

    async def go():
        async with websockets.connect(relay.url("/v1/server"), extra_headers=SERVER_HEADERS,
                                      ping_interval=None) as ws:
            await asyncio.sleep(1.2)   # many intervals; websockets answers pings itself
            assert ws.open
            pong = await ws.ping(b"still-here")
            await asyncio.wait_for(pong, 2)
    asyncio.run(go())
    assert "heartbeat timeout" not in relay.logs()


def test_pong_with_wrong_payload_does_not_count(relay_factory):
    relay = relay_factory("--heartbeat-interval", "200ms", "--heartbeat-timeout", "300ms")
    b = Raw(relay.port)
    fin, op, payload = b.recv_frame()
    assert op == 0x9
    b.send_frame(0xA, b"not-the-payload")
    assert b.recv_close() == (1011, "heartbeat timeout")
