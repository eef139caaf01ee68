"""Operator experience (issue #14): SIGHUP reloads and never kills, the
startup story (one line per bound listener, then `ready`), --check-config
answers 0 or 2 without side effects, and every refusal is one line in the
configured format with a fix=."""
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest
import websockets

from conftest import (EXTRA_CAPS, closed, free_port, http_request, run, run_relay, ws_binary,
                      ws_phone)
from tlshelp import DOMAIN


def lines(relay, needle):
    return [ln for ln in relay.logs().splitlines() if needle in ln]


# ---- 1. SIGHUP ----------------------------------------------------------------

def test_sighup_in_insecure_mode_reloads_nothing_and_keeps_serving(relay):
    async def go():
        b = await ws_binary(relay, "hup1")
        p = await ws_phone(relay, "hup1")
        relay.proc.send_signal(signal.SIGHUP)
        relay.wait_log("msg=reload")
        await p.send('{"still": "here"}')
        env = json.loads(await b.recv())
        assert env["frame"] == {"still": "here"}
        await p.close()
        await b.close()
    run(go())
    assert relay.proc.poll() is None
    line = lines(relay, "msg=reload")[0]
    assert "level=INFO msg=reload changed=none reason=" in line
    assert "--config-file" in line


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def test_config_file_reload_changes_limits_and_level(relay_factory, tmp_path):
    conf = str(tmp_path / "relay.conf")
    write(conf, "# reloadable settings\nmax-connections = 1\nrate-limit-burst = 0\n")
    relay = relay_factory("--config-file", conf, admission=False)

    async def attempt(sid):
        try:
            ws = await ws_binary(relay, sid)
        except websockets.exceptions.InvalidStatusCode as e:
            return e.status_code
        await ws.close()
        return 101

    async def go():
        b = await ws_binary(relay, "cap1")
        assert await attempt("cap2") == 503  # the file's cap of 1
        write(conf, "max-connections = 5\nlog-level = warn\nrate-limit-burst = 0\n")
        relay.proc.send_signal(signal.SIGHUP)
        relay.wait_log("msg=reload changed=")
        assert await attempt("cap3") == 101
        write(conf, "max-connections = 5\nrate-limit-burst = 0\n")
        relay.proc.send_signal(signal.SIGHUP)
        relay.wait_log('changed="log-level=info"')
        assert await attempt("cap4") == 101
        await b.close()
    run(go())
    line = lines(relay, "msg=reload")[0]
    assert 'changed="log-level=warn,max-connections=5"' in line, line
    relay.wait_log("msg=server_claimed server_id=cap4")
    assert "server_id=cap3" not in relay.logs()  # claimed while the level was warn

    # a broken file changes nothing and says why, in one ERROR line
    write(conf, "max-connections = 5\nlog-level = loud\n")
    relay.proc.send_signal(signal.SIGHUP)
    relay.wait_log("level=ERROR msg=reload")
    bad = lines(relay, "level=ERROR msg=reload")[0]
    assert "changed=none" in bad and f"{conf}:2: invalid log-level" in bad and "fix=" in bad
    assert relay.proc.poll() is None


def test_config_file_refusals_at_boot(tmp_path):
    conf = str(tmp_path / "relay.conf")
    write(conf, "max-connections = 5\n")
    r = run_relay("--insecure-listen", "127.0.0.1:1", "--metrics-listen=", "--config-file", conf,
                  "--max-connections", "9", "--check-config")
    assert r.returncode == 2
    assert 'msg="refusing to start: invalid --config-file"' in r.stderr
    assert "max-connections is also given on the command line" in r.stderr
    r = run_relay("--insecure-listen", "127.0.0.1:1", "--metrics-listen=",
                  "--config-file", str(tmp_path / "missing.conf"), "--check-config")
    assert r.returncode == 2 and "missing.conf: No such file or directory" in r.stderr
    write(conf, "max-connections = 0\n")
    r = run_relay("--insecure-listen", "127.0.0.1:1", "--metrics-listen=", "--config-file", conf,
                  "--check-config")
    assert r.returncode == 2 and "refusing to start: invalid --max-connections" in r.stderr


# ---- 2. the startup story ----------------------------------------------------------

def test_listening_lines_then_ready(relay_factory):
    mport = free_port()
    relay = relay_factory(f"--metrics-listen=127.0.0.1:{mport}")
    log = relay.logs().splitlines()
    idx = {name: i for i, ln in enumerate(log) for name in ("msg=starting ", "kind=public",
                                                            "kind=metrics", "msg=ready")
           if name in ln}
    assert idx["msg=starting "] < idx["kind=public"] < idx["kind=metrics"] < idx["msg=ready"]
    assert f"level=INFO msg=listening addr=127.0.0.1:{relay.port} kind=public" in log[
        idx["kind=public"]]
    assert f"msg=listening addr=127.0.0.1:{mport} kind=metrics" in log[idx["kind=metrics"]]
    assert "msg=ready version=" in log[idx["msg=ready"]]


def test_listening_line_names_the_bound_port_and_kind_https(relay_factory, tmp_path):
    from tlshelp import Pki, tls_listen
    pki = Pki(tmp_path)
    chain, key = pki.leaf("boot")
    relay = relay_factory(listen=tls_listen(chain, key))
    assert lines(relay, f"msg=listening addr=127.0.0.1:{relay.port} kind=https")
    assert not lines(relay, "kind=http-01")  # no ACME, no port 80
    start = lines(relay, "msg=starting")[0]
    assert "mode=static-cert" in start and "mode=autocert" not in start


# ---- 3. --check-config ---------------------------------------------------------------

def test_check_config_prints_configuration_ok_not_starting():
    r = run_relay("--insecure-listen", "127.0.0.1:1", "--metrics-listen=", "--check-config")
    assert r.returncode == 0, r.stderr
    from conftest import VERSION
    assert f"msg=\"configuration ok\" version={VERSION} mode=insecure" in r.stderr
    assert "msg=starting" not in r.stderr


def test_check_config_missing_certificate_exits_2(tmp_path):
    r = run_relay("--domain", DOMAIN, "--metrics-listen=", "--tls-cert", str(tmp_path / "c.pem"),
                  "--tls-key", str(tmp_path / "k.pem"), "--check-config")
    assert r.returncode == 2, r.stderr
    assert "cannot load --tls-cert/--tls-key" in r.stderr and "fix=" in r.stderr


def test_check_config_has_no_side_effects(tmp_path):
    cache = tmp_path / "not" / "yet"
    r = run_relay("--domain", DOMAIN, "--metrics-listen=", "--cert-cache", str(cache),
                  "--https-listen", "127.0.0.1:1", "--http-listen", "127.0.0.1:2",
                  "--check-config")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "not").exists()
    assert "configuration ok" in r.stderr and "mode=autocert" in r.stderr
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    r = run_relay("--domain", DOMAIN, "--metrics-listen=", "--cert-cache", str(loose),
                  "--https-listen", "127.0.0.1:1", "--http-listen", "127.0.0.1:2",
                  "--check-config")
    assert r.returncode == 0, r.stderr
    assert os.stat(loose).st_mode & 0o777 == 0o755  # not tightened by a dry run
    assert "tightened" not in r.stderr


@pytest.mark.parametrize("args", [
    ["--insecure-listen", "127.0.0.1:9090"],  # the default metrics address
    ["--insecure-listen", ":7000", "--metrics-listen", "127.0.0.1:7000"],
    ["--domain", DOMAIN, "--https-listen", ":7443", "--http-listen", "127.0.0.1:7443",
     "--metrics-listen="],
])
def test_two_listeners_on_one_address(args, tmp_path):
    extra = ["--cert-cache", str(tmp_path / "c")] if "--domain" in args else []
    for check in (["--check-config"], []):
        r = run_relay(*args, *extra, *check)
        assert r.returncode == 2, r.stderr
        assert 'msg="refusing to start: two listeners on one address"' in r.stderr
        assert "would bind the same address" in r.stderr and "fix=" in r.stderr


# ---- 4. refusals: one line, configured format, fix= ---------------------------------

@pytest.mark.parametrize("args,err", [
    (["--heartbeat-interval", "0s"], 'invalid --heartbeat-interval \\"0s\\"'),
    (["--heartbeat-interval", "10sec"], "for flag -heartbeat-interval: parse error"),
    (["--no-such-flag"], "flag provided but not defined: -no-such-flag"),
    (["--log-level", "loud"], "invalid --log-level"),
])
def test_flag_refusals_are_one_json_line_with_fix(args, err):
    r = run_relay("--log-format", "json", "--insecure-listen", "127.0.0.1:1", *args)
    assert r.returncode == 2
    out = r.stderr.strip().splitlines()
    assert len(out) == 1, r.stderr  # no usage dump
    line = json.loads(out[0])
    assert line["level"] == "ERROR" and line["msg"].startswith("refusing to start")
    assert err.replace('\\"', '"') in line["err"]
    assert line["fix"]


def test_flag_refusal_in_text_format_after_the_flag():
    # --log-format given after the bad flag still decides the format
    r = run_relay("--heartbeat-interval", "0s", "--insecure-listen", "127.0.0.1:1",
                  "--log-format=json")
    assert r.returncode == 2
    assert json.loads(r.stderr)["fix"].startswith("pass a positive duration such as 30s")


def test_unknown_flag_suggests_the_closest():
    r = run_relay("--insecure-listn", "127.0.0.1:1")
    assert r.returncode == 2
    assert "level=ERROR" in r.stderr and "did you mean --insecure-listen?" in r.stderr
    r = run_relay("--qqqqqqqq")
    assert "did you mean" not in r.stderr and "pyrycode-relay -h lists every flag" in r.stderr


def test_env_refusal_has_fix_and_json():
    r = run_relay("--log-format=json", "--insecure-listen", "127.0.0.1:1", "--metrics-listen=",
                  env={"PYRYCODE_RELAY_PRODUCTION": "yes"})
    assert r.returncode == 2
    line = [json.loads(ln) for ln in r.stderr.splitlines() if "env-var" in ln][0]
    assert line["env_var"] == "PYRYCODE_RELAY_PRODUCTION"
    assert line["fix"] == "set PYRYCODE_RELAY_PRODUCTION to exactly 1, or unset it"


def test_neither_mode_has_fix():
    r = run_relay()
    assert r.returncode == 2 and "fix=" in r.stderr


@pytest.mark.skipif(not EXTRA_CAPS, reason="needs a capability-rich process")
def test_capability_refusal_is_not_cut():
    r = run_relay("--insecure-listen", "127.0.0.1:1", "--metrics-listen=", "--check-config",
                  wrap=False)
    assert r.returncode == 2
    line = [ln for ln in r.stderr.splitlines() if "unexpected Linux capabilities" in ln][0]
    # the whole allowlist and hint survive, then the fix
    assert "allowlist: [CAP_NET_BIND_SERVICE (bit 10)]; drop with --cap-drop=ALL" in line
    fix = line.split(" fix=", 1)[1]
    assert "setpriv" in fix and "AmbientCapabilities" in fix and "CapabilityBoundingSet" in fix


# ---- 7. accept errors never stop the relay ---------------------------------------------

SHIM_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim", "accept_fail.c")


@pytest.fixture(scope="module")
def accept_shim(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("shim") / "accept_fail.so")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", out, SHIM_SRC, "-ldl"], check=True)
    return out


def healthz_ok(port, timeout=5.0):
    status, _, body = http_request(port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                                   timeout=timeout)
    return status == 200 and b'"status":"ok"' in body


@pytest.mark.parametrize("errname", ["ENFILE", "ENOBUFS", "EMFILE"])
def test_accept_errors_back_off_and_recover(relay_factory, accept_shim, tmp_path, errname):
    flag = str(tmp_path / "fail")
    mport = free_port()
    relay = relay_factory(f"--metrics-listen=127.0.0.1:{mport}",
                          env={"LD_PRELOAD": accept_shim, "ACCEPT_FAIL_FILE": flag,
                               "ASAN_OPTIONS": "verify_asan_link_order=0:detect_leaks=1"})
    write(flag, errname)
    # The kernel completes the handshake; the relay, out of "descriptors",
    # must neither exit nor spin: it backs off and keeps the connection queued.
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    relay.wait_log("msg=accept_error")
    time.sleep(1.5)
    assert relay.proc.poll() is None
    assert "listener failed" not in relay.logs() and "draining" not in relay.logs()
    warns = lines(relay, "msg=accept_error")
    assert len(warns) <= 3, warns  # rate-limited: at most one a second
    assert f"level=WARN msg=accept_error addr=127.0.0.1:{relay.port}" in warns[0]
    os.unlink(flag)
    # the queued client is served once the pressure is gone, and new ones too
    from conftest import read_reply
    status, _, body = read_reply(s)
    s.close()
    assert status == 200
    assert healthz_ok(relay.port)
    status, _, body = http_request(mport, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    n = int(re.search(rb"^pyrycode_relay_accept_errors_total (\d+)$", body, re.M).group(1))
    assert n >= 1


# ---- 6. log level, refusal reasons at debug, collapsed floods --------------------------

def test_debug_says_why_an_upgrade_was_refused(relay_factory):
    from conftest import client_headers, upgrade_request
    relay = relay_factory("--log-level", "debug")
    h = client_headers("dbg")
    del h["X-Pyrycode-Token"]
    status, _, _ = http_request(relay.port, upgrade_request("/v1/client", h))
    assert status == 400
    h = client_headers("dbg")
    h["Sec-WebSocket-Version"] = "12"
    status, _, _ = http_request(relay.port, upgrade_request("/v1/client", h))
    assert status == 400
    relay.wait_log("only 13 is supported")
    assert http_request(relay.port, upgrade_request("/v1/phone", client_headers("dbg")))[0] == 404
    relay.wait_log("no WebSocket endpoint")
    refused = lines(relay, "msg=upgrade_refused")
    assert ('level=DEBUG msg=upgrade_refused path=/v1/client status=400 '
            'reason="missing or empty X-Pyrycode-Token header" remote=127.0.0.1') in refused[0]
    assert 'reason="unsupported WebSocket protocol version (only 13 is supported)"' in refused[1]
    assert 'path=/v1/phone status=404 reason="no WebSocket endpoint at this path"' in refused[2]
    assert "SECRET-TOKEN-123" not in relay.logs() and "UA-SECRET" not in relay.logs()


def raw_exchange(port, data):
    """Sends data, returns everything the relay answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
        return out


def test_debug_explains_refusals_the_connection_layer_makes(relay_factory):
    relay = relay_factory("--log-level", "debug", "--max-header-bytes", "2048")
    assert raw_exchange(relay.port, b"BREW /pot HTCPCP/1.0\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    relay.wait_log("msg=request_refused status=400")
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 4096 + b"\r\n\r\n"
    assert raw_exchange(relay.port, big).startswith(b"HTTP/1.1 431 ")
    relay.wait_log("msg=request_refused status=431")
    refused = lines(relay, "msg=request_refused")
    assert ('level=DEBUG msg=request_refused status=400 reason="malformed HTTP request" '
            'remote=127.0.0.1') in refused[0]
    assert 'status=431 reason="request head over --max-header-bytes"' in refused[1]
    assert "p" * 64 not in relay.logs()  # never a header value


def test_info_level_keeps_connection_refusals_silent(relay_factory):
    relay = relay_factory("--max-header-bytes", "2048")
    assert raw_exchange(relay.port, b"BREW /pot HTCPCP/1.0\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 4096 + b"\r\n\r\n"
    assert raw_exchange(relay.port, big).startswith(b"HTTP/1.1 431 ")
    assert "request_refused" not in relay.logs()


def test_info_level_keeps_header_refusals_silent(relay):
    from conftest import client_headers, upgrade_request
    h = client_headers("dbg")
    del h["X-Pyrycode-Token"]
    assert http_request(relay.port, upgrade_request("/v1/client", h))[0] == 400
    assert "upgrade_refused" not in relay.logs()  # spec §2.1: no log line at info


def test_log_level_error_hides_info_and_warn(relay_factory, tmp_path):
    conf = str(tmp_path / "relay.conf")
    write(conf, "log-level = info\n")
    relay = relay_factory("--config-file", conf)
    write(conf, "log-level = error\n")
    relay.proc.send_signal(signal.SIGHUP)
    relay.wait_log("msg=reload")

    async def go():
        b = await ws_binary(relay, "quiet")
        await b.send('{"conn_id":"client-quiet-0000000000000000","frame":1}')
        await b.close()
    run(go())
    time.sleep(0.3)
    after = relay.logs().split("msg=reload")[1]
    assert "server_claimed" not in after and "unknown_conn_id" not in after


def test_a_flooding_binary_is_collapsed(relay):
    async def go():
        b = await ws_binary(relay, "flood")
        for _ in range(3000):  # a departed conn_id, thousands of times
            await b.send('{"conn_id":"client-flood-00000000deadbeef","frame":{}}')
        await b.send("not json")  # another kind: its own first line
        await asyncio.sleep(1.2)
        await b.send('{"conn_id":"client-flood-00000000deadbeef","frame":{}}')
        for _ in range(10):
            await b.send('{"conn_id":"client-flood-00000000deadbeef","frame":{}}')
        await asyncio.sleep(0.2)
        await b.close()
    run(go())
    relay.wait_log("msg=server_released")
    unknown = lines(relay, "msg=binary_forwarder_unknown_conn_id")
    assert 2 <= len(unknown) <= 4, unknown
    assert "suppressed" not in unknown[0]  # the first is logged as before
    assert "conn_id=client-flood-00000000deadbeef" in unknown[0]
    counts = [int(re.search(r"suppressed=(\d+)", ln).group(1)) for ln in unknown[1:]]
    logged = [ln for ln in unknown if " conn_id=" in ln]  # the last one is the close flush
    assert sum(counts) + len(logged) == 3011, unknown  # every event accounted for
    assert "binary_conn_id=server-flood-" in unknown[-1]
    assert len(lines(relay, "msg=binary_forwarder_unmarshal_err")) == 1


# ---- 5. a real version everywhere ---------------------------------------------------------

def test_build_info_metric_and_healthz_agree(relay_factory):
    from prometheus_client.parser import text_string_to_metric_families
    from conftest import VERSION
    mport = free_port()
    relay = relay_factory(f"--metrics-listen=127.0.0.1:{mport}")
    _, _, body = http_request(mport, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    (sample,) = fams["pyrycode_relay_build_info"].samples
    assert sample.value == 1 and sample.labels["version"] == VERSION
    assert sample.labels["openssl"].startswith("3.") and sample.labels["libuv"].startswith("1.")
    _, _, hz = http_request(relay.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert json.loads(hz)["version"] == VERSION
    assert f"msg=ready version={VERSION}" in relay.logs()


# ---- 9. systemd readiness (sd_notify) ------------------------------------------------------

def test_sd_notify_ready_reloading_stopping(relay_factory, tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    relay = relay_factory(env={"NOTIFY_SOCKET": path})

    def recv():
        return sock.recv(4096).decode()

    first = recv()
    assert first.startswith("READY=1\n") and "STATUS=serving" in first
    # READY comes after the listener is bound: connecting works at once
    assert http_request(relay.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
    relay.proc.send_signal(signal.SIGHUP)
    msg = recv()
    assert msg.startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert recv().startswith("READY=1")
    assert relay.stop() == 0
    assert recv().startswith("STOPPING=1")
    sock.close()


def test_health_listener_serves_only_healthz(relay_factory):
    hport = free_port()
    relay = relay_factory(f"--health-listen=127.0.0.1:{hport}")
    assert lines(relay, f"msg=listening addr=127.0.0.1:{hport} kind=health")
    status, headers, body = http_request(hport, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert headers["cache-control"] == "no-store"
    for path in ("/v1/server", "/metrics", "/debug/server-ids"):
        assert http_request(hport, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 404
    r = run_relay("--insecure-listen", f"127.0.0.1:{hport}", f"--health-listen=:{hport}",
                  "--metrics-listen=", "--check-config")
    assert r.returncode == 2 and "two listeners on one address" in r.stderr


def test_fd_exhaustion_under_prlimit_then_recovery(relay_factory):
    """Real descriptor pressure: the relay's fd limit is lowered under it and
    idle clients use up the rest; it keeps running, and once the clients
    leave and the limit is back it serves again."""
    import resource
    import shutil
    if not shutil.which("prlimit"):
        pytest.skip("prlimit not installed")
    relay = relay_factory("--workers", "1", "--header-timeout", "30s")
    pid = str(relay.proc.pid)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the relay inherited these
    # only the soft limit moves: raising it back needs no privilege
    subprocess.run(["prlimit", "--pid", pid, f"--nofile=48:{hard}"], check=True)
    held = []
    try:
        for _ in range(80):  # more than the relay may open
            try:
                held.append(socket.create_connection(("127.0.0.1", relay.port), timeout=2))
            except OSError:
                break
        time.sleep(1.0)
        assert relay.proc.poll() is None
        assert "listener failed" not in relay.logs()
    finally:
        for s in held:
            s.close()
        subprocess.run(["prlimit", "--pid", pid, f"--nofile={soft}:{hard}"], check=True)
    relay.wait_log("msg=listening")  # (still the same process)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if healthz_ok(relay.port, timeout=1):
                break
        except OSError:
            pass
        time.sleep(0.2)
    assert healthz_ok(relay.port)


def test_cap_counts_a_connection_before_its_101(relay_factory):
    """A client that has read its 101 and dials again at once must find
    itself counted: the slot is taken before the 101 is written (it used
    to be taken just after, so a fast client could slip past the cap)."""
    from conftest import Raw, client_headers, server_headers

    def dial(path, headers, deadline):
        while True:  # the previous round's connections may still hold a slot
            c = Raw(relay.port, path, headers)
            if c.status == 101:
                return c
            c.close()
            assert time.time() < deadline
            time.sleep(0.01)

    relay = relay_factory("--max-connections", "2", "--workers", "2")
    for i in range(25):
        deadline = time.time() + 10
        b = dial("/v1/server", server_headers(f"race{i}"), deadline)
        p = dial("/v1/client", client_headers(f"race{i}"), deadline)
        status, _, _ = http_request(relay.port, "GET /v1/client HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 503, i  # two live WebSockets: the cap is full
        b.close()
        p.close()
