#!/usr/bin/env bash
# Installs the Debian and npm packages the build and tests need, only when
# something is missing. Quiet when everything is present; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake pkg-config clang clang-format libclang-rt-14-dev
      libuv1-dev libssl-dev libhttp-parser-dev libjansson-dev libcurl4-openssl-dev
      libcmocka-dev pebble openssl
      python3 python3-pytest python3-websockets python3-prometheus-client nodejs npm)

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
if [[ -f tests/e2e/node/package-lock.json && ! -d tests/e2e/node/node_modules/ws ]]; then
    echo "deps: npm ci (tests/e2e/node)"
    (cd tests/e2e/node && npm ci --silent --no-audit --no-fund >/dev/null)
fi
