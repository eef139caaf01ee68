#!/usr/bin/env bash
# Installs the Debian and npm packages a target needs, only when something
# is missing. Quiet when everything is present; idempotent.
#   scripts/deps.sh build   what building and running need (make build, make run)
#   scripts/deps.sh test    that plus the test, fuzz and format tools (make test)
#   scripts/deps.sh --list build|test   print the package list, install nothing
set -euo pipefail
cd "$(dirname "$0")/.."

# Compiler, build system, and the -dev packages of the libraries the binary
# links (libsystemd for sd_notify, libnats for the cluster bus of issue #12).
BUILD_PKGS=(build-essential cmake pkg-config
            libuv1-dev libssl-dev libhttp-parser-dev libjansson-dev libcurl4-openssl-dev
            libsystemd-dev libnats-dev)
# Unit tests (cmocka), fuzzing (clang + its runtime), formatting, the ACME
# test CA, the openssl CLI the TLS tests mint certificates with, the
# independent clients of the end-to-end tests (Python websockets, Node ws),
# and the NATS servers of the cluster tests (tests/e2e/cluster).
TEST_PKGS=(clang clang-format libclang-rt-14-dev libcmocka-dev pebble openssl git
           python3 python3-pytest python3-websockets python3-prometheus-client nodejs npm
           nats-server)

list=0
if [[ "${1:-}" == --list ]]; then
    list=1
    shift
fi
case "${1:-test}" in
build) PKGS=("${BUILD_PKGS[@]}") ;;
test) PKGS=("${BUILD_PKGS[@]}" "${TEST_PKGS[@]}") ;;
*)
    echo "usage: scripts/deps.sh [--list] build|test" >&2
    exit 2
    ;;
esac
if ((list)); then
    printf '%s\n' "${PKGS[@]}"
    exit 0
fi

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        # nodejs/npm may come from outside Debian (a node on PATH is enough).
        if [[ "$p" == nodejs || "$p" == npm ]] && command -v "${p/nodejs/node}" >/dev/null 2>&1; then
            continue
        fi
        missing+=("$p")
    fi
done

if ((${#missing[@]})); then
    echo "deps: installing ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node test client (ws), pinned by the committed package-lock.json.
if [[ "${1:-test}" == test && -f tests/e2e/node/package-lock.json &&
      ! -d tests/e2e/node/node_modules/ws ]]; then
    echo "deps: npm ci (tests/e2e/node)"
    (cd tests/e2e/node && npm ci --silent --no-audit --no-fund >/dev/null)
fi
