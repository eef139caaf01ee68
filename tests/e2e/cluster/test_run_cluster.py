"""`make run-cluster` (scripts/run-cluster.py): it starts a 3-server NATS
cluster and three relays, prints their URLs once every /healthz is 200, the
relays carry traffic, and SIGINT stops everything it started (exit 0, no
process or temporary directory left). A relay that cannot start makes it
exit non-zero at once, again leaving nothing behind. Skipped without
nats-server (conftest.py). Every wait is bounded."""
import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import websockets

from conftest import RELAY_BIN, ROOT, client_headers, run, server_headers

from .natscluster import _die_with_parent

SCRIPT = os.path.join(ROOT, "scripts", "run-cluster.py")
READY_TIMEOUT = 90.0  # the script's own waits are bounded by --ready-timeout 60
STOP_TIMEOUT = 40.0  # relays get 15 s to drain, NATS servers 5 s, then SIGKILL


class Script:
    """scripts/run-cluster.py as a subprocess, its output collected by a
    reader thread (so a full pipe can never block it)."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(["/usr/bin/python3", SCRIPT, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, errors="replace",
                                     start_new_session=True, preexec_fn=_die_with_parent)
        self.lines = queue.Queue()
        self.text = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _drain(self, timeout):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return True
        if line is None:
            return False
        self.text += line
        return True

    def wait_for(self, needle, timeout):
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            left = deadline - time.monotonic()
            if left <= 0 or not self._drain(min(left, 0.5)):
                raise AssertionError(f"{needle!r} not printed within {timeout} s "
                                     f"(exit {self.proc.poll()}):\n{self.text}")

    def wait_exit(self, timeout):
        code = self.proc.wait(timeout=timeout)
        self.reader.join(10)
        while self._drain(0):
            pass
        return code

    def kill(self):
        """Teardown: SIGTERM (the script cleans up), SIGKILL if it hangs
        (its children follow by PR_SET_PDEATHSIG; its temp dirs stay)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.reader.join(10)
        self.proc.stdout.close()


def alive(pid):
    """True while pid is a live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def started_pids(text):
    """(relay pids, nats-server pids) as printed by the script."""
    nats = [int(p) for p in re.findall(r"^  n\d  pid (\d+)  client ", text, re.M)]
    relays = sorted({int(p) for p in re.findall(r"^  r\d  pid (\d+)", text, re.M)})
    return relays, nats


def temp_dirs(text):
    return re.findall(r"(/tmp/(?:natscluster|run-cluster)-[^\s/)]+)", text)


def assert_nothing_left(text, timeout=10.0):
    relays, nats = started_pids(text)
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in relays + nats if alive(p)]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    assert not left, f"processes outlived run-cluster: {left}\n{text}"
    dirs = [d for d in set(temp_dirs(text)) if os.path.exists(d)]
    assert not dirs, f"temporary directories left: {dirs}\n{text}"
    return relays, nats


def wait_log(path, needle, timeout=10.0):
    """A claim in cluster mode completes after the upgrade (a KV write):
    wait for the relay to log it before the other side connects."""
    deadline = time.monotonic() + timeout
    while True:
        with open(path, errors="replace") as f:
            text = f.read()
        if needle in text:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"{needle!r} not logged within {timeout} s:\n{text[-4000:]}")
        time.sleep(0.05)


def healthz(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_run_cluster_serves_and_stops_on_sigint():
    s = Script("--relay", RELAY_BIN, "--lease", "6s")
    try:
        s.wait_for("run-cluster: ready", READY_TIMEOUT)
        out = s.text
        nodes = re.findall(r"^  (r\d)  pid (\d+)\n"
                           r"      binary   (ws://127\.0\.0\.1:\d+/v1/server)\n"
                           r"      phone    (ws://127\.0\.0\.1:\d+/v1/client)\n"
                           r"      healthz  (http://127\.0\.0\.1:\d+/healthz)\n"
                           r"      metrics  (http://127\.0\.0\.1:\d+/metrics)\n"
                           r"      log      (/\S+\.log)$", out, re.M)
        assert [n[0] for n in nodes] == ["r1", "r2", "r3"], out
        nats = re.search(r"NATS client URLs: (\S+)", out)
        assert nats and len(nats.group(1).split(",")) == 3, out
        relays, nats_pids = started_pids(out)
        assert len(relays) == 3 and len(nats_pids) == 3, out
        for name, pid, _, _, health, metrics, log in nodes:
            assert healthz(health) == 200, (name, out)
            with urllib.request.urlopen(metrics, timeout=5) as r:
                assert b"pyrycode_relay_build_info" in r.read(), name
            assert os.path.exists(log), (name, log)

        _, _, binary_url, phone_url, _, _, r1_log = nodes[0]

        async def exchange():
            b = await websockets.connect(binary_url, extra_headers=server_headers("rc1"),
                                         close_timeout=0.5)
            await asyncio.to_thread(wait_log, r1_log, "msg=server_claimed server_id=rc1 ")
            p = await websockets.connect(phone_url, extra_headers=client_headers("rc1"),
                                         close_timeout=0.5)
            await asyncio.to_thread(wait_log, r1_log, "msg=phone_registered server_id=rc1 ")
            await p.send('{"hello": "binary"}')
            env = json.loads(await asyncio.wait_for(b.recv(), 10))
            assert env["frame"] == {"hello": "binary"}, env
            await b.send(json.dumps({"conn_id": env["conn_id"], "frame": {"hi": "phone"}}))
            assert json.loads(await asyncio.wait_for(p.recv(), 10)) == {"hi": "phone"}
            await p.close()
            await b.close()

        run(exchange(), timeout=30)

        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGINT)
        code = s.wait_exit(STOP_TIMEOUT)
        assert code == 0, s.text
        assert "run-cluster: stopped (exit 0)" in s.text, s.text
        assert time.monotonic() - t0 < STOP_TIMEOUT
        assert_nothing_left(s.text)
    finally:
        s.kill()


def test_run_cluster_relay_that_cannot_start():
    t0 = time.monotonic()
    s = Script("--relay", "/bin/false", "--lease", "6s")
    try:
        code = s.wait_exit(60)
        assert code == 1, s.text
        assert time.monotonic() - t0 < 60
        assert "exited with 1 while starting" in s.text, s.text
        relays, nats = assert_nothing_left(s.text)
        assert len(nats) == 3, s.text  # the cluster was started, and stopped again
    finally:
        s.kill()


def test_run_cluster_refuses_a_missing_binary():
    s = Script("--relay", "/nonexistent/pyrycode-relay")
    try:
        assert s.wait_exit(30) == 2, s.text
        assert "not found or not executable" in s.text, s.text
        assert "NATS" not in s.text, s.text  # nothing was started
    finally:
        s.kill()


def test_run_cluster_relay_that_dies_stops_everything():
    s = Script("--relay", RELAY_BIN, "--lease", "6s")
    try:
        s.wait_for("run-cluster: ready", READY_TIMEOUT)
        pid = int(re.search(r"^  r2  pid (\d+)", s.text, re.M).group(1))
        os.kill(pid, signal.SIGKILL)
        assert s.wait_exit(STOP_TIMEOUT) == 1, s.text
        assert f"r2 (pid {pid}) exited with -9" in s.text, s.text
        assert "--- r2 log" in s.text and "msg=ready" in s.text, s.text  # the log's tail
        assert_nothing_left(s.text)
    finally:
        s.kill()
