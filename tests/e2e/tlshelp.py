"""Helpers for the TLS and PROXY protocol end-to-end tests: a throw-away PKI
made with the openssl CLI (root CA -> intermediate -> leaf for DOMAIN), the
relay's autocert-mode listener flags, and small TLS clients (ssl module)
that reach 127.0.0.1 while naming DOMAIN in SNI and Host."""
import os
import socket
import ssl
import struct
import subprocess
import time

from conftest import free_port, read_reply

DOMAIN = "relay.test"


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class Pki:
    """root.pem trusts everything issued here; leaf(name) makes a fresh key
    and a certificate for DOMAIN, returning (chain_path, key_path) where the
    chain is leaf + intermediate."""

    def __init__(self, directory):
        self.dir = str(directory)
        d = self.dir
        with open(os.path.join(d, "ca.ext"), "w") as f:
            f.write("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
        with open(os.path.join(d, "leaf.ext"), "w") as f:
            f.write(f"subjectAltName=DNS:{DOMAIN}\nextendedKeyUsage=serverAuth\n"
                    "basicConstraints=CA:FALSE\n")
        self._key("root.key")
        _openssl("req", "-x509", "-new", "-key", "root.key", "-subj", "/CN=Relay Test Root",
                 "-days", "2", "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", "root.pem", cwd=d)
        self._key("int.key")
        _openssl("req", "-new", "-key", "int.key", "-subj", "/CN=Relay Test Intermediate",
                 "-out", "int.csr", cwd=d)
        _openssl("x509", "-req", "-in", "int.csr", "-CA", "root.pem", "-CAkey", "root.key",
                 "-set_serial", "2", "-days", "2", "-sha256", "-extfile", "ca.ext",
                 "-out", "int.pem", cwd=d)
        self.root = os.path.join(d, "root.pem")
        self.serial = 100

    def _key(self, name):
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-out", name, cwd=self.dir)

    def leaf(self, name):
        d = self.dir
        self.serial += 1
        self._key(f"{name}.key")
        _openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={DOMAIN}",
                 "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "int.pem", "-CAkey", "int.key",
                 "-set_serial", str(self.serial), "-days", "2", "-sha256",
                 "-extfile", "leaf.ext", "-out", f"{name}.crt", cwd=d)
        chain = os.path.join(d, f"{name}.chain.pem")
        with open(chain, "w") as out:
            for part in (f"{name}.crt", "int.pem"):
                with open(os.path.join(d, part)) as f:
                    out.write(f.read())
        return chain, os.path.join(d, f"{name}.key")


def tls_listen(cert, key, *extra):
    """Listener flags for autocert mode with a static certificate."""
    def listen(port):
        return ["--domain", DOMAIN, "--https-listen", f"127.0.0.1:{port}",
                "--tls-cert", cert, "--tls-key", key, *extra]
    return listen


def client_ctx(pki, alpn=("http/1.1",), **versions):
    ctx = ssl.create_default_context(cafile=pki.root)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    for k, v in versions.items():
        setattr(ctx, k, v)
    return ctx


def tls_connect(port, ctx, prefix=b"", timeout=5.0):
    """A verified TLS connection to 127.0.0.1:port for DOMAIN; prefix (a
    PROXY header) is sent in the clear first."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if prefix:
        raw.sendall(prefix)
    try:
        return ctx.wrap_socket(raw, server_hostname=DOMAIN)
    except Exception:
        raw.close()
        raise


def read_all(sock, timeout=5.0):
    """Reads until EOF; returns (data, clean) where clean means the peer
    ended with close_notify (TLS) or FIN rather than an error or reset."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except (ssl.SSLError, ConnectionResetError, OSError):
        return data, False


def https_request(port, ctx, raw, prefix=b""):
    """Sends raw request bytes over TLS; returns (status, headers, body, tls_sock)."""
    s = tls_connect(port, ctx, prefix)
    s.sendall(raw.encode() if isinstance(raw, str) else raw)
    status, headers, body = read_reply(s)
    return status, headers, body, s


def healthz(port, ctx, host=DOMAIN, prefix=b""):
    status, headers, body, s = https_request(
        port, ctx, f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n", prefix)
    s.close()
    return status, headers, body


def proxy_v2(src, dst=("127.0.0.1", 443), sport=40000, dport=443, cmd=0x1, fam=None, tlv=b""):
    """A PROXY protocol v2 header (TCP4/TCP6 by the address form)."""
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if ":" in src:
        fam = 0x21 if fam is None else fam
        body = (socket.inet_pton(socket.AF_INET6, src) +
                socket.inet_pton(socket.AF_INET6, dst[0] if ":" in dst[0] else "::1") +
                struct.pack("!HH", sport, dport))
    else:
        fam = 0x11 if fam is None else fam
        body = (socket.inet_aton(src) + socket.inet_aton(dst[0]) + struct.pack("!HH", sport, dport))
    body += tlv
    return sig + bytes([0x20 | cmd, fam]) + struct.pack("!H", len(body)) + body


def closed_silently(sock, timeout=5.0):
    """True when the peer closes without sending a byte; returns (ok, elapsed)."""
    start = time.time()
    sock.settimeout(timeout)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        data = b""
    except (socket.timeout, TimeoutError):
        return False, time.time() - start
    return data == b"", time.time() - start
