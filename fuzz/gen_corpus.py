#!/usr/bin/env python3
"""Writes the seed corpora for the http, json and envelope fuzz targets
(fuzz/gen_ws_corpus.py writes the frame decoder's). Run from the repository
root; the files it writes are committed."""
import os
import struct

MASK = b"\x01\x02\x03\x04"


def frame(op, payload=b"", fin=True, mask=True, rsv=0):
    b0 = (0x80 if fin else 0) | (rsv << 4) | op
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
    else:
        head = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
    if not mask:
        return head + payload
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def write(target, name, data):
    d = os.path.join("fuzz", "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


upgrade = (b"GET /v1/server HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
           b"X-Pyrycode-Server: s1\r\nX-Pyrycode-Version: 1\r\nUser-Agent: u\r\n\r\n")
http = {
    "upgrade_server": upgrade,
    "upgrade_client": upgrade.replace(b"/v1/server", b"/v1/client"),
    "upgrade_with_data": upgrade + frame(1, b"{}"),
    "healthz": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "pipelined": b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
    "post_body": b"POST /healthz HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    "chunked": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "http10": b"GET / HTTP/1.0\r\n\r\n",
    "garbage": b"\x00\xff\r\n\r\n",
    "no_key": upgrade.replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b""),
    "bad_version": upgrade.replace(b"Version: 13", b"Version: 8"),
    "post_upgrade": upgrade.replace(b"GET", b"POST"),
    "absolute": b"GET http://h/v1/server?x HTTP/1.1\r\n\r\n",
    "multi_connection": b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: upgrade\r\n"
                        b"Upgrade: foo, websocket\r\n\r\n",
    "big_header": b"GET / HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n",
    "both_lengths": b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
}
for i, (name, data) in enumerate(http.items()):
    write("fuzz_http", name, bytes([i * 5 % 17]) + data)

docs = {
    "object": b'{"a":[1,-2.5e+3,true,false,null,"x"]}',
    "string_escapes": b'"\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00"',
    "lone_surrogate": b'"\\ud800"',
    "utf8": '"café 😀"'.encode(),
    "number_edge": b"-0.0e-0",
    "big_int": b"123456789012345678901234567890",
    "nested": b'{"a":{"b":{"c":[[[]]]}}}',
    "deep": b"[" * 100 + b"]" * 100,
    "bad_leading_zero": b"01",
    "bad_trailing_comma": b"[1,]",
    "bad_control": b'"a\nb"',
    "bad_utf8": b'"\xff"',
    "two_values": b"1 2",
    "ws_only": b"  \t\n",
    "nul_escape": b'"\\u0000"',
    "literal_prefix": b"tru",
    "empty_containers": b'[{},[],""]',
}
for name, data in docs.items():
    write("fuzz_json", name, data)

envs = {
    "route": b'{"conn_id":"client-s1-0123456789abcdef","frame":{"x":1}}',
    "route_ws": b' { "conn_id" : "c" , "frame" : [ 1 , 2 ] } ',
    "directive": b'{"conn_id":"c","close_code":4401}',
    "directive_frame": b'{"conn_id":"c","frame":"bye","close_code":4403}',
    "wake": b'{"push_wake":{"platform":"fcm","token":"t"}}',
    "null": b"null",
    "array": b"[1]",
    "missing_frame": b'{"conn_id":"c"}',
    "frame_null": b'{"conn_id":"c","frame":null}',
    "case_keys": b'{"CONN_ID":"c","Frame":1}',
    "escaped_key": b'{"conn\\u005fid":"c","frame":1}',
    "dup_keys": b'{"conn_id":"a","conn_id":"b","frame":1,"frame":null}',
    "escaped_id": b'{"conn_id":"a\\u00e9\\ud800","frame":1}',
    "code_range": b'{"conn_id":"c","frame":1,"close_code":65536}',
    "code_float": b'{"conn_id":"c","frame":1,"close_code":1.5}',
    "unknown_nested": b'{"x":{"conn_id":"n"},"conn_id":"c","frame":0}',
}
for name, data in envs.items():
    write("fuzz_envelope", name, data)
