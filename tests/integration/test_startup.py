"""`--help` and a bad option answer without loading the numeric stack (issue 12: start-up).

Counted in imported modules, not seconds: a timed test would measure the machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import runpy, sys
sys.argv = ["run_feedback.py", *{argv!r}]
try:
    runpy.run_path("run_feedback.py", run_name="__main__")
except SystemExit:
    pass
heavy = sorted(m for m in ("numpy", "scipy", "numba", "feedback.app", "amqtt") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


def heavy_imports(*argv: str) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE.format(argv=list(argv))], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("HEAVY=")]
    return line.removeprefix("HEAVY=")


def test_help_does_not_import_numpy_scipy_or_numba() -> None:
    assert heavy_imports("--help") == ""
    assert heavy_imports("--no-such-option") == ""


def test_the_probe_sees_a_real_run_import_them() -> None:
    # Negative control: a command that does build a session does load them, so an empty
    # answer above is not the probe failing to look.
    assert "numpy" in heavy_imports("--config", "/nonexistent/vmf.toml", "--headless")
