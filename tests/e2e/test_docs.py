"""The documentation's runnable examples run against the real binary."""
import os
import re
import subprocess
import sys

from conftest import ROOT


def test_readme_client_example(relay):
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    code = re.search(r"## A client in ten lines.*?```python\n(.*?)```", readme, re.S).group(1)
    body = [ln for ln in code.splitlines() if ln.strip()]
    assert len(body) <= 10, body  # it says ten lines
    code = code.replace('url="ws://127.0.0.1:8080"', f'url="ws://127.0.0.1:{relay.port}"')
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == '{"hi": "phone"}'
    assert "server_claimed server_id=my-server" in relay.logs()
    assert "checked-by-the-binary" not in relay.logs()


def test_operations_bare_metal_setpriv_line(tmp_path):
    """The documented non-root start (as nobody instead of a new user) passes
    the capability check that a root start fails."""
    import shutil
    from conftest import RELAY_BIN
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        import pytest
        pytest.skip("needs root and setpriv")
    with open(os.path.join(ROOT, "docs", "operations.md")) as f:
        doc = f.read()
    flags = re.search(r"setpriv --reuid=\S+ --regid=\S+ --init-groups \\\n(.*?) -- \\\n",
                      doc, re.S).group(1).replace("\\", " ").split()
    assert flags == ["--inh-caps=-all,+net_bind_service", "--ambient-caps=+net_bind_service",
                     "--bounding-set=-all,+net_bind_service"]
    import tempfile
    d = tempfile.mkdtemp(prefix="relay-nobody-", dir="/tmp")  # pytest's tmp is root-only
    try:
        os.chmod(d, 0o755)
        binary = os.path.join(d, "relay")
        shutil.copy(RELAY_BIN, binary)
        certs = os.path.join(d, "certs")
        os.mkdir(certs, 0o700)
        os.chown(certs, 65534, 65534)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            *flags, "--", binary, "--domain", "relay.example.com",
                            "--cert-cache", certs, "--metrics-listen=", "--check-config"],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
    finally:
        shutil.rmtree(d)
