"""The key behaviours again, driven by Node's `ws` (a second independent
WebSocket implementation), through tests/e2e/node/client.js."""
import json
import os
import signal
import subprocess

import pytest

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")


def node(scenario, port):
    r = subprocess.run(["node", os.path.join(NODE_DIR, "client.js"), scenario, str(port)],
                       capture_output=True, text=True, timeout=30, cwd=NODE_DIR)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


pytestmark = pytest.mark.skipif(not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "ws")),
                                reason="npm ws not installed (run scripts/deps.sh)")


def test_route_both_ways(relay):
    out = node("route", relay.port)
    assert out["extensions"] == ""  # permessage-deflate offered and declined
    assert out["frame"] == {"hello": "from node"}
    assert out["conn_id"].startswith("client-node1-")
    assert out["reply"] == '{"ok":true}' and out["replyIsBinary"] is False
    assert out["notice"] == {"conn_id": out["conn_id"], "close_code": 1000}
    assert "NODE-SECRET" not in relay.logs()


def test_gate_400(relay):
    assert node("gate", relay.port) == {"status": 400}


def test_ping_pong_payload(relay):
    assert node("ping", relay.port) == {"pong": "node-ping-7"}


def test_oversize_1009(relay):
    assert node("oversize", relay.port)["code"] == 1009


def test_no_server_4404(relay):
    assert node("noserver", relay.port) == {"code": 4404, "reason": "no server with that id"}


def test_sigterm_1001(relay):
    proc = subprocess.Popen(["node", os.path.join(NODE_DIR, "client.js"), "wait_shutdown",
                             str(relay.port)], stdout=subprocess.PIPE, text=True, cwd=NODE_DIR)
    assert json.loads(proc.stdout.readline()) == {"ready": True}
    relay.proc.send_signal(signal.SIGTERM)
    out = json.loads(proc.stdout.readline())
    proc.wait(timeout=10)
    assert out == {"code": 1001, "reason": "shutting down"}
    assert relay.stop() == 0
