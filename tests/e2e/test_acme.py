"""Autocert mode against a local ACME CA (Debian's pebble): the relay
obtains a certificate for relay.test over HTTP-01, caches it in
--cert-cache (0700 dir, 0600 files) chaining to pebble's root, answers
port 80 only for challenges of its own domain (never a redirect), reuses
the cache on restart, renews without a restart, retries when the CA is
unreachable while it keeps serving, stops promptly mid-issuance, and
refuses a bad cache directory with exit 1 (spec §2.5, §6.3 step 14a,
§7.1, §7.2).

Until the TLS listener is merged the relay binds no HTTPS port in this
mode; the tests only need --https-listen to be a valid free address."""
import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest
import websockets

from conftest import (RELAY_BIN, SANITIZER_MARKS, WRAP, free_port, http_request, run_relay,
                      server_headers)

DOMAIN = "relay.test"
PEBBLE = shutil.which("pebble")
CHALLTESTSRV = shutil.which("pebble-challtestsrv")

pytestmark = pytest.mark.skipif(not (PEBBLE and CHALLTESTSRV), reason="pebble not installed")


def _run(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


def _free_udp_tcp_port():
    """A port free for both TCP and UDP (the DNS server binds both)."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


def _wait(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Pebble:
    """pebble + pebble-challtestsrv (as DNS only: every name is 127.0.0.1)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pebble-")
        d = self.dir
        self.ca = os.path.join(d, "ca.pem")
        # pebble's own HTTPS certificate, from a throwaway test CA.
        _run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", f"{d}/ca.key", "-out", self.ca, "-days", "2", "-subj", "/CN=e2e CA")
        _run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{d}/srv.key", "-out", f"{d}/srv.csr", "-subj", "/CN=localhost")
        with open(f"{d}/ext.cnf", "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _run("openssl", "x509", "-req", "-in", f"{d}/srv.csr", "-CA", self.ca, "-CAkey",
             f"{d}/ca.key", "-CAcreateserial", "-out", f"{d}/srv.pem", "-days", "2", "-extfile",
             f"{d}/ext.cnf")
        self.dns_port = _free_udp_tcp_port()
        self.port = free_port()
        self.mgmt_port = free_port()
        self.http_port = free_port()  # the relay's --http-listen: pebble validates here
        with open(f"{d}/pebble.json", "w") as f:
            f.write('{"pebble": {"listenAddress": "127.0.0.1:%d", "managementListenAddress": '
                    '"127.0.0.1:%d", "certificate": "%s/srv.pem", "privateKey": "%s/srv.key", '
                    '"httpPort": %d, "tlsPort": %d, "ocspResponderURL": "", '
                    '"externalAccountBindingRequired": false}}'
                    % (self.port, self.mgmt_port, d, d, self.http_port, free_port()))
        self.chall_log = open(f"{d}/chall.log", "wb")
        self.chall = subprocess.Popen(
            [CHALLTESTSRV, "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "",
             "-tlsalpn01", "", "-management", f"127.0.0.1:{free_port()}",
             "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
            stdout=self.chall_log, stderr=subprocess.STDOUT)
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0",
                   PEBBLE_AUTHZREUSE="0")
        self.log_path = f"{d}/pebble.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PEBBLE, "-config", f"{d}/pebble.json", "-dnsserver", f"127.0.0.1:{self.dns_port}"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.ctx = ssl.create_default_context(cafile=self.ca)
        _wait(self._up, 20, "pebble")
        self.root = os.path.join(d, "root.pem")
        with open(self.root, "wb") as f:
            f.write(self.get(f"https://127.0.0.1:{self.mgmt_port}/roots/0"))

    def get(self, url):
        with urllib.request.urlopen(url, context=self.ctx, timeout=5) as r:
            return r.read()

    def _up(self):
        try:
            self.get(self.directory)
            return True
        except OSError:
            return False

    @property
    def directory(self):
        return f"https://127.0.0.1:{self.port}/dir"

    def issued(self):
        with open(self.log_path, "r", errors="replace") as f:
            return f.read().count("Issued certificate serial")

    def close(self):
        for p in (self.proc, self.chall):
            p.terminate()
            p.wait(timeout=10)
        self.log.close()
        self.chall_log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def pebble():
    p = Pebble()
    yield p
    p.close()


class AcmeRelay:
    """The relay in autocert mode (--domain relay.test) against pebble."""

    def __init__(self, pebble, cache, *extra, directory=None):
        self.http_port = pebble.http_port
        self.https_port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="relay-acme-", suffix=".log", delete=False)
        cmd = WRAP + [RELAY_BIN, "--domain", DOMAIN,
                      "--acme-directory", directory or pebble.directory,
                      "--acme-ca-bundle", pebble.ca, "--cert-cache", cache,
                      "--http-listen", f"127.0.0.1:{self.http_port}",
                      "--https-listen", f"127.0.0.1:{self.https_port}",
                      "--metrics-listen=", "--close-timeout", "500ms", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log)
        self.exit_code = None
        _wait(self._ready, 15, "relay port 80")

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"relay exited early ({self.proc.returncode}):\n{self.logs()}")
        try:
            with socket.create_connection(("127.0.0.1", self.http_port), timeout=0.2):
                return True
        except OSError:
            return False

    def logs(self):
        with open(self.log.name, "r", errors="replace") as f:
            return f.read()

    def count(self, needle):
        return self.logs().count(needle)

    def wait_count(self, needle, n, timeout=30):
        try:
            _wait(lambda: self.count(needle) >= n, timeout, needle)
        except AssertionError:
            raise AssertionError(f"{needle!r} x{n} not seen:\n{self.logs()}")

    def get(self, path, host=DOMAIN):
        raw = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        return http_request(self.http_port, raw)

    def stop(self, timeout=15):
        if self.exit_code is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            self.exit_code = self.proc.wait(timeout=timeout)
        text = self.logs()
        for mark in SANITIZER_MARKS:
            assert mark not in text, text
        os.unlink(self.log.name)
        return self.exit_code


@pytest.fixture
def cache_dir():
    d = tempfile.mkdtemp(prefix="relay-certs-")
    yield os.path.join(d, "certs")
    shutil.rmtree(d, ignore_errors=True)


def _serial(path):
    out = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-serial"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _mode(path):
    return os.stat(path).st_mode & 0o7777


def test_issues_certificate_chaining_to_pebble_root(pebble, cache_dir):
    before = pebble.issued()
    r = AcmeRelay(pebble, cache_dir)
    try:
        r.wait_count("msg=\"acme certificate obtained\" domain=relay.test not_after=", 1)
        crt = os.path.join(cache_dir, f"{DOMAIN}.crt")
        key = os.path.join(cache_dir, f"{DOMAIN}.key")
        assert _mode(cache_dir) == 0o700
        for f in (crt, key, os.path.join(cache_dir, "acme_account.key")):
            assert _mode(f) == 0o600, f
        out = subprocess.run(["openssl", "verify", "-CAfile", pebble.root, "-untrusted", crt, crt],
                             capture_output=True, text=True)
        assert out.returncode == 0 and ": OK" in out.stdout, out.stdout + out.stderr
        text = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-ext", "subjectAltName"],
                              capture_output=True, text=True, check=True).stdout
        assert "DNS:relay.test" in text
        # the key on disk is the certificate's key
        pub_c = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-pubkey"],
                               capture_output=True, check=True).stdout
        pub_k = subprocess.run(["openssl", "pkey", "-in", key, "-pubout"],
                               capture_output=True, check=True).stdout
        assert pub_c == pub_k
        assert pebble.issued() == before + 1
        assert "BEGIN" not in r.logs()  # no key or certificate material in the log
    finally:
        assert r.stop() == 0


def _served_serial(port, root):
    """Serial number of the certificate served on port for DOMAIN (verified
    against root)."""
    ctx = ssl.create_default_context(cafile=root)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=DOMAIN) as tls:
            der = tls.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"], input=der,
                         capture_output=True, check=True).stdout.decode()
    return out.strip()


def test_wss_serves_the_acme_certificate(pebble, cache_dir):
    """The certificate served on --https-listen is the ACME one, verifies
    against pebble's root, carries a relay session, and is replaced for new
    handshakes when it is renewed (no restart)."""
    r = AcmeRelay(pebble, cache_dir, "--acme-renew-before", "50000h",
                  "--acme-retry-interval", "2s")
    try:
        r.wait_count("acme certificate obtained", 1)
        crt = os.path.join(cache_dir, f"{DOMAIN}.crt")
        first = _serial(crt)
        ctx = ssl.create_default_context(cafile=pebble.root)

        async def probe():
            ws = await websockets.connect(f"wss://{DOMAIN}:{r.https_port}/v1/server", ssl=ctx,
                                          host="127.0.0.1", port=r.https_port,
                                          server_hostname=DOMAIN,
                                          extra_headers=server_headers("acme-s1"))
            await ws.close()

        asyncio.run(probe())
        r.wait_count("msg=server_claimed server_id=acme-s1", 1, timeout=5)
        if r.count("acme certificate obtained") == 1:
            assert _served_serial(r.https_port, pebble.root).lower() == first.lower()
        r.wait_count("acme certificate obtained", 2, timeout=30)
        renewed = _serial(crt)
        assert renewed != first
        deadline = time.time() + 5
        while _served_serial(r.https_port, pebble.root).lower() != renewed.lower():
            assert time.time() < deadline, "the renewed certificate is not being served"
            time.sleep(0.1)
    finally:
        assert r.stop() == 0


def test_port_80_answers_only_challenges_for_the_domain(pebble, cache_dir):
    r = AcmeRelay(pebble, cache_dir)
    try:
        challenge = "/.well-known/acme-challenge/"
        rows = [
            (challenge + "unknown-token", DOMAIN, 404),
            (challenge + "unknown-token", "RELAY.TEST", 404),
            (challenge + "unknown-token", f"{DOMAIN}:{r.http_port}", 404),
            (challenge + "unknown-token", "other.test", 403),
            (challenge + "unknown-token", "relay.test.evil.test", 403),
            (challenge + "unknown-token", "", 403),
            (challenge, DOMAIN, 404),
            ("/", DOMAIN, 404),
            ("/healthz", DOMAIN, 404),
            ("/v1/server", DOMAIN, 404),
            ("/.well-known/acme-challenge", DOMAIN, 404),
            ("/", "other.test", 404),
        ]
        for path, host, want in rows:
            status, headers, _ = r.get(path, host)
            assert status == want, (path, host, status)
            assert "location" not in headers, (path, host)
    finally:
        assert r.stop() == 0


def test_restart_reuses_the_cached_certificate(pebble, cache_dir):
    r = AcmeRelay(pebble, cache_dir)
    r.wait_count("acme certificate obtained", 1)
    assert r.stop() == 0
    crt = os.path.join(cache_dir, f"{DOMAIN}.crt")
    serial = _serial(crt)
    issued = pebble.issued()
    r = AcmeRelay(pebble, cache_dir)
    try:
        r.wait_count("msg=\"acme certificate loaded from cache\" domain=relay.test", 1, timeout=5)
        time.sleep(2)
        assert r.count("acme certificate obtained") == 0, r.logs()
        assert pebble.issued() == issued
        assert _serial(crt) == serial
    finally:
        assert r.stop() == 0


def test_renews_without_restart_and_never_loops(pebble, cache_dir):
    # pebble issues 5-year certificates; a longer renew-before makes every
    # new certificate due at once, so the relay must wait one retry
    # interval between renewals instead of spinning.
    r = AcmeRelay(pebble, cache_dir, "--acme-renew-before", "50000h",
                  "--acme-retry-interval", "2s")
    try:
        r.wait_count("acme certificate obtained", 1)
        crt = os.path.join(cache_dir, f"{DOMAIN}.crt")
        first = _serial(crt)
        r.wait_count("msg=\"acme certificate already due for renewal\"", 1, timeout=5)
        r.wait_count("acme certificate obtained", 2, timeout=30)
        assert _serial(crt) != first
        times = [line.split()[0].split("=", 1)[1] for line in r.logs().splitlines()
                 if "acme certificate obtained" in line]
        t0, t1 = (time.mktime(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S")) for t in times[:2])
        assert t1 - t0 >= 2 - 1  # whole-second timestamps
        assert "retry_in=2s" in r.logs()
        assert r.count("acme issuance failed") == 0, r.logs()
    finally:
        assert r.stop() == 0


def test_cached_certificate_within_renew_before_is_served_then_renewed(pebble, cache_dir):
    r = AcmeRelay(pebble, cache_dir)
    r.wait_count("acme certificate obtained", 1)
    assert r.stop() == 0
    r = AcmeRelay(pebble, cache_dir, "--acme-renew-before", "50000h")
    try:
        r.wait_count("acme certificate loaded from cache", 1, timeout=5)
        r.wait_count("acme certificate obtained", 1)
    finally:
        assert r.stop() == 0


def test_unreachable_directory_is_retried_with_backoff(pebble, cache_dir):
    closed = free_port()
    r = AcmeRelay(pebble, cache_dir, "--acme-retry-interval", "1s",
                  directory=f"https://127.0.0.1:{closed}/dir")
    try:
        r.wait_count("msg=\"acme issuance failed\"", 2, timeout=15)
        lines = [l for l in r.logs().splitlines() if "acme issuance failed" in l]
        assert "level=ERROR" in lines[0] and "domain=relay.test" in lines[0]
        assert "fetching the directory" in lines[0]
        assert "retry_in=1s" in lines[0] and "retry_in=2s" in lines[1], lines
        # still serving
        status, _, _ = r.get("/.well-known/acme-challenge/x")
        assert status == 404
    finally:
        assert r.stop() == 0


def test_shutdown_abandons_an_issuance_in_flight(pebble, cache_dir):
    # A "CA" that accepts TCP and never answers: the job is stuck in the
    # TLS handshake when SIGTERM arrives; the relay must still exit at once.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        r = AcmeRelay(pebble, cache_dir,
                      directory=f"https://127.0.0.1:{srv.getsockname()[1]}/dir")
        _wait(lambda: held, 5, "the relay's connection")
        time.sleep(0.3)
        t0 = time.time()
        assert r.stop(timeout=10) == 0
        assert time.time() - t0 < 4
    finally:
        stop.set()
        t.join()
        for s in held:
            s.close()
        srv.close()


# ---- step 14a: cache directory refusals (exit 1) ----------------------------

def _boot(cache, domain=DOMAIN):
    return run_relay("--domain", domain, "--cert-cache", cache,
                     "--http-listen", f"127.0.0.1:{free_port()}",
                     "--https-listen", f"127.0.0.1:{free_port()}", "--metrics-listen=",
                     "--acme-directory", "https://127.0.0.1:1/dir")


def test_cache_path_not_a_directory_exits_1(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    p = _boot(str(path))
    assert p.returncode == 1, p.stderr
    assert "level=ERROR msg=\"autocert setup failed\"" in p.stderr
    assert f"err=\"relay: cert cache path is not a directory: {path}\"" in p.stderr
    assert "msg=starting" not in p.stderr  # 14a comes before 14c


def test_foreign_owned_insecure_cache_dir_exits_1(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to chown")
    d = tmp_path / "certs"
    d.mkdir()
    os.chmod(d, 0o755)
    os.chown(d, 65534, 65534)
    p = _boot(str(d))
    assert p.returncode == 1, p.stderr
    assert ("err=\"relay: cert cache dir has insecure permissions (must be 0700): "
            f"{d} (mode 755)\"") in p.stderr
    assert _mode(d) == 0o755


def _autocert_listen(cache):
    """A real start (not --check-config, which changes nothing) against an
    ACME directory that never answers."""
    def listen(port):
        return ["--domain", DOMAIN, "--cert-cache", cache, "--https-listen", f"127.0.0.1:{port}",
                "--http-listen", f"127.0.0.1:{free_port()}",
                "--acme-directory", "https://127.0.0.1:1/dir"]
    return listen


def test_owned_insecure_cache_dir_is_tightened(relay_factory, tmp_path):
    d = tmp_path / "certs"
    d.mkdir()
    os.chmod(d, 0o755)
    relay = relay_factory(listen=_autocert_listen(str(d)))
    assert (f"level=INFO msg=\"tightened cert cache dir perms\" path={d} from=0755 to=0700"
            in relay.logs())
    assert _mode(d) == 0o700


def test_missing_cache_dir_is_created_0700(relay_factory, tmp_path):
    d = tmp_path / "a" / "b"
    relay_factory(listen=_autocert_listen(str(d)))
    assert _mode(d) == 0o700 and _mode(tmp_path / "a") == 0o700


def test_domain_that_is_not_a_dns_name_exits_1(tmp_path):
    p = _boot(str(tmp_path / "certs"), domain="../evil")
    assert p.returncode == 1, p.stderr
    assert "msg=\"autocert setup failed\"" in p.stderr
    assert "is not a DNS name" in p.stderr


def test_corrupt_account_key_exits_1(tmp_path):
    d = tmp_path / "certs"
    d.mkdir(mode=0o700)
    (d / "acme_account.key").write_text("not a key\n")
    log = tempfile.NamedTemporaryFile(prefix="relay-acme-", suffix=".log", delete=False)
    proc = subprocess.run(WRAP + [RELAY_BIN, "--domain", DOMAIN, "--cert-cache", str(d),
                                  "--http-listen", f"127.0.0.1:{free_port()}",
                                  "--https-listen", f"127.0.0.1:{free_port()}",
                                  "--metrics-listen="],
                          stderr=log, timeout=10)
    with open(log.name) as f:
        text = f.read()
    os.unlink(log.name)
    assert proc.returncode == 1, text
    assert "msg=\"autocert setup failed\"" in text
    assert "is not a PEM ECDSA P-256 private key" in text
    for mark in SANITIZER_MARKS:
        assert mark not in text, text
