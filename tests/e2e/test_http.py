"""Plain HTTP on the public listener: /healthz, 404, keep-alive, head limits
and the slow-header deadline."""
import json
import re
import socket
import time

from conftest import VERSION, http_request


def test_healthz_shape(relay):
    status, headers, body = http_request(relay.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    assert len(body) < 200
    assert not body.endswith(b"\n")
    doc = json.loads(body)
    assert list(doc) == ["status", "version", "connected_binaries", "connected_phones",
                         "uptime_seconds"]
    assert doc["status"] == "ok" and doc["version"] == VERSION
    assert doc["connected_binaries"] == 0 and doc["connected_phones"] == 0
    assert body.startswith(b'{"status":"ok","version":"%s","connected_binaries":0,'
                           % VERSION.encode())


def test_healthz_exact_body(relay):
    status, headers, body = http_request(relay.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    assert re.fullmatch(rb'\{"status":"ok","version":"' + re.escape(VERSION.encode()) +
                        rb'","connected_binaries":0,'
                        rb'"connected_phones":0,"uptime_seconds":(0|[1-9][0-9]*)\}', body), body
    assert int(headers["content-length"]) == len(body)


def test_healthz_twice_on_one_connection(relay):
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
        for _ in range(2):
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"}"):
                chunk = s.recv(65536)
                assert chunk, data
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
            assert data.count(b"HTTP/1.1 ") == 1, data


def test_healthz_any_method_and_query(relay):
    status, _, body = http_request(
        relay.port, "POST /healthz?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_unknown_path_404(relay):
    status, headers, body = http_request(relay.port, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 404
    assert body == b"404 page not found\n"
    assert headers["content-type"] == "text/plain; charset=utf-8"


def test_keep_alive_and_pipelining(relay):
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        deadline = time.time() + 5
        while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b"404 page not found\n"):
            assert time.time() < deadline, data
            data += s.recv(65536)
        assert data.startswith(b"HTTP/1.1 200 OK")
        assert b"HTTP/1.1 404 Not Found" in data
        # the connection is still usable afterwards
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        more = s.recv(65536)
        assert more.startswith(b"HTTP/1.1 200 OK")


def test_http10_closes_after_reply(relay):
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK")


def test_header_too_large_431(relay_factory):
    relay = relay_factory("--max-header-bytes", "2048")
    big = "x" * 4096
    status, _, _ = http_request(relay.port, f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n")
    assert status == 431
    status, _, _ = http_request(relay.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200


def test_malformed_request_400(relay):
    status, _, _ = http_request(relay.port, "BLAH\r\n\r\n")
    assert status == 400


def _cut_after(port, partial):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(partial)
        start = time.time()
        data = s.recv(65536)  # the relay closes without a reply
        return data, time.time() - start


def test_slow_header_cut_short_knob(relay_factory):
    relay = relay_factory("--header-timeout", "300ms")
    data, took = _cut_after(relay.port, b"GET /v1/server HTTP/1.1\r\nHost: x\r\n")
    assert data == b""
    assert 0.2 <= took < 2.0


def test_slow_header_cut_default_5s(relay):
    data, took = _cut_after(relay.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    assert data == b""
    assert 4.5 <= took < 7.0


def test_slow_header_does_not_block_others(relay_factory):
    relay = relay_factory("--header-timeout", "2s")
    with socket.create_connection(("127.0.0.1", relay.port)) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        status, _, _ = http_request(relay.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200
