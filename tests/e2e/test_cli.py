"""Command-line contract: Go flag syntax, exit codes, boot refusals."""
import os
import shutil
import subprocess

import pytest

from conftest import ROOT, VERSION, run_relay


def test_version():
    r = run_relay("--version")
    assert r.returncode == 0
    assert r.stdout == VERSION + "\n" and VERSION
    r = run_relay("-version")
    assert r.returncode == 0 and r.stdout == VERSION + "\n"


@pytest.mark.skipif(not shutil.which("git") or not os.path.exists(os.path.join(ROOT, ".git"))
                    or os.path.exists(os.path.join(ROOT, "VERSION")),
                    reason="not built from a git checkout")
def test_version_is_git_describe():
    described = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty", "--tags"],
                               capture_output=True, text=True).stdout.strip()
    # the tree may have become dirty (or clean) since the build
    assert VERSION.removesuffix("-dirty") == described.removesuffix("-dirty")


def version_script(tmp_path, override="", files=None, git=False):
    src = tmp_path / "src"
    src.mkdir(parents=True)
    for name, text in (files or {}).items():
        (src / name).write_text(text)
    if git:
        subprocess.run(["git", "init", "-q", str(src)], check=True)
        subprocess.run(["git", "-C", str(src), "-c", "user.email=t@t", "-c", "user.name=t",
                        "commit", "-q", "--allow-empty", "-m", "x"], check=True)
        subprocess.run(["git", "-C", str(src), "tag", "v9.8.7"], check=True)
    out = tmp_path / "version.c"
    subprocess.run(["cmake", f"-DSRC={src}", f"-DOUT={out}", f"-DOVERRIDE={override}", "-P",
                    os.path.join(ROOT, "cmake", "version.cmake")], check=True)
    text = out.read_text()
    return text.split('relay_version[] = "', 1)[1].split('"', 1)[0]


@pytest.mark.skipif(not shutil.which("cmake"), reason="cmake not installed")
def test_version_sources_in_order(tmp_path):
    assert version_script(tmp_path / "a") == "dev"  # neither VERSION nor git
    assert version_script(tmp_path / "b", files={"VERSION": "1.4.0\n"}) == "1.4.0"
    assert version_script(tmp_path / "c", override="2.0.0", files={"VERSION": "1.4.0\n"}) == "2.0.0"
    assert version_script(tmp_path / "d", override='1"; evil();') == "1___evil___"
    if shutil.which("git"):
        assert version_script(tmp_path / "e", git=True) == "v9.8.7"


def test_help_exits_0():
    for flag in ("-h", "--help", "-help"):
        r = run_relay(flag)
        assert r.returncode == 0
        assert "Usage of pyrycode-relay" in r.stderr
        assert "-insecure-listen" in r.stderr


def test_unknown_flag_exits_2():
    r = run_relay("--no-such-flag")
    assert r.returncode == 2
    assert 'err="flag provided but not defined: -no-such-flag"' in r.stderr


def test_bad_values_exit_2():
    for args in (["--heartbeat-interval=abc"], ["--max-connections", "x"],
                 ["--trust-x-forwarded-for=maybe"], ["--insecure-listen"],
                 ["--heartbeat-interval", "0s", "--insecure-listen", "127.0.0.1:1"],
                 ["--log-format", "xml", "--insecure-listen", "127.0.0.1:1"]):
        r = run_relay(*args)
        assert r.returncode == 2, (args, r.stderr)
    r = run_relay("--heartbeat-interval=abc")
    assert ('err="invalid value \\"abc\\" for flag -heartbeat-interval: parse error"'
            in r.stderr)


def test_neither_domain_nor_insecure():
    r = run_relay()
    assert r.returncode == 2
    assert ('level=ERROR msg="either --domain (for autocert) or --insecure-listen '
            '(for behind-proxy mode) must be set"') in r.stderr


def test_insecure_listen_mutually_exclusive():
    for extra in (["--http-listen", ":80"], ["--https-listen=:443"], ["--https-proxy-protocol"]):
        r = run_relay("--insecure-listen", "127.0.0.1:1", *extra)
        assert r.returncode == 2
        assert "refusing to start: --insecure-listen is mutually exclusive" in r.stderr
        assert "fix=" in r.stderr


def test_max_connections_must_be_positive():
    r = run_relay("--insecure-listen", "127.0.0.1:1", "--max-connections", "0")
    assert r.returncode == 2
    assert 'msg="refusing to start: invalid --max-connections"' in r.stderr
    assert "max-connections 0: relay: connection cap must be positive" in r.stderr


def test_invalid_listen_address():
    for addr in ("127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "[::1:80"):
        r = run_relay("--insecure-listen", addr, "--metrics-listen=")
        assert r.returncode == 2, addr
        assert 'msg="refusing to start: invalid listener address"' in r.stderr


def test_check_config():
    assert run_relay("--insecure-listen", "127.0.0.1:1", "--check-config").returncode == 0


def test_json_log_format(relay_factory):
    relay = relay_factory("--log-format", "json")
    assert '"msg":"starting"' in relay.logs()
