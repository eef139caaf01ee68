"""Loopback admin endpoints on the metrics listener: /debug/server-ids
(paged), /debug/connections, POST /debug/server-ids/<id>/close. Gathered
across shards (--workers 1 and 3), never on the public listener, never a token."""
import asyncio
import json
import urllib.parse

import pytest

from conftest import (closed, free_port, http_request, run, ws_binary, ws_phone)


@pytest.fixture(params=[1, 3], ids=["workers1", "workers3"])
def admin_relay(relay_factory, request):
    mport = free_port()
    relay = relay_factory(f"--metrics-listen=127.0.0.1:{mport}", "--workers", str(request.param))
    relay.workers = request.param
    return relay, mport


def get(port, path):
    status, headers, body = http_request(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
    return status, headers, body


def post(port, path):
    return http_request(port, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")


def test_server_ids_paged_across_shards(admin_relay):
    relay, mport = admin_relay
    sids = [f"adm-{i:02d}" for i in range(7)]

    async def go():
        binaries = {s: await ws_binary(relay, s) for s in sids}
        phones = [await ws_phone(relay, "adm-03"), await ws_phone(relay, "adm-03"),
                  await ws_phone(relay, "adm-05")]
        await phones[0].send('{"hello": "binary"}')  # 19 bytes phone -> binary
        env = json.loads(await binaries["adm-03"].recv())
        await binaries["adm-03"].send(json.dumps({"conn_id": env["conn_id"], "frame": [1, 2]}))
        assert json.loads(await phones[0].recv()) == [1, 2]
        await asyncio.sleep(1.1)

        status, headers, body = get(mport, "/debug/server-ids")
        assert status == 200 and headers["content-type"] == "application/json; charset=utf-8"
        doc = json.loads(body)
        assert [e["server_id"] for e in doc["server_ids"]] == sids
        assert doc["next_after"] is None
        e3 = doc["server_ids"][3]
        assert e3["state"] == "connected" and e3["phones"] == 2 and e3["remote"] == "127.0.0.1"
        assert e3["binary_uptime_seconds"] >= 1
        assert e3["bytes_phones_to_binary"] == len('{"hello": "binary"}')
        assert e3["bytes_binary_to_phones"] == len("[1, 2]")
        assert doc["server_ids"][5]["phones"] == 1 and doc["server_ids"][0]["phones"] == 0
        assert b"SECRET-TOKEN-123" not in body and b"UA-SECRET" not in body

        # pages of 3 cover everything once, in order
        seen, after = [], ""
        for _ in range(5):
            q = "/debug/server-ids?limit=3" + (f"&after={urllib.parse.quote(after)}" if after
                                               else "")
            page = json.loads(get(mport, q)[2])
            seen += [e["server_id"] for e in page["server_ids"]]
            after = page["next_after"]
            if after is None:
                break
            assert len(page["server_ids"]) == 3
        assert seen == sids

        status, _, body = get(mport, "/debug/connections")
        c = json.loads(body)
        assert c["shards"] == relay.workers
        assert c["websockets"] == {"binaries": 7, "binaries_probing": 0, "phones": 3,
                                   "rejected_closing": 0}
        assert c["registry"] == {"server_ids": 7, "in_grace": 0, "phones": 3}
        assert c["by_state"]["ws_open"] == 10 and c["total"] >= 10
        for ws in list(binaries.values()) + phones:
            await ws.close()
    run(go())


def test_close_ends_binary_and_phones_like_a_drain(admin_relay):
    relay, mport = admin_relay

    async def go():
        b = await ws_binary(relay, "to close")
        other = await ws_binary(relay, "stays")
        p1, p2 = await ws_phone(relay, "to close"), await ws_phone(relay, "to close")
        status, _, body = post(mport, "/debug/server-ids/to%20close/close")
        assert status == 200, body
        assert json.loads(body) == {"server_id": "to close", "closed_binary": True,
                                    "closed_phones": 2, "close_code": 1001}
        for ws in (b, p1, p2):
            assert await closed(ws) == (1001, "shutting down")
        # the binary got no close notices for the phones
        assert other.open
        doc = json.loads(get(mport, "/debug/server-ids")[2])
        states = {e["server_id"]: e["state"] for e in doc["server_ids"]}
        assert states == {"stays": "connected", "to close": "grace"}
        await other.close()
    run(go())
    relay.wait_log("msg=admin_close")
    line = [ln for ln in relay.logs().splitlines() if "msg=admin_close" in ln][0]
    assert 'server_id="to close" binary=1 phones=2 close_code=1001 remote=127.0.0.1' in line
    assert "phone_close_notice_send_failed" not in relay.logs()


def test_admin_refusals(admin_relay):
    relay, mport = admin_relay
    assert post(mport, "/debug/server-ids/nobody/close")[0] == 404
    status, headers, _ = get(mport, "/debug/server-ids/x/close")
    assert status == 405 and headers["allow"] == "POST"
    assert post(mport, "/debug/server-ids")[0] == 405
    assert get(mport, "/debug/server-ids?limit=0")[0] == 400
    assert get(mport, "/debug/server-ids?limit=abc")[0] == 400
    assert get(mport, "/debug/server-ids?after=%zz")[0] == 400
    assert post(mport, "/debug/server-ids/%2/close")[0] == 400
    assert get(mport, "/debug/nothing")[0] == 404
    # never on the public listener
    for path in ("/debug/server-ids", "/debug/connections"):
        assert get(relay.port, path)[0] == 404
    assert post(relay.port, "/debug/server-ids/x/close")[0] == 404
