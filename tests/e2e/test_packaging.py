"""Packaging artefacts that cannot run here (no Docker engine, no systemd
as PID 1) checked as far as possible: the unit file verifies with
systemd-analyze against the real binary, and the Dockerfile's runtime stage
has the shape operators rely on."""
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from conftest import RELAY_BIN, ROOT


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_unit_verifies():
    with open(os.path.join(ROOT, "packaging", "pyrycode-relay.service")) as f:
        unit = f.read()
    for key in ("DynamicUser=yes", "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                "NoNewPrivileges=yes", "ProtectSystem=strict", "StateDirectory=pyrycode-relay",
                "LimitNOFILE=", "ExecReload=/bin/kill -HUP $MAINPID", "Type=notify",
                "EnvironmentFile=-/etc/default/pyrycode-relay", "ExecStart=@PREFIX@/bin/"):
        assert key in unit
    unit = re.sub(r"ExecStart=\S+", "ExecStart=" + RELAY_BIN, unit)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "pyrycode-relay.service")
        with open(path, "w") as f:
            f.write(unit)
        r = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_dockerfile_shape():
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        text = f.read()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages[0].startswith("debian:12") and stages[-1] == "debian:12-slim"
    runtime = text.split("FROM debian:12-slim", 1)[1]
    assert "USER 65532:65532" in runtime
    assert 'VOLUME ["/var/lib/relay/autocert"]' in runtime
    assert "EXPOSE 80 443" in runtime
    assert 'ENTRYPOINT ["/pyrycode-relay"]' in runtime
    assert "-dev" not in runtime  # only shared libraries at run time
    # every library the binary links is installed in the runtime stage
    out = subprocess.run(["ldd", RELAY_BIN], capture_output=True, text=True).stdout
    for lib, pkg in (("libuv.so.1", "libuv1"), ("libhttp_parser.so", "libhttp-parser2.9"),
                     ("libjansson.so", "libjansson4"), ("libcrypto.so.3", "libssl3"),
                     ("libssl.so.3", "libssl3"), ("libcurl.so.4", "libcurl4"),
                     ("libsystemd.so.0", "libsystemd0"), ("libnats.so", "libnats3.4")):
        if lib in out:
            assert pkg in runtime, lib
    assert "libcurl.so.4" in out and "libssl.so.3" in out  # the map above is not stale
    assert "ca-certificates" in runtime  # outbound HTTPS (ACME, FCM) verifies peers


def deps(target):
    out = subprocess.run([os.path.join(ROOT, "scripts", "deps.sh"), "--list", target],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_run_installs_only_what_building_needs():
    build, test = deps("build"), deps("test")
    assert {"build-essential", "cmake", "pkg-config", "libuv1-dev", "libssl-dev",
            "libhttp-parser-dev", "libjansson-dev", "libcurl4-openssl-dev",
            "libsystemd-dev", "libnats-dev"} <= build
    for tool in ("python3-pytest", "python3-websockets", "python3-prometheus-client", "nodejs",
                 "npm", "clang", "clang-format", "libclang-rt-14-dev", "pebble",
                 "libcmocka-dev", "nats-server"):
        assert tool not in build and tool in test, tool
    assert build <= test
    # make run / make build call the build list; make test the test list
    dry = subprocess.run(["make", "-n", "-C", ROOT, "run"], capture_output=True, text=True).stdout
    assert "scripts/deps.sh build" in dry and "scripts/deps.sh test" not in dry
    assert "-DRELAY_TESTS=OFF" in dry  # no cmocka needed to configure the release build
    dry = subprocess.run(["make", "-n", "-C", ROOT, "test"], capture_output=True, text=True).stdout
    assert "scripts/deps.sh test" in dry


def test_install_honours_prefix_and_uninstall_removes(tmp_path):
    dest = str(tmp_path / "root")
    os.makedirs(os.path.join(dest, "etc", "default"))
    mine = os.path.join(dest, "etc", "default", "pyrycode-relay")
    with open(mine, "w") as f:
        f.write("RELAY_DOMAIN=mine.example\n")
    env = dict(os.environ, MAKEFLAGS="")
    r = subprocess.run(["make", "-C", ROOT, "install", f"DESTDIR={dest}", "PREFIX=/opt/pr"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    binary = os.path.join(dest, "opt", "pr", "bin", "pyrycode-relay")
    unit = os.path.join(dest, "etc", "systemd", "system", "pyrycode-relay.service")
    assert os.access(binary, os.X_OK)
    with open(unit) as f:
        text = f.read()
    assert "ExecStart=/opt/pr/bin/pyrycode-relay --domain ${RELAY_DOMAIN}" in text
    assert "@PREFIX@" not in text
    with open(mine) as f:
        assert f.read() == "RELAY_DOMAIN=mine.example\n"  # the operator's file is kept
    r = subprocess.run(["make", "-C", ROOT, "uninstall", f"DESTDIR={dest}", "PREFIX=/opt/pr"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(binary) and not os.path.exists(unit)
    assert os.path.exists(mine)


def test_fly_toml_has_an_http_check_the_relay_answers(tmp_path):
    import shlex
    import tomllib
    from conftest import run_relay
    with open(os.path.join(ROOT, "fly.toml"), "rb") as f:
        fly = tomllib.load(f)
    argv = shlex.split(fly["processes"]["app"])
    check = fly["checks"]["healthz"]
    assert check["type"] == "http" and check["path"] == "/healthz"
    assert f"--health-listen=:{check['port']}" in argv
    published = {s["internal_port"] for s in fly["services"]}
    assert check["port"] not in published  # internal only
    tls = [s for s in fly["services"] if s["internal_port"] == 8443][0]
    assert tls["ports"][0]["handlers"] == ["proxy_proto"] and "--https-proxy-protocol" in argv
    assert fly["env"]["PYRYCODE_RELAY_SINGLE_INSTANCE"] == "1"
    # the manifest's own arguments pass the relay's startup checks on Fly
    argv = [a if not a.startswith("/var/lib/relay") else str(tmp_path / "certs") for a in argv]
    r = run_relay(*argv, "--check-config", env={"FLY_APP_NAME": "pyrycode-relay",
                                                "PYRYCODE_RELAY_SINGLE_INSTANCE": "1"})
    assert r.returncode == 0, r.stderr
