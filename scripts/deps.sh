#!/usr/bin/env bash
# `make deps`: everything `make test` needs beyond the Rust toolchain and Python 3, on a fresh
# machine, so that the README's command works there and not only on a warm CI host.
#
# 1. Debian packages the tests start on loopback: redis-server (the fleet's coordinator),
#    openssl (its TLS certificates), tinyproxy (the proxy tests), chromium and tidy (the HTML
#    report's render and validation), python3-venv (the vt-py conformance venv). Installed
#    with apt-get when missing and we are root (or have password-less sudo); otherwise one
#    line naming what is missing and the command to run, and exit 1.
# 2. rustfmt and clippy (rustup components), cargo-deny (crates.io), for `make lint`.
# 3. `cargo fetch`: the crates of every target platform, which `cargo deny --offline` reads
#    (a `cargo build` fetches only this platform's).
#
# Quiet when everything is there already; safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# command -> Debian package. A python module check stands for python3-venv (Debian splits
# venv and ensurepip out of python3).
declare -A needs=(
    [redis-server]=redis-server
    [openssl]=openssl
    [tinyproxy]=tinyproxy
    [chromium]=chromium
    [tidy]=tidy
)
missing=()
for command in "${!needs[@]}"; do
    command -v "$command" >/dev/null 2>&1 || missing+=("${needs[$command]}")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)

if [ "${#missing[@]}" -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if [ "$(id -u)" = 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo)
    else
        echo "make deps: missing Debian packages: ${missing[*]}" >&2
        echo "make deps: install them with: sudo apt-get install -y ${missing[*]}   (then run make test again)" >&2
        exit 1
    fi
    echo "make deps: installing ${missing[*]} (apt-get)"
    # No service is started by a package's install script: the tests start their own servers
    # on free loopback ports (a policy-rc.d that refuses every start, removed afterwards).
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${sudo[@]}" chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    trap 'if [ "$made_policy" = 1 ]; then "${sudo[@]}" rm -f /usr/sbin/policy-rc.d; fi' EXIT
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if command -v rustup >/dev/null 2>&1; then
    for component in rustfmt clippy; do
        rustup component list --installed 2>/dev/null | grep -q "^$component" \
            || rustup component add "$component"
    done
fi
# As cargo finds it (on PATH or in $CARGO_HOME/bin, where `cargo install` puts it).
cargo deny --version >/dev/null 2>&1 || cargo install --locked --quiet cargo-deny
# Every platform's crates (cargo fetch takes no --target: all of them), for the offline check.
cargo fetch --locked --quiet
