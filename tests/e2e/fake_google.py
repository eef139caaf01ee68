"""A stand-in for Google's OAuth2 token endpoint and the FCM HTTP v1 API,
served over HTTPS on loopback with a CA made for the test session by the
`openssl` CLI. It checks what the relay sends exactly (the RS256 assertion
with `openssl dgst -verify`, its claims, the FCM path, headers and body) and
answers from a script chosen by the device token's prefix."""
import base64
import json
import os
import ssl
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ACCESS_TOKEN = "ya29.SECRET-ACCESS-TOKEN-e2e"
PROJECT = "pyrycode-mobile"
SEND_PATH = f"/v1/projects/{PROJECT}/messages:send"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
CLIENT_EMAIL = "relay-e2e@pyrycode-mobile.iam.gserviceaccount.com"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d):
    """CA, a server certificate for 127.0.0.1 and a service-account key."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=pyrycode e2e CA", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
             "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out",
             "sa.key", cwd=d)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def _b64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class FakeGoogle:
    def __init__(self, workdir):
        self.dir = workdir
        make_pki(workdir)
        self.ca = os.path.join(workdir, "ca.pem")
        with open(os.path.join(workdir, "sa.key")) as f:
            self.private_key = f.read()
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.reset()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(workdir, "server.pem"), os.path.join(workdir, "server.key"))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.base_url = f"https://127.0.0.1:{self.port}"
        self.token_uri = self.base_url + "/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reset(self, token_mode="ok"):
        with self.lock:
            self.token_mode = token_mode
            self.token_requests = 0
            self.sends = []          # device tokens, in arrival order
            self.other_paths = []
            self.problems = []       # request-shape violations
        self.release.clear()

    def credentials(self, **override):
        doc = {"type": "service_account", "project_id": PROJECT,
               "private_key_id": "e2e-key-1", "private_key": self.private_key,
               "client_email": CLIENT_EMAIL, "client_id": "1",
               "token_uri": self.token_uri}
        doc.update(override)
        return json.dumps(doc)

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def count_sends(self, prefix=""):
        with self.lock:
            return sum(1 for t in self.sends if t.startswith(prefix))

    def wait_sends(self, n, prefix="", timeout=10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.count_sends(prefix) >= n:
                return
            time.sleep(0.02)
        raise AssertionError(f"only {self.count_sends(prefix)} of {n} sends arrived")

    def problem(self, text):
        with self.lock:
            self.problems.append(text)

    # ---- checks ---------------------------------------------------------

    def verify_assertion(self, jwt):
        parts = jwt.split(".")
        if len(parts) != 3 or "=" in jwt:
            return self.problem("assertion is not a compact JWS")
        header = json.loads(_b64url(parts[0]))
        claims = json.loads(_b64url(parts[1]))
        if header != {"alg": "RS256", "typ": "JWT", "kid": "e2e-key-1"}:
            self.problem(f"JWT header {header}")
        now = time.time()
        if (claims.get("iss") != CLIENT_EMAIL or claims.get("scope") != SCOPE
                or claims.get("aud") != self.token_uri
                or claims.get("exp", 0) - claims.get("iat", 0) != 3600
                or not now - 30 <= claims.get("iat", 0) <= now):
            self.problem(f"JWT claims {claims}")
        data = os.path.join(self.dir, f"jwt-{threading.get_ident()}.data")
        sig = data + ".sig"
        with open(data, "w") as f:
            f.write(parts[0] + "." + parts[1])
        with open(sig, "wb") as f:
            f.write(_b64url(parts[2]))
        r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", os.path.join(self.dir, "sa.pub"),
                            "-signature", sig, data], capture_output=True, text=True)
        if r.returncode != 0 or "Verified OK" not in r.stdout:
            self.problem("JWT signature does not verify")


def _make_handler(g):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, status, body=b"", headers=()):
            if isinstance(body, str):
                body = body.encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the relay gave up (timeout, shutdown)

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n).decode()
            if self.path == "/token":
                self.token(body)
            elif self.path == SEND_PATH:
                self.send(body)
            else:
                with g.lock:
                    g.other_paths.append(self.path)
                self.reply(404, "{}")

        def do_GET(self):
            with g.lock:
                g.other_paths.append(self.path)
            self.reply(404, "{}")

        def token(self, body):
            with g.lock:
                g.token_requests += 1
                mode = g.token_mode
            if self.headers.get("Content-Type") != "application/x-www-form-urlencoded":
                g.problem(f"token Content-Type {self.headers.get('Content-Type')}")
            form = urllib.parse.parse_qs(body, strict_parsing=True)
            if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
                g.problem(f"grant_type {form.get('grant_type')}")
            g.verify_assertion(form.get("assertion", ["x"])[0])
            if mode == "ok":
                self.reply(200, json.dumps({"access_token": ACCESS_TOKEN, "token_type": "Bearer",
                                            "expires_in": 3599}))
            elif mode == "401":
                self.reply(401, '{"error":"invalid_grant","error_description":"SECRET-BODY"}')
            else:
                self.reply(200, "<html>SECRET-BODY</html>")

        def send(self, body):
            try:
                token = json.loads(body)["message"]["token"]
            except (ValueError, KeyError, TypeError):
                token = "?"
            with g.lock:
                g.sends.append(token)
            want = json.dumps({"message": {"token": token, "android": {"priority": "HIGH"}}},
                              separators=(",", ":"))
            if body != want:
                g.problem(f"send body {body!r}")
            if self.headers.get("Authorization") != "Bearer " + ACCESS_TOKEN:
                g.problem("send Authorization header")
            if self.headers.get("Content-Type") != "application/json":
                g.problem(f"send Content-Type {self.headers.get('Content-Type')}")
            kind = token.split(".", 1)[0]
            if kind == "okid":
                self.reply(200, json.dumps({"name": f"projects/{PROJECT}/messages/0:1%2{token[-4:]}"}))
            elif kind == "oknoid":
                self.reply(200, json.dumps({"name": "not a valid id"}))
            elif kind == "unreg":
                self.reply(404, json.dumps({"error": {
                    "code": 404, "message": "SECRET-BODY", "status": "NOT_FOUND",
                    "details": [{"@type": FCM_ERROR, "errorCode": "UNREGISTERED"}]}}))
            elif kind == "e400":
                self.reply(400, json.dumps({"error": {"code": 400, "message": "SECRET-BODY",
                                                      "status": "INVALID_ARGUMENT"}}))
            elif kind == "e403":
                self.reply(403, json.dumps({"error": {"details": [
                    {"@type": FCM_ERROR, "errorCode": "SENDER_ID_MISMATCH"}]}}))
            elif kind == "redir":
                self.reply(307, "", [("Location", g.base_url + "/elsewhere" + SEND_PATH)])
            elif kind == "slow":
                g.release.wait(60)
                self.reply(200, "{}")
            else:
                self.reply(500, '{"error":{"message":"SECRET-BODY"}}')

    return Handler
