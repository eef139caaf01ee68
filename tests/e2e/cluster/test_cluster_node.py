"""Cluster mode, the node (docs/features/cluster.md): the cluster flags and
their refusals, the single-instance check with and without a bus, boot step
12b against a real 3-server NATS cluster, the node lease with readiness,
and self-fencing when the lease is lost (SIGSTOP past the lease, JetStream
quorum lost). Every relay is the real binary; every wait is bounded."""
import re
import signal
import socket
import time
import urllib.request
import uuid

import pytest

from conftest import Raw, client_headers, free_port, http_request, run_relay, server_headers, \
    upgrade_request

LEASE = "6s"  # the minimum: takeovers and fences within seconds
LISTEN = f"127.0.0.1:{free_port()}"  # never bound by these boot-only runs


def cluster_name():
    """A private cluster name per test: its streams carry the test's lease."""
    return "t" + uuid.uuid4().hex[:10]


def start(relay_factory, urls, *args, env=None, name=None, lease=LEASE):
    return relay_factory("--cluster-nats", urls, "--cluster-name", name or cluster_name(),
                         "--cluster-lease", lease, "--workers", "2", *args, env=env)


def healthz(relay):
    status, _, body = http_request(relay.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                   "Connection: close\r\n\r\n")
    return status, body


def wait_healthz(relay, want, timeout):
    deadline = time.time() + timeout
    seen = None
    while time.time() < deadline:
        seen = healthz(relay)
        if seen[0] == want:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"/healthz never answered {want} (last {seen}):\n{relay.logs()}")


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def metric(text, name):
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    assert m, f"{name} missing:\n{text}"
    return float(m.group(1))


def pair(relay, sid="s1"):
    """A binary and one phone of sid, both registered. The claim usually
    takes milliseconds; on a loaded machine a write to streams created a
    moment ago can meet their first leader election (2 s timeouts, then a
    retry), so the wait is generous."""
    b = Raw(relay.port, "/v1/server", server_headers(sid))
    relay.wait_log(f"msg=server_claimed server_id={sid} ", timeout=15)
    p = Raw(relay.port, "/v1/client", client_headers(sid))
    relay.wait_log(f"msg=phone_registered server_id={sid} ")
    return b, p


def pair_retrying(relay, sid, timeout=20.0):
    """pair() as a binary that redials: the relay is ready only once the
    records and claims streams answer, but right after quorum returns a
    leader can still change under the claim, which then fails
    (cluster_claim_failed, the binary closed 1011) as it would for a real
    binary, which redials."""
    deadline = time.monotonic() + timeout
    while True:
        b = Raw(relay.port, "/v1/server", server_headers(sid))
        try:
            relay.wait_log(f"msg=server_claimed server_id={sid} ", timeout=3)
            break
        except AssertionError:
            b.close()
            if time.monotonic() > deadline:
                raise
    p = Raw(relay.port, "/v1/client", client_headers(sid))
    relay.wait_log(f"msg=phone_registered server_id={sid} ")
    return b, p


def frames_until_close(peer, timeout=10.0):
    """(data payloads, (code, reason)) read until the close frame."""
    data = []
    while True:
        _, op, payload = peer.recv_frame(timeout)
        if op == 0x8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            return data, (code, payload[2:].decode())
        if op in (0x1, 0x2):
            data.append(payload)


# ---- flags, env and the single-instance check (no bus needed) -------------

@pytest.mark.parametrize("args,flag", [
    (["--cluster-lease", "5s"], "--cluster-lease"),
    (["--cluster-name", "a.b"], "--cluster-name"),
    (["--cluster-name", ""], "--cluster-name"),
    (["--cluster-node-name", "host.example"], "--cluster-node-name"),
    (["--cluster-replicas", "0"], "--cluster-replicas"),
    (["--cluster-replicas", "6"], "--cluster-replicas"),
    (["--cluster-ctl-threads", "0"], "--cluster-ctl-threads"),
    (["--cluster-ctl-threads", "17"], "--cluster-ctl-threads"),
    (["--cluster-nats", "http://127.0.0.1:4222"], "--cluster-nats"),
    (["--cluster-nats", "nats://a:1,,nats://b:2"], "--cluster-nats"),
    (["--cluster-connect-timeout", "0s"], "--cluster-connect-timeout"),
])
def test_bad_cluster_flag_exits_2_naming_it(args, flag):
    r = run_relay("--insecure-listen", LISTEN, *args)
    assert r.returncode == 2, r.stderr
    line = [ln for ln in r.stderr.splitlines() if "level=ERROR" in ln]
    assert line and flag in line[0], r.stderr


def test_single_instance_bypass_with_a_bus_conflicts():
    r = run_relay("--insecure-listen", LISTEN, "--cluster-nats", "nats://127.0.0.1:1",
                  env={"PYRYCODE_RELAY_SINGLE_INSTANCE": "1"})
    assert r.returncode == 2, r.stderr
    assert 'msg="refusing to start: conflicting cluster config"' in r.stderr
    assert "env_var=PYRYCODE_RELAY_SINGLE_INSTANCE" in r.stderr


def test_fly_without_a_bus_still_refuses():
    r = run_relay("--insecure-listen", LISTEN, env={"FLY_APP_NAME": "relay"})
    assert r.returncode == 2, r.stderr
    assert 'msg="refusing to start: multi-instance deploy detected"' in r.stderr


def test_unreachable_bus_exits_1_after_bounded_retry():
    t0 = time.monotonic()
    r = run_relay("--insecure-listen", LISTEN, "--cluster-nats",
                  "nats://alice:hunter2@127.0.0.1:1", "--cluster-connect-timeout", "700ms",
                  env={"FLY_APP_NAME": "relay"})
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    assert 'msg="multi-instance deploy allowed: cluster bus configured"' in r.stderr
    assert 'msg="refusing to start: cluster bus unavailable"' in r.stderr
    assert "bus=nats://127.0.0.1:1" in r.stderr
    assert "hunter2" not in r.stderr and "alice" not in r.stderr  # never log credentials
    assert took < 8, took


def test_unreadable_creds_file_exits_2(tmp_path):
    r = run_relay("--insecure-listen", LISTEN, "--cluster-nats", "nats://127.0.0.1:1",
                  env={"PYRYCODE_RELAY_NATS_CREDS": str(tmp_path / "missing.creds")})
    assert r.returncode == 2, r.stderr
    assert "env_var=PYRYCODE_RELAY_NATS_CREDS" in r.stderr
    assert "missing.creds" not in r.stderr


def test_check_config_does_not_dial_the_bus():
    r = run_relay("--insecure-listen", LISTEN, "--cluster-nats", "nats://127.0.0.1:1",
                  "--check-config")
    assert r.returncode == 0, r.stderr
    assert "cluster bus" not in r.stderr.replace("cluster bus configured", "")


# ---- against a real NATS cluster -----------------------------------------

def test_node_registers_and_is_ready(nats_cluster, relay_factory):
    mport = socket.socket()
    mport.bind(("127.0.0.1", 0))
    port = mport.getsockname()[1]
    mport.close()
    relay = start(relay_factory, nats_cluster.urls_from(0), "--metrics-listen",
                  f"127.0.0.1:{port}", env={"FLY_APP_NAME": "relay"})
    logs = relay.logs()
    assert 'msg="multi-instance deploy allowed: cluster bus configured"' in logs
    assert "msg=cluster_bus_connected" in logs
    assert re.search(r"msg=cluster_node_registered node=\S+-[0-9a-f]{8} epoch=\d+ shards=2", logs)
    # registered before anything listens
    assert logs.index("cluster_node_registered") < logs.index("msg=listening")
    # ready once the claim streams answer through their leaders: at boot
    # within R/2, else the ctl thread asks again every 250 ms (a stream just
    # created on a busy bus can take a little longer to elect its leader)
    status, body = wait_healthz(relay, 200, 5)
    assert body.startswith(b'{"status":"ok",'), body
    text = metrics(port)
    assert metric(text, "pyrycode_relay_cluster_ready") == 1
    assert 0 < metric(text, "pyrycode_relay_cluster_lease_remaining_seconds") <= 4.5
    time.sleep(1.5)  # R = 600 ms: a couple of renewals
    text = metrics(port)
    assert metric(text, 'pyrycode_relay_cluster_lease_renewals_total{outcome="ok"}') >= 1
    assert metric(text, 'pyrycode_relay_cluster_kv_ops_total{op="create",outcome="ok"}') >= 1
    assert metric(text, "pyrycode_relay_cluster_kv_jobs_waiting") == 0
    # the relay still relays, as a single node does
    b, p = pair(relay)
    p.send_frame(0x1, b'{"hello":1}')
    _, op, payload = b.recv_frame()
    assert op == 0x1 and b'"hello":1' in payload
    for peer in (b, p):
        peer.close()
    assert relay.stop() == 0
    assert "msg=cluster_node_released" in relay.logs()


def test_without_a_bus_nothing_changes(relay_factory):
    relay = relay_factory()
    status, body = healthz(relay)
    assert status == 200 and body.startswith(b'{"status":"ok",')
    assert "cluster" not in relay.logs()


def test_sigstop_past_the_lease_fences_before_forwarding(nats_cluster, relay_factory):
    relay = start(relay_factory, nats_cluster.urls_from(0))
    b, p = pair(relay)
    p.send_frame(0x1, b'{"n":"before"}')
    _, op, payload = b.recv_frame()
    assert b'"before"' in payload
    relay.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(7.0)  # past L - M = 4.5 s since the last renewal, past L itself
        p.send_frame(0x1, b'{"n":"after"}')  # waits in the kernel for the resumed relay
    finally:
        relay.proc.send_signal(signal.SIGCONT)
    data, close = frames_until_close(b)
    assert close == (1001, "shutting down")
    assert not data, data  # nothing was forwarded after the lease
    assert frames_until_close(p)[1] == (1001, "shutting down")
    relay.wait_log("msg=cluster_lease_lost", timeout=5)
    # it registers again under a new node id and serves again
    deadline = time.time() + 10
    while time.time() < deadline and relay.logs().count("msg=cluster_node_registered") < 2:
        time.sleep(0.05)
    ids = re.findall(r"msg=cluster_node_registered node=(\S+)", relay.logs())
    assert len(ids) == 2 and ids[0] != ids[1], relay.logs()
    wait_healthz(relay, 200, 10)
    b2, p2 = pair(relay, "s2")
    p2.send_frame(0x1, b'{"n":"again"}')
    assert b'"again"' in b2.recv_frame()[2]
    for peer in (b, p, b2, p2):
        peer.close()


@pytest.mark.parametrize("delay", [0.0, 0.01])
def test_sigterm_as_a_frozen_node_resumes_exits_0(nats_cluster, relay_factory, delay):
    """SIGTERM right after -CONT of a relay frozen past its lease: the ctl
    thread fences and registers again while the shards stop, and tells them
    to reopen their buses after their loops are gone (no connection to
    drain: the loops end at once). The relay still ends with exit 0 and no
    sanitizer report (relay_factory checks both); it used to abort in
    libuv's wake-up of a closed loop."""
    relay = start(relay_factory, nats_cluster.urls_from(0))
    wait_healthz(relay, 200, 5)
    relay.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(7.0)  # past the 6 s lease
    finally:
        relay.proc.send_signal(signal.SIGCONT)
    time.sleep(delay)
    assert relay.stop() == 0, relay.logs()


def test_quorum_loss_fences_then_service_returns(nats_cluster_factory, relay_factory):
    c = nats_cluster_factory()
    relay = start(relay_factory, c.urls_from(0))
    b, p = pair(relay)
    t0 = time.monotonic()
    c.kill(1)
    c.kill(2)
    status, body = wait_healthz(relay, 503, 6)
    assert b'"status":"cluster_unavailable"' in body, body
    assert time.monotonic() - t0 < 5.5
    for peer in (b, p):
        assert frames_until_close(peer)[1] == (1001, "shutting down")
    assert time.monotonic() - t0 < 8
    relay.wait_log("msg=cluster_lease_lost", timeout=5)
    assert "msg=cluster_not_ready" in relay.logs()
    # no new upgrades while fenced
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
        s.sendall(upgrade_request("/v1/server", server_headers("s3")))
        assert s.recv(64).startswith(b"HTTP/1.1 503")
    c.restart(1)
    c.restart(2)
    wait_healthz(relay, 200, 40)
    assert relay.logs().count("msg=cluster_node_registered") >= 2
    b2, p2 = pair_retrying(relay, "s4")
    for peer in (b, p, b2, p2):
        peer.close()


def test_three_nodes_booting_at_once_all_register(nats_cluster, relay_factory):
    """A fleet starting together races to create the KV streams; boot retries
    within --cluster-connect-timeout instead of refusing."""
    from .relays import start_nodes
    relays = start_nodes(relay_factory, nats_cluster, parallel=True)
    ids = set()
    for r in relays:
        ids.update(re.findall(r"msg=cluster_node_registered node=(\S+)", r.logs()))
        assert healthz(r)[0] == 200
    assert len(ids) == 3
