"""Helpers for tests that run several relays in cluster mode on one NATS
cluster: start them (relay i on `nats_cluster.urls_from(i)`, own server
first), stop them in parallel, read /healthz, kill or freeze one, and wait
for a log line. Every wait here is bounded."""
import contextlib
import re
import signal
import threading
import time
import uuid

from conftest import http_request

LEASE = "6s"  # the minimum --cluster-lease: takeovers and fences within seconds
LEASE_S = 6.0


def cluster_name():
    """A private cluster name per test: its streams carry the test's lease,
    so streams made by another test (another lease) never clash."""
    return "t" + uuid.uuid4().hex[:10]


def start_nodes(relay_factory, nats_cluster, *args, n=3, name=None, lease=LEASE,
                parallel=False):
    """n relays sharing one cluster name; relay i (node name r<i+1>) dials
    nats_cluster.urls_from(i). Returns [R1, R2, ...].

    One after the other by default (quicker to read in a log);
    parallel=True boots them all at once, as a fleet does: the streams'
    concurrent creation is retried within --cluster-connect-timeout
    (test_cluster_node.py checks it)."""
    name = name or cluster_name()
    out = [None] * n
    errors = []

    def one(i):
        try:
            out[i] = relay_factory("--cluster-nats", nats_cluster.urls_from(i),
                                   "--cluster-name", name, "--cluster-node-name", f"r{i + 1}",
                                   "--cluster-lease", lease, "--workers", "2", *args)
        except Exception as e:  # noqa: BLE001 - re-raised below, on the test's thread
            errors.append(e)

    if not parallel:
        for i in range(n):
            one(i)
            if errors:
                raise errors[0]
        return out
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)  # Relay() itself gives up after 15 s
    if errors:
        raise errors[0]
    assert all(out), "a relay did not start within 30 s"
    return out


def stop_nodes(relays):
    """SIGTERM every relay at once and wait (each drains in parallel); the
    relay_factory teardown then only checks the recorded exit codes."""
    threads = [threading.Thread(target=r.stop) for r in relays if r is not None]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)


def healthz(relay, timeout=5.0):
    """(status, body) of GET /healthz."""
    status, _, body = http_request(relay.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                   "Connection: close\r\n\r\n", timeout=timeout)
    return status, body


def sigkill(relay):
    """kill -9 the relay and reap it."""
    relay.proc.send_signal(signal.SIGKILL)
    relay.proc.wait(timeout=10)
    # Killed on purpose: there is no clean exit to check, so the fixture's
    # "exit code 0" check at teardown must not fail on it. (Its log is still
    # scanned for sanitizer reports.)
    relay.exit_code = 0


@contextlib.contextmanager
def frozen(relay):
    """kill -STOP the relay for the body of the with-block; -CONT on the way
    out, whatever happens, so teardown can still stop it."""
    relay.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        relay.proc.send_signal(signal.SIGCONT)


def _matcher(msg, keys):
    pats = [re.compile(r"(^|\s)msg=" + re.escape(msg) + r"(\s|$)")]
    pats += [re.compile(r"\s" + re.escape(f"{k}={v}") + r"(\s|$)") for k, v in keys.items()]
    return lambda line: all(p.search(line) for p in pats)


def log_lines(relay, msg, **keys):
    """The log lines so far of event msg carrying every key=value given
    (other keys may sit in between)."""
    match = _matcher(msg, keys)
    return [line for line in relay.logs().splitlines() if match(line)]


def log_line(relay, msg, timeout=5.0, **keys):
    """Waits for a log line of event msg carrying every key=value given and
    returns it."""
    deadline = time.time() + timeout
    while True:
        lines = log_lines(relay, msg, **keys)
        if lines:
            return lines[0]
        if time.time() >= deadline:
            raise AssertionError(f"no msg={msg} line with {keys} within {timeout} s:\n"
                                 + relay.logs()[-6000:])
        time.sleep(0.02)
