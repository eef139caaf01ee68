"""Operator contract (spec §6, §8, §9): environment validation, startup
refusals with their exact lines and exit codes, admission control and the
/metrics listener scraped with a Prometheus text parser."""
import asyncio
import os
import socket
import urllib.request

import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from conftest import (EXTRA_CAPS, Raw, client_headers, free_port, http_request, run_relay,
                      server_headers)

INSECURE = ["--insecure-listen", "127.0.0.1:1", "--metrics-listen=", "--check-config"]


@pytest.mark.parametrize("var", ["PYRYCODE_RELAY_PRODUCTION", "PYRYCODE_RELAY_SINGLE_INSTANCE"])
@pytest.mark.parametrize("value", ["true", "0", " 1", "1 ", "", "PRODUCTION"])
def test_env_one_or_unset(var, value):
    r = run_relay(*INSECURE, env={var: value})
    assert r.returncode == 2
    assert 'level=ERROR msg="refusing to start: invalid env-var config"' in r.stderr
    assert f"env_var={var}" in r.stderr
    quoted = '\\"' + value + '\\"'
    assert (f'err="relay: invalid env-var config: {var}: malformed-value: '
            f'expected \\"1\\" or unset, got {quoted}"') in r.stderr


def test_fcm_credentials_value_withheld():
    secret = '{"type":"service_account","client_email":"x@y","private_key":"SECRET-KEY-MATERIAL"}'
    r = run_relay(*INSECURE, env={"PYRYCODE_RELAY_FCM_CREDENTIALS": secret})
    assert r.returncode == 2
    assert "not a service-account JSON key (value withheld)" in r.stderr
    assert "SECRET-KEY-MATERIAL" not in r.stderr and "x@y" not in r.stderr


def test_push_off_line_when_unset():
    r = run_relay(*INSECURE)
    assert r.returncode == 0
    assert 'msg="push off: PYRYCODE_RELAY_FCM_CREDENTIALS unset"' in r.stderr


def test_single_instance_matrix():
    r = run_relay(*INSECURE, env={"FLY_APP_NAME": "pyrycode-relay"})
    assert r.returncode == 2
    assert "multi-instance deploy detected" in r.stderr
    assert "PYRYCODE_RELAY_SINGLE_INSTANCE" in r.stderr
    assert "bypass_env_var=PYRYCODE_RELAY_SINGLE_INSTANCE" in r.stderr
    r = run_relay(*INSECURE, env={"FLY_APP_NAME": "pyrycode-relay",
                                  "PYRYCODE_RELAY_SINGLE_INSTANCE": "1"})
    assert r.returncode == 0, r.stderr
    r = run_relay(*INSECURE, env={"FLY_APP_NAME": ""})
    assert r.returncode == 0
    r = run_relay(*INSECURE)
    assert r.returncode == 0


def test_single_instance_bypass_starts_for_real(relay_factory):
    relay = relay_factory(env={"FLY_APP_NAME": "x", "PYRYCODE_RELAY_SINGLE_INSTANCE": "1"})
    status, _, _ = http_request(relay.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200


def test_production_refuses_insecure_listen():
    r = run_relay(*INSECURE, env={"PYRYCODE_RELAY_PRODUCTION": "1"})
    assert r.returncode == 2
    assert 'msg="refusing to start: production-mode misconfiguration"' in r.stderr
    assert ("relay: --insecure-listen is set with PYRYCODE_RELAY_PRODUCTION=1; "
            "refusing to start") in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs uid 0")
def test_production_refuses_root():
    r = run_relay("--domain", "relay.example.com", "--metrics-listen=",
                  env={"PYRYCODE_RELAY_PRODUCTION": "1"})
    assert r.returncode == 2
    assert "relay: effective uid is 0 with PYRYCODE_RELAY_PRODUCTION=1" in r.stderr
    assert "effective_uid=0" in r.stderr


@pytest.mark.skipif(not EXTRA_CAPS, reason="needs a capability-rich process")
def test_capabilities_refused():
    r = run_relay(*INSECURE, wrap=False)
    assert r.returncode == 2
    assert 'msg="refusing to start: unexpected Linux capabilities"' in r.stderr
    assert "CAP_CHOWN (bit 0)" in r.stderr and "CAP_SYS_ADMIN (bit 21)" in r.stderr
    assert "CAP_NET_BIND_SERVICE (bit 10)," not in r.stderr.split("allowlist")[0]
    # exactly NET_BIND_SERVICE is allowed
    r = subprocess_bind_only()
    assert r.returncode == 0, r.stderr


def subprocess_bind_only():
    import subprocess
    from conftest import RELAY_BIN
    return subprocess.run(["setpriv", "--bounding-set=-all,+net_bind_service", "--",
                           RELAY_BIN, *INSECURE], capture_output=True, text=True, timeout=10)


@pytest.mark.parametrize("addr", ["0.0.0.0:9090", ":9090", "localhost:9090", "10.0.0.1:9090",
                                  "127.0.0.1:0", "127.0.0.1"])
def test_metrics_listen_must_be_loopback_literal(addr):
    r = run_relay("--insecure-listen", "127.0.0.1:1", f"--metrics-listen={addr}", "--check-config")
    assert r.returncode == 2, addr
    assert 'msg="refusing to start: invalid --metrics-listen address"' in r.stderr
    assert "fix=" in r.stderr


def test_rate_limit_429(relay_factory):
    relay = relay_factory("--rate-limit-burst", "3", "--rate-limit-refill", "1h")
    for _ in range(3):
        status, _, _ = http_request(relay.port, "GET /v1/server HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 400  # admitted, then the header gate
    status, _, _ = http_request(relay.port, "GET /v1/client HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 429
    # healthz is never limited
    status, _, _ = http_request(relay.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    assert 'level=WARN msg=rate_limited remote="\\"127.0.0.1\\""' in relay.logs()


def test_rate_limit_refills(relay_factory):
    relay = relay_factory("--rate-limit-burst", "1", "--rate-limit-refill", "300ms")
    assert http_request(relay.port, "GET /v1/server HTTP/1.1\r\n\r\n")[0] == 400
    assert http_request(relay.port, "GET /v1/server HTTP/1.1\r\n\r\n")[0] == 429
    import time
    time.sleep(0.4)
    assert http_request(relay.port, "GET /v1/server HTTP/1.1\r\n\r\n")[0] == 400


def test_trust_xff_keys_on_forwarded_ip(relay_factory):
    relay = relay_factory("--rate-limit-burst", "1", "--rate-limit-refill", "1h",
                          "--trust-x-forwarded-for")
    req = "GET /v1/server HTTP/1.1\r\nX-Forwarded-For: {} , 9.9.9.9\r\n\r\n"
    assert http_request(relay.port, req.format("1.2.3.4"))[0] == 400
    assert http_request(relay.port, req.format("1.2.3.4"))[0] == 429
    assert http_request(relay.port, req.format("5.6.7.8"))[0] == 400
    assert 'remote="\\"1.2.3.4\\""' in relay.logs()


def test_conn_cap_503(relay_factory):
    relay = relay_factory("--max-connections", "2")
    b = Raw(relay.port, "/v1/server", server_headers("s1"))
    p = Raw(relay.port, "/v1/client", client_headers("s1"))
    assert b.status == 101 and p.status == 101
    status, _, _ = http_request(relay.port,
                                "GET /v1/client HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 503
    assert "level=WARN msg=conn_cap_reached path=/v1/client remote=127.0.0.1" in relay.logs()
    p.send_frame(0x8, b"\x03\xe8")
    p.recv_close()
    relay.wait_log("msg=phone_unregistered")
    import time
    deadline = time.time() + 3
    while True:  # the slot frees once the connection is gone
        r = Raw(relay.port, "/v1/client", client_headers("s1"))
        if r.status == 101:
            break
        assert time.time() < deadline
        time.sleep(0.05)


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4; charset=utf-8")
        text = resp.read().decode()
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def test_metrics_after_traffic(relay_factory):
    mport = free_port()
    relay = relay_factory(f"--metrics-listen=127.0.0.1:{mport}", "--max-phones-per-server", "1",
                          "--rate-limit-burst", "20")
    text, s = scrape(mport)
    for ep in ("server", "client"):
        for oc in ("accept", "reject_headers", "reject_409", "reject_404", "reject_429",
                   "reject_rate_limit"):
            key = ("pyrycode_relay_ws_upgrade_attempts_total", (("endpoint", ep), ("outcome", oc)))
            assert s[key] == 0
    for kind in ("no_server", "server_in_use", "phones_at_cap", "ratelimit"):
        assert s[("pyrycode_relay_register_failures_total", (("kind", kind),))] == 0
    assert "pyrycode_relay_push_wakes_total" not in text  # push is off

    async def go():
        async with websockets.connect(relay.url("/v1/server"),
                                      extra_headers=server_headers("s1")) as b:
            async with websockets.connect(relay.url("/v1/client"),
                                          extra_headers=client_headers("s1")) as p:
                extra = await websockets.connect(relay.url("/v1/client"),
                                                 extra_headers=client_headers("s1"))
                try:
                    await extra.recv()
                except websockets.exceptions.ConnectionClosed as e:
                    assert e.code == 4429
                nosrv = await websockets.connect(relay.url("/v1/client"),
                                                 extra_headers=client_headers("other"))
                try:
                    await nosrv.recv()
                except websockets.exceptions.ConnectionClosed as e:
                    assert e.code == 4404
                await p.send("1")
                cid = __import__("json").loads(await b.recv())["conn_id"]
                await b.send('{"conn_id":"%s","frame":2}' % cid)
                assert await p.recv() == "2"
                _, s2 = scrape(mport)
                assert s2[("pyrycode_relay_connected_binaries", ())] == 1
                assert s2[("pyrycode_relay_connected_phones", ())] == 1
    asyncio.run(go())
    http_request(relay.port, "GET /v1/server HTTP/1.1\r\nHost: x\r\n\r\n")  # header gate
    _, s = scrape(mport)
    up = "pyrycode_relay_ws_upgrade_attempts_total"
    assert s[(up, (("endpoint", "server"), ("outcome", "accept")))] == 1
    assert s[(up, (("endpoint", "server"), ("outcome", "reject_headers")))] == 1
    assert s[(up, (("endpoint", "client"), ("outcome", "accept")))] == 1
    assert s[(up, (("endpoint", "client"), ("outcome", "reject_429")))] == 1
    assert s[(up, (("endpoint", "client"), ("outcome", "reject_404")))] == 1
    assert s[("pyrycode_relay_register_failures_total", (("kind", "phones_at_cap"),))] == 1
    assert s[("pyrycode_relay_register_failures_total", (("kind", "no_server"),))] == 1
    fw = "pyrycode_relay_frames_forwarded_total"
    assert s[(fw, (("direction", "phone_to_binary"),))] == 1
    assert s[(fw, (("direction", "binary_to_phone"),))] == 1
    assert s[("process_resident_memory_bytes", ())] > 0
    assert s[("process_open_fds", ())] > 0
    # other paths on the metrics listener are 404
    assert http_request(mport, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 404


def test_metrics_reject_rate_limit_counted(relay_factory):
    mport = free_port()
    relay = relay_factory(f"--metrics-listen=127.0.0.1:{mport}", "--rate-limit-burst", "1",
                          "--rate-limit-refill", "1h")
    http_request(relay.port, "GET /v1/server HTTP/1.1\r\n\r\n")
    assert http_request(relay.port, "GET /v1/client HTTP/1.1\r\n\r\n")[0] == 429
    _, s = scrape(mport)
    assert s[("pyrycode_relay_ws_upgrade_attempts_total",
              (("endpoint", "client"), ("outcome", "reject_rate_limit")))] == 1
    assert s[("pyrycode_relay_register_failures_total", (("kind", "ratelimit"),))] == 1


def test_starting_metrics_listener_line(relay_factory):
    mport = free_port()
    relay = relay_factory(f"--metrics-listen=127.0.0.1:{mport}")
    assert f"msg=\"starting metrics listener\" listen=127.0.0.1:{mport}" in relay.logs()
