#!/usr/bin/env bash
# Installs everything NetMigrate needs on a fresh Debian machine: the system packages
# (real redis-server, ethtool for the lab's veths) and a virtualenv with pinned Python
# dependencies in .venv (the core, the bench extra and the test tooling). Safe to run again: it
# only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# debootstrap, systemd-container (systemd-nspawn) and nftables: the testbed harness's fresh hosts.
APT_PACKAGES=(redis-server redis-tools ethtool iproute2 procps debootstrap systemd-container nftables)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        echo "bootstrap: need root to install ${missing[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
# Any change to the pins, the loose lists or the package's dependencies/extras rebuilds the venv.
stamp_src=$(cat requirements/dev.lock requirements/*.in pyproject.toml | sha256sum | cut -c1-16)
if [[ ! -x .venv/bin/python || "$(cat .venv/.stamp 2>/dev/null)" != "$stamp_src" ]]; then
    echo "bootstrap: building .venv from requirements/dev.lock"
    [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r requirements/dev.lock
    # The dev venv has the core and the bench extra (dev.lock pins both).
    .venv/bin/python -m pip install -q --no-deps -e ".[bench]"
    # --no-deps trusts the lock: fail here, not in the demo, if it lost the bench extra.
    .venv/bin/python -c "import hdrh, matplotlib, numpy, PIL" || {
        echo "bootstrap: requirements/dev.lock lacks the bench extra (see requirements/bench.in)" >&2
        exit 1
    }
    echo "$stamp_src" > .venv/.stamp
fi

# The editable install must point at this checkout (another checkout's install in the same
# venv, or a stale build, would make every test run someone else's code): reinstall if not.
here=$(pwd -P)/src
if [[ "$(.venv/bin/python -c 'import netmigrate, os; print(os.path.dirname(os.path.dirname(os.path.realpath(netmigrate.__file__))))' 2>/dev/null)" != "$here" ]]; then
    echo "bootstrap: pointing the editable install of netmigrate at $here"
    .venv/bin/python -m pip install -q --no-deps --no-cache-dir --force-reinstall -e ".[bench]"
fi

# gRPC stubs are generated, never committed; this is a no-op when they are up to date.
.venv/bin/python scripts/gen_protos.py
