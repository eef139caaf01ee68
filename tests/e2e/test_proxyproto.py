"""PROXY protocol v2 on the HTTPS listener (spec §9.4): the header's source
replaces the peer for the rate limiter and `remote` logs; anything else
(v1, LOCAL, UDP, UNIX, UNSPEC, garbage, plain HTTP, a late header) is
closed with zero bytes written; a stalled header blocks nobody."""
import socket
import ssl
import struct
import time

import pytest

from conftest import server_headers
from tlshelp import DOMAIN, Pki, client_ctx, closed_silently, healthz, https_request, proxy_v2, tls_listen


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def certs(pki):
    return pki.leaf("pp")


@pytest.fixture
def pp_relay(relay_factory, certs):
    def make(*args):
        return relay_factory(*args, listen=tls_listen(*certs, "--https-proxy-protocol"))
    return make


UPGRADE = ("GET /v1/server HTTP/1.1\r\nHost: " + DOMAIN + "\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n" +
           "".join(f"{k}: {v}\r\n" for k, v in server_headers("{sid}").items()) + "\r\n")


def upgrade(relay, pki, src, sid):
    status, _, _, s = https_request(relay.port, client_ctx(pki), UPGRADE.replace("{sid}", sid),
                                    prefix=proxy_v2(src))
    return status, s


def test_starting_line_says_proxy_protocol(pp_relay):
    relay = pp_relay()
    assert "https_proxy_protocol=true" in relay.logs()


@pytest.mark.parametrize("src", ["203.0.113.7", "2001:db8::1"])
def test_valid_header_source_is_remote(pp_relay, pki, src):
    relay = pp_relay()
    status, _, _ = healthz(relay.port, client_ctx(pki), prefix=proxy_v2(src))
    assert status == 200
    status, s = upgrade(relay, pki, src, "pp1")
    assert status == 101
    relay.wait_log(f"msg=server_claimed server_id=pp1 binary_version=0.1.0 remote={src}")
    s.close()


def test_tlvs_ignored(pp_relay, pki):
    relay = pp_relay()
    tlv = bytes([0x04]) + struct.pack("!H", 3) + b"abc" + bytes([0xEE]) + struct.pack("!H", 0)
    status, _, _ = healthz(relay.port, client_ctx(pki), prefix=proxy_v2("198.51.100.9", tlv=tlv))
    assert status == 200


def test_header_and_client_hello_in_one_segment(pp_relay, pki):
    """Bytes after the header in the same read go straight to TLS."""
    relay = pp_relay()
    ctx = client_ctx(pki)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=DOMAIN)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
    sock.sendall(proxy_v2("192.0.2.44") + outgoing.read())
    while True:
        data = sock.recv(65536)
        assert data
        incoming.write(data)
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            if outgoing.pending:
                sock.sendall(outgoing.read())
    obj.write(f"GET /healthz HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n".encode())
    sock.sendall(outgoing.read())
    reply = b""
    while b"\r\n\r\n" not in reply:
        incoming.write(sock.recv(65536))
        try:
            reply += obj.read(65536)
        except ssl.SSLWantReadError:
            pass
    assert reply.startswith(b"HTTP/1.1 200 OK")
    sock.close()


def test_rate_limit_keyed_on_header_source(pp_relay, pki):
    relay = pp_relay("--rate-limit-burst", "1")
    status, s1 = upgrade(relay, pki, "203.0.113.7", "rl1")
    assert status == 101
    status, s2 = upgrade(relay, pki, "203.0.113.7", "rl2")
    assert status == 429
    relay.wait_log('msg=rate_limited remote="\\"203.0.113.7\\""')
    status, s3 = upgrade(relay, pki, "203.0.113.8", "rl3")  # separate bucket
    assert status == 101
    for s in (s1, s2, s3):
        s.close()
    assert "remote=127.0.0.1" not in relay.logs()


def _bad_headers():
    v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n"
    good = proxy_v2("203.0.113.7")
    return {
        "v1": v1,
        "local": proxy_v2("203.0.113.7", cmd=0x0),
        "unspec": good[:13] + b"\x00" + good[14:],
        "udp4": proxy_v2("203.0.113.7", fam=0x12),
        "udp6": proxy_v2("2001:db8::1", fam=0x22),
        "unix": good[:13] + b"\x31" + good[14:],
        "version1": good[:12] + b"\x11" + good[13:],
        "short": good[:14] + struct.pack("!H", 4) + good[16:20],
        "garbage": b"\x00" * 64,
        "http": f"GET /healthz HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n".encode(),
        "tls_without_header": b"\x16\x03\x01\x00\xa0\x01\x00\x00\x9c\x03\x03" + b"\x00" * 40,
    }


@pytest.mark.parametrize("name", list(_bad_headers()))
def test_rejected_header_closed_with_zero_bytes(pp_relay, name):
    relay = pp_relay()
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
        s.sendall(_bad_headers()[name])
        ok, _ = closed_silently(s)
        assert ok, name


def test_late_header_closed(pp_relay):
    relay = pp_relay("--proxy-header-timeout", "300ms")
    for part in (b"", proxy_v2("203.0.113.7")[:10]):
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
            if part:
                s.sendall(part)
            ok, elapsed = closed_silently(s)
            assert ok and 0.2 <= elapsed < 3, elapsed


def test_stalled_header_blocks_nobody(pp_relay, pki):
    relay = pp_relay()
    stalled = [socket.create_connection(("127.0.0.1", relay.port)) for _ in range(5)]
    stalled[0].sendall(proxy_v2("203.0.113.7")[:20])
    start = time.time()
    status, _, _ = healthz(relay.port, client_ctx(pki), prefix=proxy_v2("203.0.113.9"))
    assert status == 200 and time.time() - start < 1
    for s in stalled:
        s.close()


def test_without_flag_plain_http_gets_400_with_flag_nothing(relay_factory, certs):
    """Run_HTTPSProxyProtocolWiring: the flag decides what a plain HTTP
    request to the TLS port sees."""
    req = f"GET /healthz HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n".encode()
    plain = relay_factory(listen=tls_listen(*certs))
    with socket.create_connection(("127.0.0.1", plain.port), timeout=5) as s:
        s.sendall(req)
        assert s.recv(65536).startswith(b"HTTP/1.0 400")
    proxied = relay_factory(listen=tls_listen(*certs, "--https-proxy-protocol"))
    with socket.create_connection(("127.0.0.1", proxied.port), timeout=5) as s:
        s.sendall(req)
        assert closed_silently(s)[0]


def test_insecure_listener_never_reads_proxy_headers(relay_factory):
    relay = relay_factory()
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
        s.sendall(proxy_v2("203.0.113.7") + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = s.recv(65536)
    assert data.startswith(b"HTTP/1.1 400")
