#!/usr/bin/env bash
# Checks of the Ansible collection netmigrate.core (the repo root is the collection root):
#   ansible-test sanity, ansible-test units, ansible-lint (profile: production).
#
# Usage: scripts/collection_checks.sh [all|sanity|units|lint]...   (default: all)
#
# Network: only the first run needs PyPI. ansible-test sanity runs every test in its own pinned
# virtualenv under ~/.ansible/test/venv; it bootstraps pip in them with a get-pip script from a
# host that is not reachable here, so this script writes a stand-in for that script (ensurepip,
# then pip from PyPI) and primes the venvs once. Later runs find the venvs and stay offline.
#
# ansible-test refuses to run outside .../ansible_collections/NAMESPACE/NAME/, so the collection
# content is copied into that layout in a temporary folder. A copy, not a symlink: ansible-test
# resolves the working directory (os.getcwd() follows symlinks), and only the collection's own
# content gets linted (not src/, the project's pytest suites or .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV_BIN=$ROOT/.venv/bin
PYVER=3.11
# The .venv first: its ansible-test/ansible-lint and, for `units`, its interpreter (see below).
export PATH="$VENV_BIN:$PATH"
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0

# What makes up the collection (relative to the repo root; missing entries are skipped).
CONTENT=(
    galaxy.yml README.md LICENSE .ansible-lint meta plugins roles playbooks inventory
    changelogs extensions tests/unit/plugins tests/sanity tests/integration/targets
)

steps=("$@")
[[ ${#steps[@]} -eq 0 ]] && steps=(all)
for s in "${steps[@]}"; do
    case $s in all | sanity | units | lint) ;; *)
        echo "usage: $0 [all|sanity|units|lint]..." >&2
        exit 2
        ;;
    esac
done
want() {
    local s
    for s in "${steps[@]}"; do [[ $s == all || $s == "$1" ]] && return 0; done
    return 1
}

log() { printf '== %s (%ss)\n' "$*" "$SECONDS"; }

stage_collection() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/netmigrate-collection.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
    COLL=$WORK/ansible_collections/netmigrate/core
    mkdir -p "$COLL"
    local present=() p
    for p in "${CONTENT[@]}"; do [[ -e $p ]] && present+=("$p"); done
    tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' --exclude=.pytest_cache \
        --exclude=tests/output -cf - "${present[@]}" | tar -C "$COLL" -xf -
}

# ansible-test asks for ~/.ansible/test/cache/get_pip_<pip version with _>.py; the version is the
# one ansible-test pins for its venvs (24.2 in ansible-core 2.19), read from ansible-test itself
# so an ansible-core update cannot silently leave the stand-in under a stale name.
install_get_pip_stand_in() {
    local ver
    ver=$("$VENV_BIN/python" - <<'EOF'
import types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version="3.11"))["pip"])
EOF
)
    local path=$HOME/.ansible/test/cache/get_pip_${ver//./_}.py
    mkdir -p "$(dirname "$path")"
    cat >"$path.tmp" <<'EOF'
"""Stand-in for the get-pip.py that ansible-test downloads (its host is unreachable here).

Written by netmigrate's scripts/collection_checks.sh. ansible-test runs it inside a fresh
virtualenv as: get_pip.py [pip options] pip==X.Y [--no-setuptools] [--no-wheel].
"""

import subprocess
import sys

args = sys.argv[1:]
no_setuptools = "--no-setuptools" in args
pip_args = [a for a in args if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
subprocess.check_call([sys.executable, "-m", "pip", "install", *pip_args])
if no_setuptools:
    # ensurepip of Python < 3.12 also installs setuptools; get-pip would not have.
    subprocess.call([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "setuptools"])
EOF
    mv "$path.tmp" "$path"
}

stage_collection
cd "$COLL"

if want sanity; then
    install_get_pip_stand_in
    log "ansible-test sanity --prime-venvs"
    # Quiet unless it fails: the first run prints every pip install of every sanity venv.
    if ! ansible-test sanity --prime-venvs --python "$PYVER" >"$WORK/prime.log" 2>&1; then
        cat "$WORK/prime.log"
        exit 1
    fi
    log "ansible-test sanity"
    ansible-test sanity --python "$PYVER" --color no
fi

# Units run on the origin host with the project's .venv interpreter (not --venv/--docker):
# the modules under test drive the netmigrate package, redis-py and a real redis-server, which
# only the .venv has; a --venv environment would be built from PyPI in the temporary tree on
# every run (network each time). ansible-test then installs nothing and runs
# `pytest -n auto` with its own plugins, so the .venv needs pytest-xdist.
if want units; then
    if ! "$VENV_BIN/python" -c "import xdist" 2>/dev/null; then
        log "installing pytest-xdist into .venv (ansible-test units runs pytest -n auto)"
        "$VENV_BIN/python" -m pip install -q "pytest-xdist==3.8.0"
    fi
    log "ansible-test units"
    ansible-test units --python-interpreter "$VENV_BIN/python" --python "$PYVER" --color no
fi

if want lint; then
    log "ansible-lint (production profile)"
    ANSIBLE_COLLECTIONS_PATH=$WORK ansible-lint --nocolor
fi
log "collection checks passed"
