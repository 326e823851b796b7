#!/usr/bin/env bash
# Builds .venv-p4rtshell: p4runtime-shell (a supported external P4Runtime client) in a
# virtualenv of its own. It pins protobuf < 3.21 and IPython 7, which cannot live in the
# project's .venv (protobuf 6), so the interoperability test runs it as a subprocess there.
# Every package is pinned; safe to run again: it rebuilds only when the pins change.
#
#   scripts/setup_p4runtime_shell.sh [VENV_DIR]     (default: .venv-p4rtshell)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${1:-.venv-p4rtshell}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

PINS=(
    p4runtime-shell==0.0.6
    p4runtime==1.4.1
    protobuf==3.20.3
    grpcio==1.62.3
    googleapis-common-protos==1.56.4
    ipython==7.31.1
    jedi==0.17.2
    parso==0.7.1
    backcall==0.2.0
    decorator==5.1.1
    matplotlib-inline==0.1.7
    pexpect==4.9.0
    pickleshare==0.7.5
    prompt-toolkit==3.0.48
    ptyprocess==0.7.0
    pygments==2.18.0
    traitlets==5.14.3
    wcwidth==0.2.13
)

stamp=$(printf '%s\n' "$PY" "${PINS[@]}" | sha256sum | cut -c1-16)
if [[ -x "$VENV/bin/python" && "$(cat "$VENV/.stamp" 2>/dev/null)" == "$stamp" ]]; then
    exit 0
fi
echo "setup_p4runtime_shell: building $VENV (p4runtime-shell 0.0.6, pinned)"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "${PINS[@]}"
"$VENV/bin/python" -c "import p4runtime_sh.shell"
echo "$stamp" > "$VENV/.stamp"
