#!/usr/bin/env bash
# Create the virtual environment and install the project with its extras, at the versions pinned
# in constraints.txt (a fresh install then gets what CI tested, not whatever was released today).
# On a fresh Debian/Ubuntu machine the venv module may be missing; install it when we can.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
extras=${3:-dev}
constraints=${4:-constraints.txt}

if ! command -v "$python" >/dev/null; then
    echo "bootstrap: $python not found; install Python 3.11 or newer" >&2
    exit 1
fi
"$python" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"bootstrap: Python 3.11 or newer is needed, this is {sys.version.split()[0]}")
PY
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3-venv
    else
        echo "bootstrap: the venv module is missing: sudo apt-get install python3-venv" >&2
        exit 1
    fi
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -c "$constraints" -e ".[${extras}]"
# Compile the per-block kernels into numba's cache now (15-20 s, once): a first session or
# test would otherwise pay it at its start (feedback/processing/fused.py).
"$venv/bin/python" -c 'from feedback.pipeline import compile_kernels; compile_kernels()'
