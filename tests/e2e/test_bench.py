"""bench/loadgen against the real binary: it fails fast, with the reason,
when the relay refuses connections, instead of spinning through its wave
timeouts."""
import os
import subprocess
import time

import pytest

from conftest import ROOT, free_port


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bench") / "loadgen")
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", out,
                    os.path.join(ROOT, "bench", "loadgen.c")], check=True)
    return out


def run_lg(loadgen, port, *args, timeout=20):
    t0 = time.monotonic()
    r = subprocess.run([loadgen, "--port", str(port), *args], capture_output=True, text=True,
                       timeout=timeout)
    return r, time.monotonic() - t0


def test_nothing_listening_fails_fast(loadgen):
    r, took = run_lg(loadgen, free_port(), "--scenario", "rtt", "--phones", "4", "--duration", "1")
    assert r.returncode == 1
    assert "failed during setup (first: Connection refused)" in r.stderr
    assert took < 3, took


def test_upgrades_refused_fail_fast(relay_factory, loadgen):
    relay = relay_factory("--rate-limit-burst", "0", admission=False)  # cap: default 20
    r, took = run_lg(loadgen, relay.port, "--scenario", "rtt", "--binaries", "2", "--phones",
                     "16", "--duration", "1")
    assert r.returncode == 1
    assert "upgrade refused: HTTP/1.1 503" in r.stderr and "--max-connections" in r.stderr
    assert took < 5, took


def test_a_healthy_run_reports(relay, loadgen):
    r, _ = run_lg(loadgen, relay.port, "--scenario", "rtt", "--phones", "4", "--duration", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("scenario=rtt mode=relay size=64 conns=5 open=5 ")
