"""Autocert mode's HTTPS listener end to end (spec §7.3, §7.4, §6.3 step 14):
real TLS clients verifying a test CA chain with SNI, WebSockets over TLS,
the Host check, the plain-HTTP reply, handshake deadlines, ALPN, protocol
versions, SIGHUP certificate reloads and startup failures."""
import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import time

import pytest
import websockets

from conftest import VERSION, client_headers, closed, free_port, run, run_relay, server_headers
from tlshelp import (DOMAIN, Pki, client_ctx, healthz, https_request, read_all, tls_connect,
                     tls_listen)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def certs(pki, tmp_path):
    """A fresh leaf copied to files the test may overwrite."""
    chain, key = pki.leaf(f"leaf{time.monotonic_ns()}")
    c, k = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    shutil.copy(chain, c)
    shutil.copy(key, k)
    return c, k


@pytest.fixture
def tls_relay(relay_factory, certs):
    def make(*args, env=None):
        return relay_factory(*args, env=env, listen=tls_listen(*certs))
    return make


def fingerprint(sock):
    return hashlib.sha256(sock.getpeercert(binary_form=True)).hexdigest()


def file_fingerprint(path):
    import subprocess
    der = subprocess.run(["openssl", "x509", "-in", path, "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return hashlib.sha256(der).hexdigest()


async def wss(relay, pki, path, headers, **kw):
    sock = socket.create_connection(("127.0.0.1", relay.port))
    return await websockets.connect(f"wss://{DOMAIN}:{relay.port}{path}", sock=sock,
                                    ssl=client_ctx(pki), server_hostname=DOMAIN,
                                    extra_headers=headers, max_size=None, close_timeout=0.5, **kw)


# ---- boot ------------------------------------------------------------------

def test_starting_line_and_healthz(tls_relay, pki, tmp_path, certs):
    relay = tls_relay("--cert-cache", str(tmp_path / "cache"))
    status, headers, body = healthz(relay.port, client_ctx(pki))
    assert status == 200
    assert json.loads(body)["status"] == "ok"
    assert headers["content-type"] == "application/json; charset=utf-8"
    line = [ln for ln in relay.logs().splitlines() if "msg=starting" in ln][0]
    # a static certificate is not ACME: no mode=autocert, no cache directory
    assert (f"msg=starting version={VERSION} mode=static-cert domain={DOMAIN} "
            f"tls_cert={certs[0]} https_proxy_protocol=false") in line
    assert not (tmp_path / "cache").exists()
    loaded = [ln for ln in relay.logs().splitlines() if "tls certificate loaded" in ln][0]
    assert f"source=files subject=\"CN={DOMAIN}\" not_after=20" in loaded


@pytest.mark.parametrize("which", ["cert", "key"])
def test_boot_refuses_unreadable_files(certs, which, tmp_path):
    cert, key = certs
    missing = str(tmp_path / "missing.pem")
    args = ["--domain", DOMAIN, "--https-listen", f"127.0.0.1:{free_port()}", "--metrics-listen=",
            "--tls-cert", missing if which == "cert" else cert,
            "--tls-key", missing if which == "key" else key]
    r = run_relay(*args)
    assert r.returncode == 1, r.stderr
    assert 'level=ERROR msg="refusing to start: cannot load --tls-cert/--tls-key"' in r.stderr
    assert missing in r.stderr and "No such file or directory" in r.stderr


def test_boot_refuses_mismatched_key_and_garbage(certs, pki, tmp_path):
    cert, _ = certs
    _, other_key = pki.leaf("other")
    base = ["--domain", DOMAIN, "--https-listen", f"127.0.0.1:{free_port()}", "--metrics-listen="]
    r = run_relay(*base, "--tls-cert", cert, "--tls-key", other_key)
    assert r.returncode == 1
    assert "private key does not match the certificate" in r.stderr
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    r = run_relay(*base, "--tls-cert", str(garbage), "--tls-key", other_key)
    assert r.returncode == 1
    assert f"certificate file {garbage}" in r.stderr
    r = run_relay(*base, "--tls-cert", cert, "--tls-key", str(garbage))
    assert r.returncode == 1
    assert f"key file {garbage}" in r.stderr
    # the check runs under --check-config too, which answers only 0 or 2
    r = run_relay(*base, "--tls-cert", cert, "--tls-key", str(garbage), "--check-config")
    assert r.returncode == 2


def test_static_certificates_leave_port_80_alone(certs):
    """--tls-cert turns ACME off, so nothing listens on --http-listen and
    its port is not expected; asking for it anyway is a boot error."""
    cert, key = certs
    base = ["--domain", DOMAIN, "--https-listen", f"127.0.0.1:{free_port()}", "--metrics-listen=",
            "--tls-cert", cert, "--tls-key", key, "--check-config"]
    assert run_relay(*base).returncode == 0
    r = run_relay(*base, "--http-listen", f"127.0.0.1:{free_port()}")
    assert r.returncode == 2
    assert 'level=ERROR msg="refusing to start: --http-listen needs ACME"' in r.stderr
    assert 'fix="drop --http-listen, or drop --tls-cert/--tls-key to use ACME"' in r.stderr


@pytest.mark.parametrize("flag", ["--https-listen", "--http-listen"])
def test_boot_refuses_bad_autocert_listen_address(flag):
    r = run_relay("--domain", DOMAIN, "--metrics-listen=", flag, "127.0.0.1:0", "--check-config")
    assert r.returncode == 2
    assert 'msg="refusing to start: invalid listener address"' in r.stderr
    assert "addr=127.0.0.1:0" in r.stderr


def test_no_certificate_yet_fails_handshake_cleanly(relay_factory, pki, tmp_path):
    # ACME mode before a certificate exists: handshakes fail with an alert,
    # the process stays up. (The ACME directory points nowhere on purpose.)
    def listen(port):
        return ["--domain", DOMAIN, "--https-listen", f"127.0.0.1:{port}",
                "--http-listen", f"127.0.0.1:{free_port()}", "--cert-cache",
                str(tmp_path / "cache"), "--acme-directory", "https://127.0.0.1:1/directory"]
    relay = relay_factory(listen=listen)
    for _ in range(3):
        with pytest.raises(ssl.SSLError) as e:
            tls_connect(relay.port, client_ctx(pki))
        assert "alert" in str(e.value).lower() or "handshake" in str(e.value).lower()
    assert relay.proc.poll() is None


# ---- WebSockets over TLS ---------------------------------------------------

def test_wss_binary_and_phone(tls_relay, pki):
    relay = tls_relay()

    async def go():
        b = await wss(relay, pki, "/v1/server", server_headers("t1"))
        p = await wss(relay, pki, "/v1/client", client_headers("t1"))
        await p.send('{"hello": "tls"}')
        env = json.loads(await b.recv())
        assert env["frame"] == {"hello": "tls"}
        await b.send(json.dumps({"conn_id": env["conn_id"], "frame": {"back": 1}}))
        assert json.loads(await p.recv()) == {"back": 1}
        # big messages both ways: records span reads and writes spill
        big = json.dumps({"blob": "x" * 200_000})
        await p.send(big)
        env = json.loads(await b.recv())
        assert env["frame"] == json.loads(big)
        for i in range(50):
            await b.send(json.dumps({"conn_id": env["conn_id"], "frame": {"i": i, "pad": "y" * 5000}}))
        for i in range(50):
            assert json.loads(await p.recv())["i"] == i
        await p.close()
        notice = json.loads(await b.recv())
        assert notice["close_code"] == 1000
        await b.close()
    run(go())
    assert "msg=server_claimed server_id=t1 binary_version=0.1.0 remote=127.0.0.1" in relay.logs()


def test_sigterm_closes_wss_with_1001(tls_relay, pki):
    relay = tls_relay()

    async def go():
        b = await wss(relay, pki, "/v1/server", server_headers("t2"))
        relay.proc.send_signal(signal.SIGTERM)
        return await closed(b)
    assert run(go()) == (1001, "shutting down")
    assert relay.stop() == 0


def test_close_notify_after_reply(tls_relay, pki):
    relay = tls_relay()
    status, _, body, s = https_request(
        relay.port, client_ctx(pki),
        f"GET /nope HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n")
    assert status == 404 and body == b"404 page not found\n"
    rest, clean = read_all(s)
    assert rest == b"" and clean  # close_notify, not a bare TCP close
    s.close()


# ---- Host check (421) ------------------------------------------------------

@pytest.mark.parametrize("host,ok", [
    (DOMAIN, True), (DOMAIN.upper(), True), (f"{DOMAIN}:8443", True), ("Relay.Test:443", True),
    ("other.test", False), ("", False), (f"{DOMAIN}.evil.com", False), (f"evil{DOMAIN}", False),
    ("[::1]:443", False), ("127.0.0.1", False),
])
def test_host_check(tls_relay, pki, host, ok):
    relay = tls_relay()
    status, headers, body = healthz(relay.port, client_ctx(pki), host=host)
    if ok:
        assert status == 200
    else:
        assert status == 421
        assert body == b"" and headers.get("content-length") == "0"


def test_host_check_runs_before_rate_limit_and_routes(tls_relay, pki):
    relay = tls_relay("--rate-limit-burst", "1")
    ctx = client_ctx(pki)
    upgrade = ("GET /v1/server HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\nX-Pyrycode-Server: t3\r\n"
               "X-Pyrycode-Version: 1\r\nUser-Agent: t\r\n\r\n")
    for _ in range(3):
        status, _, _, s = https_request(relay.port, ctx, upgrade.format(host="wrong.test"))
        s.close()
        assert status == 421
    status, _, _, s = https_request(relay.port, ctx, upgrade.format(host=DOMAIN))
    assert status == 101  # the wrong-host requests took no token
    s.close()
    assert "rate_limited" not in relay.logs()


# ---- plain HTTP on the TLS port ------------------------------------------

@pytest.mark.parametrize("req", [b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                                 b"POST /v1/server HTTP/1.1\r\n\r\n", b"HEAD / HTTP/1.0\r\n\r\n"])
def test_plain_http_gets_go_400(tls_relay, req):
    relay = tls_relay()
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
        s.sendall(req)
        data, clean = read_all(s)
    assert data == b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"


def test_plain_http_dribbled(tls_relay):
    relay = tls_relay()
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
        for b in b"GET / HTTP/1.1\r\n\r\n":
            s.sendall(bytes([b]))
            time.sleep(0.005)
        data, _ = read_all(s)
    assert data.startswith(b"HTTP/1.0 400")


# ---- handshake deadline ------------------------------------------------------

@pytest.mark.parametrize("send", [b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"])
def test_handshake_timeout(tls_relay, send):
    relay = tls_relay("--tls-handshake-timeout", "400ms")
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
        start = time.time()
        if send:
            s.sendall(send)
        data, _ = read_all(s, timeout=5)
        elapsed = time.time() - start
    assert data == b""
    assert 0.3 <= elapsed < 3, elapsed


def test_handshake_timeout_does_not_block_others(tls_relay, pki):
    relay = tls_relay("--tls-handshake-timeout", "5s")
    stalled = [socket.create_connection(("127.0.0.1", relay.port)) for _ in range(5)]
    start = time.time()
    status, _, _ = healthz(relay.port, client_ctx(pki))
    assert status == 200 and time.time() - start < 1
    for s in stalled:
        s.close()


# ---- versions, ALPN, resumption ----------------------------------------------

def test_tls11_refused_tls12_and_13_accepted(tls_relay, pki):
    relay = tls_relay()
    old = client_ctx(pki)
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    with pytest.raises(ssl.SSLError) as e:
        tls_connect(relay.port, old)
    assert "PROTOCOL_VERSION" in str(e.value).upper() or "VERSION" in str(e.value).upper(), e.value
    for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        s = tls_connect(relay.port, client_ctx(pki, minimum_version=v, maximum_version=v))
        assert s.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[v]
        if v == ssl.TLSVersion.TLSv1_2:
            assert "GCM" in s.cipher()[0] or "CHACHA20" in s.cipher()[0]
            assert s.cipher()[0].startswith("ECDHE")
        s.close()


def test_alpn(tls_relay, pki):
    relay = tls_relay()
    s = tls_connect(relay.port, client_ctx(pki, alpn=("h2", "http/1.1")))
    assert s.selected_alpn_protocol() == "http/1.1"
    s.close()
    s = tls_connect(relay.port, client_ctx(pki, alpn=None))
    assert s.selected_alpn_protocol() is None
    s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n".encode())
    data, _ = read_all(s)
    assert data.startswith(b"HTTP/1.1 200")
    with pytest.raises(ssl.SSLError):
        tls_connect(relay.port, client_ctx(pki, alpn=("h2",)))
    # acme-tls/1 is accepted, then closed cleanly: no ACME responder here
    s = tls_connect(relay.port, client_ctx(pki, alpn=("acme-tls/1",)))
    assert s.selected_alpn_protocol() == "acme-tls/1"
    data, clean = read_all(s)
    assert data == b"" and clean
    assert relay.proc.poll() is None


def test_session_resumption(tls_relay, pki):
    relay = tls_relay()
    ctx = client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    s = tls_connect(relay.port, ctx)
    session = s.session
    s.close()
    raw = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname=DOMAIN, session=session)
    assert s.session_reused
    s.close()


# ---- SIGHUP reload -----------------------------------------------------------

def test_sighup_reload_serves_new_cert_and_keeps_connections(tls_relay, pki, certs):
    relay = tls_relay()
    cert, key = certs
    ctx = client_ctx(pki)
    s = tls_connect(relay.port, ctx)
    old_fp = fingerprint(s)
    s.close()
    assert old_fp == file_fingerprint(cert)

    async def go():
        b = await wss(relay, pki, "/v1/server", server_headers("t4"))
        new_chain, new_key = pki.leaf("reloaded")
        shutil.copy(new_chain, cert)
        shutil.copy(new_key, key)
        relay.proc.send_signal(signal.SIGHUP)
        relay.wait_log("msg=reload changed=tls-cert")
        s2 = tls_connect(relay.port, ctx)
        assert fingerprint(s2) == file_fingerprint(new_chain) != old_fp
        s2.close()
        # the connection made before the reload still carries traffic
        p = await wss(relay, pki, "/v1/client", client_headers("t4"))
        await p.send('{"after": "reload"}')
        env = json.loads(await b.recv())
        assert env["frame"] == {"after": "reload"}
        await b.send(json.dumps({"conn_id": env["conn_id"], "frame": {"ok": True}}))
        assert json.loads(await p.recv()) == {"ok": True}
        await p.close()
        await b.close()
    run(go())
    line = [ln for ln in relay.logs().splitlines() if "msg=reload" in ln][0]
    assert f'level=INFO msg=reload changed=tls-cert subject="CN={DOMAIN}" not_after=20' in line


def test_bad_reload_keeps_old_cert(tls_relay, pki, certs):
    relay = tls_relay()
    cert, key = certs
    ctx = client_ctx(pki)
    before = fingerprint(tls_connect(relay.port, ctx))
    with open(key, "w") as f:
        f.write("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
    relay.proc.send_signal(signal.SIGHUP)
    relay.wait_log("level=ERROR msg=reload")
    line = [ln for ln in relay.logs().splitlines() if "msg=reload" in ln][0]
    assert "changed=none" in line and key in line and "fix=" in line
    assert "BEGIN" not in line and "broken" not in line
    assert fingerprint(tls_connect(relay.port, ctx)) == before
    os.unlink(cert)
    relay.proc.send_signal(signal.SIGHUP)
    relay.wait_log(f"certificate file {cert}")
    assert fingerprint(tls_connect(relay.port, ctx)) == before


# ---- a second client stack: Node ws over wss -------------------------------

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")


@pytest.mark.skipif(not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "ws")),
                    reason="npm ws not installed (run scripts/deps.sh)")
@pytest.mark.parametrize("scenario", ["route", "ping", "noserver"])
def test_node_ws_over_wss(tls_relay, pki, scenario):
    import subprocess
    relay = tls_relay()
    env = dict(os.environ, RELAY_TLS_CA=pki.root, RELAY_TLS_NAME=DOMAIN)
    r = subprocess.run(["node", os.path.join(NODE_DIR, "client.js"), scenario, str(relay.port)],
                       capture_output=True, text=True, timeout=30, cwd=NODE_DIR, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if scenario == "route":
        assert out["frame"] == {"hello": "from node"}
        assert out["notice"]["close_code"] == 1000
    elif scenario == "ping":
        assert out == {"pong": "node-ping-7"}
    else:
        assert out == {"code": 4404, "reason": "no server with that id"}


# ---- back-pressure and write deadlines over TLS ------------------------------

def raw_wss(relay, pki, path, headers):
    """A TLS WebSocket driven by hand (for peers that stop reading)."""
    from conftest import frame, upgrade_request
    s = tls_connect(relay.port, client_ctx(pki))
    s.sendall(upgrade_request(path, headers, host=DOMAIN))
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(1)
    assert data.startswith(b"HTTP/1.1 101")
    s.send_text = lambda text: s.sendall(frame(1, text))
    return s


def test_stalled_tls_phone_overflows_without_blocking_sibling(tls_relay, pki):
    relay = tls_relay("--phone-backlog-bytes", "1048576")

    async def go():
        b = await wss(relay, pki, "/v1/server", server_headers("bp"))
        stalled = raw_wss(relay, pki, "/v1/client", client_headers("bp"))  # never reads
        fast = await wss(relay, pki, "/v1/client", client_headers("bp"))
        stalled.send_text("0")
        sid = json.loads(await b.recv())["conn_id"]
        await fast.send("1")
        fid = json.loads(await b.recv())["conn_id"]
        blob = "x" * 60000
        for i in range(200):
            await b.send(json.dumps({"conn_id": sid, "frame": blob}))
            await b.send(json.dumps({"conn_id": fid, "frame": i}))
            assert json.loads(await asyncio.wait_for(fast.recv(), 5)) == i
        assert await b.recv() == '{"conn_id":"%s","close_code":1011}' % sid
        stalled.close()
    run(go())
    assert 'err="relay: phone delivery backlog full"' in relay.logs()


def test_tls_binary_that_stops_reading_is_dropped(tls_relay, pki):
    relay = tls_relay("--write-timeout", "1s")

    async def go():
        b = raw_wss(relay, pki, "/v1/server", server_headers("wt"))  # never reads
        relay.wait_log("msg=server_claimed server_id=wt")
        p = await wss(relay, pki, "/v1/client", client_headers("wt"))
        blob = json.dumps("z" * 60000)
        start = time.time()
        try:
            for _ in range(400):  # far more than socket buffers hold
                await asyncio.wait_for(p.send(blob), 5)
        except (websockets.exceptions.ConnectionClosed, asyncio.TimeoutError):
            pass
        relay.wait_log("msg=binary_forwarder_read_end server_id=wt", timeout=10)
        assert time.time() - start < 10
        b.close()
    run(go())
    assert 'err="closed by relay: status = 1011"' in relay.logs()


# ---- several shards ------------------------------------------------------------

def test_wss_sessions_move_to_their_shard(tls_relay, pki):
    """With --workers 4 the handshake and head are read on shard 0 and the
    TLS session moves with the socket to the server-id's shard; frames that
    arrive in the same TLS flight as the upgrade request move with it."""
    from conftest import frame, upgrade_request

    relay = tls_relay("--workers", "4")
    sids = [f"tls-{i}" for i in range(12)]

    async def go():
        bins = [await wss(relay, pki, "/v1/server", server_headers(sid)) for sid in sids]
        phones = [await wss(relay, pki, "/v1/client", client_headers(sid)) for sid in sids]
        for i, p in enumerate(phones):
            await p.send(json.dumps({"i": i}))
        for i, b in enumerate(bins):
            env = json.loads(await asyncio.wait_for(b.recv(), 5))
            assert env["frame"] == {"i": i}
            await b.send(json.dumps({"conn_id": env["conn_id"], "frame": {"back": i}}))
        for i, p in enumerate(phones):
            assert json.loads(await asyncio.wait_for(p.recv(), 5)) == {"back": i}
        # request head and two frames written as one TLS record stream
        for i, sid in enumerate(sids):
            s = tls_connect(relay.port, client_ctx(pki))
            req = upgrade_request("/v1/client", client_headers(sid), host=DOMAIN)
            s.sendall(req + frame(0x1, b'{"early":1}') + frame(0x1, b'{"early":2}'))
            for n in (1, 2):
                env = json.loads(await asyncio.wait_for(bins[i].recv(), 5))
                assert env["frame"] == {"early": n}
            s.close()
        # a 100 KB frame right behind the head: records span several socket
        # reads, so a partial record sits in the session when it moves
        big = json.dumps({"pad": "x" * 100_000}).encode()
        s = tls_connect(relay.port, client_ctx(pki))
        req = upgrade_request("/v1/client", client_headers(sids[5]), host=DOMAIN)
        s.sendall(req + frame(0x1, big))
        env = {}
        while "frame" not in env:  # skip the close notice of the earlier raw phone
            env = json.loads(await asyncio.wait_for(bins[5].recv(), 5))
        assert len(env["frame"]["pad"]) == 100_000
        s.close()
        for ws in phones + bins:
            await ws.close()
    run(go())
