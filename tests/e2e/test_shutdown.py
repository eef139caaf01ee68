"""Graceful shutdown (spec §11): SIGTERM closes every WebSocket with 1001
"shutting down", logs the drain lines and exits 0 within the drain timeout."""
import asyncio
import signal
import socket
import time

import pytest
import websockets

from conftest import Raw, SERVER_HEADERS, client_headers, server_headers


def test_sigterm_closes_websockets_with_1001(relay_factory):
    relay = relay_factory()
    b = Raw(relay.port, "/v1/server", server_headers("s1"))
    relay.wait_log("msg=server_claimed")
    p = Raw(relay.port, "/v1/client", client_headers("s1"))
    relay.wait_log("msg=phone_registered")
    relay.proc.send_signal(signal.SIGTERM)
    for peer in (b, p):
        assert peer.recv_close() == (1001, "shutting down")
        peer.send_frame(0x8, b"\x03\xe9")
    assert relay.stop(timeout=10) == 0
    logs = relay.logs()
    assert 'msg="shutdown signal received; draining"' in logs
    assert 'msg="shutdown complete"' in logs
    assert logs.index("draining") < logs.index("shutdown complete")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_with_no_connections(relay_factory, sig):
    relay = relay_factory()
    start = time.time()
    relay.proc.send_signal(sig)
    assert relay.stop() == 0
    assert time.time() - start < 2
    try:
        socket.create_connection(("127.0.0.1", relay.port), timeout=0.5).close()
        raise AssertionError("port still open after exit")
    except OSError:
        pass


def test_unanswered_close_still_exits(relay_factory):
    relay = relay_factory("--close-timeout", "300ms", "--drain-timeout", "2s")
    b = Raw(relay.port)
    relay.proc.send_signal(signal.SIGTERM)
    assert b.recv_close() == (1001, "shutting down")   # and never answer
    start = time.time()
    assert relay.stop() == 0
    assert time.time() - start < 2
    assert 'msg="shutdown complete"' in relay.logs()


def test_drain_deadline_exceeded(relay_factory):
    relay = relay_factory("--close-timeout", "10s", "--drain-timeout", "400ms")
    b = Raw(relay.port)
    relay.proc.send_signal(signal.SIGTERM)
    assert b.recv_close() == (1001, "shutting down")
    start = time.time()
    assert relay.stop() == 0
    assert time.time() - start < 2
    logs = relay.logs()
    assert 'msg="shutdown deadline exceeded; force-closed listeners"' in logs
    assert 'msg="drain incomplete"' in logs


def test_second_signal_ignored(relay_factory):
    relay = relay_factory("--close-timeout", "1s")
    b = Raw(relay.port)
    relay.proc.send_signal(signal.SIGTERM)
    assert b.recv_close() == (1001, "shutting down")
    relay.proc.send_signal(signal.SIGTERM)
    assert relay.stop() == 0
    assert relay.logs().count("shutdown signal received") == 1


def test_websockets_client_sees_1001(relay_factory):
    relay = relay_factory()

    async def go():
        async with websockets.connect(relay.url("/v1/server"), extra_headers=SERVER_HEADERS,
                                      ping_interval=None) as ws:
            relay.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(ws.recv(), 5)
                raise AssertionError("expected a close, got a message")
            except websockets.exceptions.ConnectionClosed as e:
                return e.code, e.reason
    assert asyncio.run(go()) == (1001, "shutting down")
    start = time.time()
    assert relay.stop() == 0
    assert time.time() - start < 2
    logs = relay.logs()
    assert logs.index("shutdown signal received; draining") < logs.index("shutdown complete")
