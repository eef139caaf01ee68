"""Cluster mode over TLS (docs/features/cluster.md, "Turning it on"):
--cluster-nats-ca verifies the bus's servers, --cluster-nats-cert and
--cluster-nats-key are the client certificate for mutual TLS. One
nats-server with JetStream requires TLS and a client certificate
(`verify: true`); a throw-away PKI is made with the openssl CLI. Every relay
is the real binary; every wait is bounded."""
import os
import subprocess
import time
import urllib.request
import uuid

import pytest

from conftest import Raw, client_headers, free_port, http_request, run_relay, server_headers

from .natscluster import find_binary, free_ports

LISTEN = f"127.0.0.1:{free_port()}"  # never bound by these boot-only runs
BUS_DOWN = 'msg="refusing to start: cluster bus unavailable"'


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _key(d, name):
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name,
             cwd=d)


def _ca(d, name, cn):
    _key(d, f"{name}.key")
    _openssl("req", "-x509", "-new", "-key", f"{name}.key", "-subj", f"/CN={cn}", "-days", "2",
             "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", f"{name}.pem", cwd=d)


def _leaf(d, name, cn, ext, serial):
    _key(d, f"{name}.key")
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(ext)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={cn}", "-out", f"{name}.csr",
             cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-set_serial", str(serial), "-days", "2", "-sha256", "-extfile", f"{name}.ext",
             "-out", f"{name}.pem", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """ca.pem signs server.pem (IP:127.0.0.1) and client.pem; other.pem is a
    CA that signed neither. Returns {name: path}."""
    d = str(tmp_path_factory.mktemp("bus-pki"))
    _ca(d, "ca", "Bus Test CA")
    _ca(d, "other", "Unrelated CA")
    _leaf(d, "server", "nats-test", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
          "basicConstraints=CA:FALSE\n", 2)
    _leaf(d, "client", "relay", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n", 3)
    return {n: os.path.join(d, n) for n in ("ca.pem", "other.pem", "server.pem", "server.key",
                                            "client.pem", "client.key")}


@pytest.fixture
def tls_bus(tmp_path, pki):
    """One nats-server with JetStream (no cluster block: a single server
    runs JetStream standalone), TLS required with a client certificate
    signed by ca.pem; always stopped after the test. Its tls:// URL."""
    client, http = free_ports(2)
    conf = tmp_path / "nats.conf"
    conf.write_text("\n".join([
        f'listen: "127.0.0.1:{client}"',
        f'http: "127.0.0.1:{http}"',
        f'jetstream {{ store_dir: "{tmp_path}" }}',
        "tls {",
        f'  cert_file: "{pki["server.pem"]}"',
        f'  key_file: "{pki["server.key"]}"',
        f'  ca_file: "{pki["ca.pem"]}"',
        "  verify: true",
        "  timeout: 2",
        "}", ""]))
    log = open(tmp_path / "nats.log", "wb")
    proc = subprocess.Popen([find_binary(), "-c", str(conf)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp_path / "nats.log").read_text()
            try:
                url = f"http://127.0.0.1:{http}/healthz?js-enabled-only=true"
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "nats.log").read_text()
            time.sleep(0.05)
        yield f"tls://127.0.0.1:{client}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def tls_flags(pki, ca="ca.pem", cert=True):
    flags = ["--cluster-nats-ca", pki[ca]] if ca else []
    if cert:
        flags += ["--cluster-nats-cert", pki["client.pem"], "--cluster-nats-key", pki["client.key"]]
    return flags


def cluster_args(url, *more):
    return ["--cluster-nats", url, "--cluster-replicas", "1",
            "--cluster-name", "t" + uuid.uuid4().hex[:10], "--cluster-lease", "6s", *more]


def refused(r, code):
    assert r.returncode == code, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "level=ERROR" in ln]
    assert len(errors) == 1, r.stderr
    return errors[0]


def test_mutual_tls_bus_serves(tls_bus, pki, relay_factory):
    relay = relay_factory(*cluster_args(tls_bus, *tls_flags(pki)), "--workers", "2")
    logs = relay.logs()
    assert f"msg=cluster_bus_connected bus={tls_bus} " in logs
    assert "PRIVATE KEY" not in logs  # never the key's contents
    # Ready once every shard's data connection has finished its handshake too.
    deadline = time.monotonic() + 10
    while True:
        status, _, body = http_request(relay.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                       "Connection: close\r\n\r\n")
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == 200 and body.startswith(b'{"status":"ok",'), (body, relay.logs())
    b = Raw(relay.port, "/v1/server", server_headers("s1"))
    relay.wait_log("msg=server_claimed server_id=s1 ")
    p = Raw(relay.port, "/v1/client", client_headers("s1"))
    relay.wait_log("msg=phone_registered server_id=s1 ")
    p.send_frame(0x1, b'"over tls"')
    _, op, payload = b.recv_frame(10)
    assert op == 0x1 and payload.endswith(b',"frame":"over tls"}'), payload
    b.close()
    p.close()


def test_without_the_ca_the_server_is_not_trusted(tls_bus, pki):
    r = run_relay("--insecure-listen", LISTEN,
                  *cluster_args(tls_bus, *tls_flags(pki, ca=None), "--cluster-connect-timeout",
                                "2s"), timeout=20)
    line = refused(r, 1)
    assert BUS_DOWN in line and "certificate" in line, line


def test_a_ca_that_did_not_sign_the_server_is_refused(tls_bus, pki):
    r = run_relay("--insecure-listen", LISTEN,
                  *cluster_args(tls_bus, *tls_flags(pki, ca="other.pem"),
                                "--cluster-connect-timeout", "2s"), timeout=20)
    line = refused(r, 1)
    assert BUS_DOWN in line, line
    assert "SSL handshake error" in line and "unable to get local issuer certificate" in line, line


def test_without_a_client_certificate_the_server_hangs_up(tls_bus, pki):
    r = run_relay("--insecure-listen", LISTEN,
                  *cluster_args(tls_bus, *tls_flags(pki, cert=False),
                                "--cluster-connect-timeout", "2s"), timeout=20)
    assert BUS_DOWN in refused(r, 1)


def test_a_ca_file_that_is_not_pem_is_cnats_error(tmp_path, tls_bus, pki):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    r = run_relay("--insecure-listen", LISTEN,
                  *cluster_args(tls_bus, "--cluster-nats-ca", str(junk),
                                "--cluster-connect-timeout", "2s"), timeout=20)
    line = refused(r, 1)
    assert BUS_DOWN in line and "Error loading trusted certificates" in line, line


@pytest.mark.parametrize("flag", ["--cluster-nats-ca", "--cluster-nats-cert", "--cluster-nats-key"])
def test_unreadable_file_exits_2_naming_the_flag(tmp_path, pki, flag):
    given = {"--cluster-nats-ca": pki["ca.pem"], "--cluster-nats-cert": pki["client.pem"],
             "--cluster-nats-key": pki["client.key"]}
    given[flag] = str(tmp_path / "missing.pem")
    args = [a for kv in given.items() for a in kv]
    r = run_relay("--insecure-listen", LISTEN, "--cluster-nats", "tls://127.0.0.1:1", *args)
    line = refused(r, 2)
    assert 'msg="refusing to start: invalid flag value"' in line, line
    assert f"flag={flag}" in line and "missing.pem" in line, line
    # --check-config runs the same checks
    r = run_relay("--insecure-listen", LISTEN, "--cluster-nats", "tls://127.0.0.1:1", *args,
                  "--check-config")
    assert r.returncode == 2 and f"flag={flag}" in r.stderr, r.stderr


def test_a_directory_is_not_a_ca_file(tmp_path):
    r = run_relay("--insecure-listen", LISTEN, "--cluster-nats", "tls://127.0.0.1:1",
                  "--cluster-nats-ca", str(tmp_path))
    line = refused(r, 2)
    assert "flag=--cluster-nats-ca" in line and "not a regular file" in line, line


@pytest.mark.parametrize("given", ["--cluster-nats-cert", "--cluster-nats-key"])
def test_cert_without_key_exits_2_naming_both(pki, given):
    r = run_relay("--insecure-listen", LISTEN, "--cluster-nats", "tls://127.0.0.1:1",
                  "--cluster-nats-ca", pki["ca.pem"], given, pki["client.pem"])
    line = refused(r, 2)
    assert 'msg="refusing to start: invalid flag value"' in line, line
    assert "--cluster-nats-cert" in line and "--cluster-nats-key" in line, line


def test_tls_flags_without_a_bus_are_checked_not_used(pki):
    """Like the other cluster flags: the pair rule holds with the cluster
    off (a typo is found before the day it is turned on); the files are only
    opened with a bus, and no NATS call is made."""
    r = run_relay("--insecure-listen", LISTEN, "--cluster-nats-cert", pki["client.pem"])
    assert r.returncode == 2 and "--cluster-nats-key" in r.stderr, r.stderr
    r = run_relay("--insecure-listen", LISTEN, "--cluster-nats-ca", "/nonexistent/ca.pem",
                  "--check-config")
    assert r.returncode == 0, r.stderr
