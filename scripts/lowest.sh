#!/usr/bin/env bash
# The lowest versions that pyproject.toml allows, in a venv of their own, through the fast test
# suite: if this passes, the lower bounds are true. `make lowest`; CI-able as it is.
# The lowest direct dependencies are resolved for the interpreter given (default: python3; use the
# oldest Python the project supports, 3.11, as old wheels stop at the Python of their day).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
venv=${2:-.venv-lowest}
shift $(($# < 2 ? $# : 2))  # the rest goes to pytest
uv=${UV:-uv}
command -v "$uv" >/dev/null || uv=.venv/bin/uv
if ! command -v "$uv" >/dev/null; then
    echo "lowest: uv not found; pip install uv (or make test first: it is in the dev extra)" >&2
    exit 1
fi
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
rm -rf "$venv"
"$uv" venv --quiet --python "$python" "$venv"
"$uv" pip compile pyproject.toml --all-extras --resolution lowest-direct --python-version "$version" \
    --no-header --annotation-style line --quiet --output-file "$venv/lowest.txt"
"$uv" pip install --quiet --python "$venv/bin/python" -r "$venv/lowest.txt" -e .
echo "lowest: Python $version with the lowest declared versions:" >&2
grep -E '# via .*vm-feedback' "$venv/lowest.txt" | sed 's/ *#.*//' | tr '\n' ' ' >&2
echo >&2
# The fast suite (not the slow or soak tests); lint and type-check stay on the locked versions.
"$venv/bin/python" -m pytest -q -p no:randomly -m "not slow and not soak" "$@"
