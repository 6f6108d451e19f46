"""`--help` and a bad option answer without loading the numeric stack (issue 12: start-up).

Counted in imported modules, not seconds: a timed test would measure the machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, runpy, sys
for name in {preload!r}:
    __import__(name)
sys.argv = ["run_feedback.py", *{argv!r}]
try:
    runpy.run_path("run_feedback.py", run_name="__main__")
except SystemExit:
    pass
print("MODULES=" + json.dumps(sorted(sys.modules)), file=sys.stderr)
"""
HEAVY = ("numpy", "scipy", "numba", "feedback.app", "amqtt", "pydantic", "asyncio")


def modules_after(
    argv: list[str], preload: tuple[str, ...] = (), timeout_s: float = 60.0
) -> tuple[set[str], str]:
    """The modules in a fresh process after `run_feedback.py ARGV`, and its stderr."""
    probe = PROBE.format(argv=argv, preload=list(preload))
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout_s)  # fmt: skip
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("MODULES=")]
    return set(json.loads(line.removeprefix("MODULES="))), done.stderr


def heavy_imports(*argv: str) -> str:
    modules, _ = modules_after(list(argv))
    return ",".join(sorted(m for m in HEAVY if m in modules))


def test_help_does_not_import_pydantic_asyncio_or_the_numeric_stack() -> None:
    assert heavy_imports("--help") == ""
    assert heavy_imports("--no-such-option") == ""


def test_the_probe_sees_a_real_run_import_them() -> None:
    # Negative control: a command that does build a session does load them, so an empty
    # answer above is not the probe failing to look.
    loaded = heavy_imports("--config", "/nonexistent/vmf.toml", "--headless").split(",")
    assert {"numpy", "pydantic", "asyncio"} <= set(loaded)


REPLAY = ROOT / "tests" / "fixtures" / "data" / "4Nsen.txt.gz"


def mqtt_imports_of_a_replay(db: Path, preload: tuple[str, ...] = ()) -> str:
    """The MQTT libraries in the process after a headless replay at full speed (no broker)."""
    argv = ["--headless", "--db", str(db), "--device", f"replay:{REPLAY}?speed=max"]
    modules, stderr = modules_after(argv, preload, timeout_s=120.0)
    assert "ended (device_ended)" in stderr, stderr[-2000:]
    return ",".join(sorted({m.split(".")[0] for m in modules} & {"aiomqtt", "paho", "amqtt"}))


def test_a_headless_replay_does_not_import_mqtt_clients(tmp_path: Path) -> None:
    """Nothing is published, so neither aiomqtt nor paho (nor the amqtt broker) is loaded."""
    assert mqtt_imports_of_a_replay(tmp_path / "log.db") == ""


def test_the_probe_sees_an_eager_publisher_import(tmp_path: Path) -> None:
    # Negative control: the publisher module imported up front, as app.py and station.py did
    # before, and the same replay reports both clients.
    eager = ("feedback.outputs.mqtt_publisher",)
    assert mqtt_imports_of_a_replay(tmp_path / "log.db", eager) == "aiomqtt,paho"


def numba_loaded_by(device: str, db: Path, *extra: str) -> bool:
    argv = ["--headless", "--db", str(db), "--broker", "none", "--device", device, *extra]
    modules, _ = modules_after(argv, timeout_s=180.0)
    return "numba" in modules


def test_a_replay_at_full_speed_takes_the_numpy_path_and_loads_no_kernels(tmp_path: Path) -> None:
    """Its 500 ms blocks cost numpy what they cost the kernels; loading them would be most of
    the run (feedback.app._kernels_then_device). Same bits either way (test_kernels.py)."""
    assert not numba_loaded_by(f"replay:{REPLAY}?speed=max", tmp_path / "log.db")


def test_the_numba_probe_sees_a_simulated_session_load_the_kernels(tmp_path: Path) -> None:
    # Negative control: a session whose blocks are short warms the kernels before its device
    # opens, and the probe reports it (skipped where numba is not installed).
    pytest.importorskip("numba")
    assert numba_loaded_by("sim?speed=max", tmp_path / "log.db", "--duration", "1")
