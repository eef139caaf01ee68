"""Command-line contract: Go flag syntax, exit codes, boot refusals."""
from conftest import run_relay


def test_version():
    r = run_relay("--version")
    assert r.returncode == 0
    assert r.stdout == "dev\n"
    r = run_relay("-version")
    assert r.returncode == 0 and r.stdout == "dev\n"


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
