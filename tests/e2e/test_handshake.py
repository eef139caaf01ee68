"""The WebSocket handshake: pyrycode header gate first (400, no log line),
then the RFC 6455 checks in the reference order and status codes."""
import asyncio
import base64
import hashlib

import pytest
import websockets

from conftest import CLIENT_HEADERS, SERVER_HEADERS, Raw, http_request

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade_request(path, headers, method="GET", version="HTTP/1.1", ws=True):
    base = {"Host": "x"}
    if ws:
        base.update({"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": KEY,
                     "Sec-WebSocket-Version": "13"})
    base.update(headers)
    lines = "".join(f"{k}: {v}\r\n" for k, v in base.items() if v is not None)
    return f"{method} {path} {version}\r\n{lines}\r\n"


@pytest.mark.parametrize("path,headers", [("/v1/server", SERVER_HEADERS),
                                          ("/v1/client", CLIENT_HEADERS)])
def test_gate_each_required_header(relay, path, headers):
    required = [h for h in headers if h != "X-Pyrycode-Device-Name"]
    for name in required:
        for value in (None, "", "   \t"):
            h = dict(headers)
            h[name] = value
            status, _, _ = http_request(relay.port, upgrade_request(path, h))
            assert status == 400, (name, value)
    logs = relay.logs()
    assert "server_claimed" not in logs and "phone_register" not in logs
    # nothing was logged after the boot lines
    assert "msg=ready" in logs.strip().splitlines()[-1], logs


def test_gate_runs_before_upgrade_checks(relay):
    status, _, _ = http_request(relay.port, "GET /v1/server HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 400


def test_rfc_checks_in_order(relay):
    h = SERVER_HEADERS
    cases = [
        (upgrade_request("/v1/server", h, version="HTTP/1.0"), 426),
        (upgrade_request("/v1/server", dict(h, Connection="keep-alive")), 426),
        (upgrade_request("/v1/server", dict(h, Upgrade="h2c")), 426),
        (upgrade_request("/v1/server", h, ws=False, method="POST"), 426),
        (upgrade_request("/v1/server", h, method="POST"), 405),
        (upgrade_request("/v1/server", dict(h, **{"Sec-WebSocket-Version": "8"})), 400),
        (upgrade_request("/v1/server", dict(h, **{"Sec-WebSocket-Key": None})), 400),
        (upgrade_request("/v1/server", dict(h, **{"Sec-WebSocket-Key": "c2hvcnQ="})), 400),
        (upgrade_request("/v1/server", dict(h, **{"Sec-WebSocket-Key": "!!!!!!!!!!!!!!!!!!!!!!=="})), 400),
    ]
    for req, want in cases:
        status, headers, _ = http_request(relay.port, req)
        assert status == want, req
        if want == 400 and "Sec-WebSocket-Version: 8" in req:
            assert headers["sec-websocket-version"] == "13"
        if want == 426 and "keep-alive" in req:
            assert headers["upgrade"] == "websocket"
    assert "server_claimed" not in relay.logs()


def test_connection_token_list_and_accept_key(relay):
    req = upgrade_request("/v1/server", dict(SERVER_HEADERS, Connection="keep-alive, Upgrade",
                                             Upgrade="WebSocket"))
    status, headers, _ = http_request(relay.port, req)
    assert status == 101
    expect = base64.b64encode(hashlib.sha1(
        (KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    assert headers["sec-websocket-accept"] == expect == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert headers["upgrade"].lower() == "websocket"


def test_extensions_and_subprotocols_declined_any_origin(relay):
    r = Raw(relay.port, "/v1/server", dict(SERVER_HEADERS, **{
        "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
        "Sec-WebSocket-Protocol": "chat, superchat", "Origin": "https://evil.example"}))
    assert r.status == 101
    assert "sec-websocket-extensions" not in r.headers
    assert "sec-websocket-protocol" not in r.headers
    r.close()


def test_websockets_library_connects_both_endpoints(relay):
    async def go():
        async with websockets.connect(relay.url("/v1/server"), extra_headers=SERVER_HEADERS,
                                      compression="deflate") as b:
            async with websockets.connect(relay.url("/v1/client"),
                                          extra_headers=CLIENT_HEADERS) as p:
                assert b.extensions == [] and p.open
    asyncio.run(go())
    relay.wait_log("msg=phone_registered")


def test_tokens_and_user_agents_never_logged(relay):
    async def go():
        async with websockets.connect(relay.url("/v1/server"), extra_headers=SERVER_HEADERS):
            async with websockets.connect(relay.url("/v1/client"), extra_headers=CLIENT_HEADERS):
                pass
    asyncio.run(go())
    relay.wait_log("msg=phone_unregistered")
    logs = relay.logs()
    assert "SECRET-TOKEN-123" not in logs and "UA-SECRET" not in logs and "pyry/0.1" not in logs


def test_device_name_is_optional(relay):
    h = {k: v for k, v in CLIENT_HEADERS.items() if k != "X-Pyrycode-Device-Name"}
    status, _, _ = http_request(relay.port, upgrade_request("/v1/client", h))
    assert status == 101


@pytest.mark.parametrize("path,headers", [("/v1/server", SERVER_HEADERS),
                                          ("/v1/client", CLIENT_HEADERS)])
def test_rfc_order_with_several_faults(relay, path, headers):
    """Each request breaks several rules; the status names the first one."""
    no_ua = dict(headers, **{"User-Agent": None})
    v8 = {"Sec-WebSocket-Version": "8"}
    no_key = {"Sec-WebSocket-Key": None}
    cases = [
        # pyrycode gate before everything
        (upgrade_request(path, no_ua, version="HTTP/1.0", method="POST"), 400),
        (upgrade_request(path, no_ua, ws=False, method="PUT"), 400),
        # HTTP/1.0 before Connection / Upgrade / method / version / key
        (upgrade_request(path, dict(headers, Connection="close", **v8, **no_key),
                         version="HTTP/1.0", method="POST"), 426),
        # Connection before Upgrade and method
        (upgrade_request(path, dict(headers, Connection="close", Upgrade="h2c"), method="POST"), 426),
        # Upgrade before method
        (upgrade_request(path, dict(headers, Upgrade="h2c", **v8), method="POST"), 426),
        # method before version and key
        (upgrade_request(path, dict(headers, **v8, **no_key), method="POST"), 405),
        # version before key
        (upgrade_request(path, dict(headers, **v8, **no_key)), 400),
    ]
    for req, want in cases:
        status, resp_headers, _ = http_request(relay.port, req)
        assert status == want, req
        if want == 400 and "Sec-WebSocket-Version: 8" in req and "User-Agent" in req:
            assert resp_headers.get("sec-websocket-version") == "13", req
    # nothing reached the registry
    assert "server_claimed" not in relay.logs() and "phone_registered" not in relay.logs()


def test_426_names_the_upgrade(relay):
    status, headers, _ = http_request(
        relay.port, upgrade_request("/v1/server", dict(SERVER_HEADERS, Connection="keep-alive")))
    assert status == 426
    assert headers["connection"].lower() == "upgrade"
    assert headers["upgrade"].lower() == "websocket"


@pytest.mark.parametrize("key", [
    base64.b64encode(b"x" * 15).decode(),   # 15 bytes
    base64.b64encode(b"x" * 17).decode(),   # 17 bytes
    "",                                      # empty
])
def test_key_must_decode_to_16_bytes(relay, key):
    req = upgrade_request("/v1/server", dict(SERVER_HEADERS, **{"Sec-WebSocket-Key": key}))
    status, _, _ = http_request(relay.port, req)
    assert status == 400


def test_101_response_headers(relay):
    # /v1/server: a phone for an unknown server would get a close frame
    # right behind the 101, in the same read.
    status, headers, body = http_request(relay.port, upgrade_request("/v1/server", SERVER_HEADERS))
    assert status == 101
    assert headers["connection"].lower() == "upgrade"
    assert headers["upgrade"].lower() == "websocket"
    assert "sec-websocket-extensions" not in headers and "sec-websocket-protocol" not in headers
    assert body == b""
