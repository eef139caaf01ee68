"""FCM push wake end to end (spec §10, §8.2, §11): the real relay binary
sends to a fake Google (tests/e2e/fake_google.py) over HTTPS trusted through
--outbound-ca-bundle. Covers the outcome of every scripted reply with its
log line and metric, one token fetch shared by concurrent sends, token
failures, the per-server-id rate limit, the in-flight cap with routing
unaffected while sends hang, cancellation at shutdown, the refusals and
that no secret ever reaches the relay's stderr."""
import json
import os
import re
import signal
import tempfile
import time
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Raw, client_headers, frame, free_port, server_headers
from fake_google import ACCESS_TOKEN, SEND_PATH, FakeGoogle

OUTCOMES = ("sent", "unregistered", "send_failed", "token_fetch_failed", "dropped")


@pytest.fixture(scope="module")
def google():
    with tempfile.TemporaryDirectory(prefix="fake-google-") as d:
        g = FakeGoogle(d)
        yield g
        g.close()


@pytest.fixture
def push_relay(relay_factory, google):
    """Starts a relay with push on against the fake; returns (relay, metrics_port)."""
    google.reset()
    started = []

    def start(*extra, creds=None, timeout="5s"):
        mport = free_port()
        env = {"PYRYCODE_RELAY_FCM_CREDENTIALS": creds or google.credentials(),
               "NO_PROXY": "*"}
        r = relay_factory("--metrics-listen", f"127.0.0.1:{mport}",
                          "--outbound-ca-bundle", google.ca, "--fcm-base-url", google.base_url,
                          "--push-timeout", timeout, *extra, env=env)
        started.append(r)
        return r, mport

    yield start
    for r in started:
        r.stop()
        assert_no_secrets(r.logs(), google)
    assert google.problems == [], google.problems


def assert_no_secrets(logs, google):
    assert ACCESS_TOKEN not in logs
    assert "SECRET" not in logs
    assert "PRIVATE KEY" not in logs
    for line in google.private_key.splitlines()[1:-1]:
        assert line not in logs
    for token in TOKENS_USED:
        assert token not in logs, token


TOKENS_USED = []


def token(kind):
    t = f"{kind}.{uuid.uuid4().hex}:APA91b"
    TOKENS_USED.append(t)
    return t


def fp(t):
    import hashlib
    return hashlib.sha256(t.encode()).hexdigest()[:8]


def wake_frame(t, platform="fcm"):
    return json.dumps({"push_wake": {"platform": platform, "token": t}})


def push_metrics(mport):
    text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "pyrycode_relay_push_wakes_total":
                out[s.labels["outcome"]] = s.value
    return out


def binary(relay, sid):
    b = Raw(relay.port, "/v1/server", server_headers(sid))
    assert b.status == 101
    relay.wait_log(f"msg=server_claimed server_id={sid} ")
    return b


def wait_count(relay, needle, n, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if relay.logs().count(needle) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"{needle!r} seen {relay.logs().count(needle)} times, want {n}:\n"
                         f"{relay.logs()}")


def line_for(relay, t):
    for line in relay.logs().splitlines():
        if f"token_fp={fp(t)} " in line:
            return line
    raise AssertionError(f"no outcome line for {t}:\n{relay.logs()}")


def test_push_on_exposes_outcomes_at_zero(push_relay):
    relay, mport = push_relay()
    assert "push off" not in relay.logs()
    assert push_metrics(mport) == {o: 0.0 for o in OUTCOMES}


def test_push_off_has_no_series_and_drops_wakes(relay_factory):
    mport = free_port()
    relay = relay_factory("--metrics-listen", f"127.0.0.1:{mport}")
    assert 'msg="push off: PYRYCODE_RELAY_FCM_CREDENTIALS unset"' in relay.logs()
    assert push_metrics(mport) == {}
    b = binary(relay, "s1")
    b.send_frame(0x1, wake_frame(token("okid")))
    relay.wait_log("msg=binary_forwarder_push_wake_dropped")
    assert 'err="relay: push is off"' in relay.logs()


def test_outcomes_lines_metrics_and_one_token_fetch(push_relay, google):
    relay, mport = push_relay()
    b = binary(relay, "s1")
    tokens = {k: token(k) for k in ("okid", "oknoid", "unreg", "e400", "e403", "e500")}
    for t in tokens.values():  # six at once: all queue behind one token fetch
        b.send_frame(0x1, wake_frame(t))
    wait_count(relay, "msg=push_wake_", 6)
    assert google.token_requests == 1
    assert google.count_sends() == 6

    ok = line_for(relay, tokens["okid"])
    assert re.search(r"level=INFO msg=push_wake_sent server_id=s1 token_fp=[0-9a-f]{8} "
                     r"duration=\S+ fcm_message_id=projects/pyrycode-mobile/messages/0:1%2\w{4}$",
                     ok), ok
    noid = line_for(relay, tokens["oknoid"])
    assert "msg=push_wake_sent" in noid and "fcm_message_id" not in noid
    want = {
        "unreg": "relay: fcm send failed: status 404 (NOT_FOUND, UNREGISTERED)",
        "e400": "relay: fcm send failed: status 400 (INVALID_ARGUMENT)",
        "e403": "relay: fcm send failed: status 403 (SENDER_ID_MISMATCH)",
        "e500": "relay: fcm send failed: status 500",
    }
    for kind, err in want.items():
        line = line_for(relay, tokens[kind])
        assert line.startswith("time=") and "level=WARN msg=push_wake_send_failed server_id=s1 " \
            f"token_fp={fp(tokens[kind])} duration=" in line, line
        assert line.endswith(f'err="{err}"'), line

    # the seventh within the burst window is refused for this server-id only
    b.send_frame(0x1, wake_frame(token("okid")))
    relay.wait_log('err="relay: push_wake rate-limited for server-id"')
    assert re.search(r"level=WARN msg=binary_forwarder_push_wake_dropped server_id=s1 "
                     r"binary_conn_id=server-s1-[0-9a-f]{16} "
                     r'err="relay: push_wake rate-limited for server-id"', relay.logs())
    b2 = binary(relay, "s2")
    b2.send_frame(0x1, wake_frame(token("okid")))
    wait_count(relay, "msg=push_wake_sent", 3)
    assert google.token_requests == 1  # the cached token is reused
    assert push_metrics(mport) == {"sent": 3.0, "unregistered": 1.0, "send_failed": 3.0,
                                   "token_fetch_failed": 0.0, "dropped": 1.0}


def test_redirect_and_timeout_are_send_failures(push_relay, google):
    relay, mport = push_relay(timeout="1s")
    b = binary(relay, "s1")
    redir, slow = token("redir"), token("slow")
    b.send_frame(0x1, wake_frame(redir))
    b.send_frame(0x1, wake_frame(slow))
    wait_count(relay, "msg=push_wake_send_failed", 2, timeout=10)
    assert line_for(relay, redir).endswith('err="relay: fcm send failed: status 307"')
    assert google.other_paths == []  # the redirect was not followed
    line = line_for(relay, slow)
    assert (f'err="relay: fcm send failed: Post \\"{google.base_url}{SEND_PATH}\\": '
            "Operation timed out after") in line, line
    assert push_metrics(mport)["send_failed"] == 2.0
    google.release.set()


@pytest.mark.parametrize("mode,err", [
    ("401", "relay: fcm access-token fetch failed: status 401"),
    ("garbage", "relay: fcm access-token fetch failed"),
])
def test_token_fetch_failure(push_relay, google, mode, err):
    relay, mport = push_relay()
    google.reset(token_mode=mode)
    b = binary(relay, "s1")
    t1, t2 = token("okid"), token("okid")
    # one write: both wakes are read together, so the second queues behind
    # the first one's token fetch instead of racing its failure
    b.send_raw(frame(0x1, wake_frame(t1).encode()) + frame(0x1, wake_frame(t2).encode()))
    wait_count(relay, "msg=push_wake_send_failed", 2)
    for t in (t1, t2):
        assert line_for(relay, t).endswith(f'err="{err}"')
    assert google.count_sends() == 0  # no FCM request after a token failure
    assert google.token_requests == 1
    assert push_metrics(mport)["token_fetch_failed"] == 2.0


def test_refusals_count_nothing(push_relay, google):
    relay, mport = push_relay()
    b = binary(relay, "s1")
    rows = [
        ('{"push_wake":"x"}', "relay: malformed push_wake"),
        ('{"push_wake":{"platform":"fcm","token":7}}', "relay: malformed push_wake"),
        (wake_frame(token("okid"), platform="apns"), "relay: push_wake platform not supported"),
        ('{"push_wake":{"token":"abc"}}', "relay: push_wake platform not supported"),
        ('{"push_wake":{"platform":"fcm","token":""}}', "relay: push_wake token is empty"),
    ]
    for frame, err in rows:
        b.send_frame(0x1, frame)
        relay.wait_log(f'err="{err}"')
    # a repeat of the same refusal within a second is collapsed (suppressed=N
    # on the next line, or when the binary leaves)
    assert relay.logs().count("msg=binary_forwarder_push_wake_dropped") == len(
        {err for _, err in rows})
    assert push_metrics(mport) == {o: 0.0 for o in OUTCOMES}
    assert google.token_requests == 0


def test_in_flight_cap_routing_and_shutdown(push_relay, google):
    relay, mport = push_relay(timeout="30s")
    binaries = [binary(relay, f"s{i}") for i in range(6)]
    slow = []
    for i in range(32):  # 6 per server-id stays within each bucket
        t = token("slow")
        slow.append(t)
        binaries[i // 6].send_frame(0x1, wake_frame(t))
    google.wait_sends(32, "slow.", timeout=20)
    binaries[5].send_frame(0x1, wake_frame(token("okid")))
    relay.wait_log('err="relay: push_wake in-flight cap reached"')
    assert push_metrics(mport)["dropped"] == 1.0

    # the data path does not wait for push
    p = Raw(relay.port, "/v1/client", client_headers("s0"))
    assert p.status == 101
    p.send_frame(0x1, '{"hello":1}')
    _, op, payload = binaries[0].recv_frame()
    env = json.loads(payload)
    assert env["frame"] == {"hello": 1}
    binaries[0].send_frame(0x1, json.dumps({"conn_id": env["conn_id"], "frame": {"back": 2}}))
    _, op, payload = p.recv_frame()
    assert json.loads(payload) == {"back": 2}

    relay.proc.send_signal(signal.SIGTERM)
    for peer in binaries + [p]:
        try:
            peer.recv_close()
            peer.send_frame(0x8, b"\x03\xe9")
        except (ConnectionError, OSError):
            pass
    assert relay.stop(timeout=15) == 0
    logs = relay.logs()
    cancelled = (f'err="relay: fcm send failed: Post \\"{google.base_url}{SEND_PATH}\\": '
                 'context canceled"')
    assert logs.count(cancelled) == 32, logs
    for t in slow:
        assert f"token_fp={fp(t)} " in logs
    assert logs.index(cancelled) < logs.index('msg="shutdown complete"')
    google.release.set()


def test_wakes_from_every_shard_share_one_waker(push_relay, google):
    """With several shards, binaries live on different loops; their wakes
    all reach the one waker: one token fetch, per-server-id buckets, and the
    drop lines still name the asking binary."""
    relay, mport = push_relay("--workers", "4")
    sids = [f"w{i}" for i in range(12)]
    bins = [binary(relay, sid) for sid in sids]
    for b in bins:
        b.send_frame(0x1, wake_frame(token("okid")))
    wait_count(relay, "msg=push_wake_sent", len(sids))
    assert google.token_requests == 1
    for _ in range(6):  # the first server-id spends the rest of its burst
        bins[0].send_frame(0x1, wake_frame(token("okid")))
    relay.wait_log('err="relay: push_wake rate-limited for server-id"')
    assert re.search(r"msg=binary_forwarder_push_wake_dropped server_id=w0 "
                     r"binary_conn_id=server-w0-[0-9a-f]{16} ", relay.logs())
    wait_count(relay, "msg=push_wake_sent", len(sids) + 5)
    assert push_metrics(mport)["dropped"] == 1.0
    assert push_metrics(mport)["sent"] == len(sids) + 5
