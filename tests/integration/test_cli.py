"""`run_feedback.py` as a user runs it: a real process, real files, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from feedback import cli

ROOT = Path(__file__).resolve().parents[2]


def run_cli(
    *args: str, tmp_path: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "run_feedback.py"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_headless_five_seconds_writes_a_report_with_reps(tmp_path: Path) -> None:
    proc = run_cli(
        "--headless",
        "--duration",
        "5",
        "--report",
        "r.json",
        "--db",
        str(tmp_path / "s.db"),
        tmp_path=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["reps"] >= 1
    assert report["samples"] == 10_000
    assert report["mqtt_published"] > 0 and report["mqtt_flushed"]
    assert report["block_compute_us_p99"] > 0
    assert report["broker"].startswith("mqtt://127.0.0.1:")


def test_bad_config_exits_2_before_anything_starts(tmp_path: Path) -> None:
    proc = run_cli(
        "--duration",
        "1",
        "--db",
        str(tmp_path / "s.db"),
        tmp_path=tmp_path,
        env={"VMF_TARGET__LOW_PCT": "250"},
    )
    assert proc.returncode == 2
    assert "target.low_pct = 250" in proc.stderr
    assert "less than or equal to 100" in proc.stderr
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--duration", "nan"),
        ("--duration", "inf"),
        ("--duration", "0"),
        ("--duration", "-5"),
        ("--duration", "1e9"),
        ("--duration", "ten"),
        ("--pain-before", "11"),
        ("--pain-before", "-1"),
        ("--pain-before", "3.5"),
    ],
)
def test_bad_numeric_flags_exit_2_before_anything_starts(
    flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "s.db"
    with pytest.raises(SystemExit) as exited:
        cli.main([flag, value, "--db", str(db)])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and repr(value) in err, err
    assert not db.exists()


def test_nan_duration_exits_2_as_a_process(tmp_path: Path) -> None:
    proc = run_cli("--duration", "nan", "--db", str(tmp_path / "s.db"), tmp_path=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "--duration" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "s.db").exists()


def test_help_documents_every_option(tmp_path: Path) -> None:
    proc = run_cli("--help", tmp_path=tmp_path)
    assert proc.returncode == 0
    for flag in (
        "--config",
        "--device",
        "--duration",
        "--headless",
        "--dashboard",
        "--broker",
        "--db",
        "--report",
    ):
        assert flag in proc.stdout


def test_sigint_and_sigterm_end_cleanly_with_session_and_report(tmp_path: Path) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        report_path = tmp_path / f"r-{sig.name}.json"
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "run_feedback.py"),
                "--headless",
                "--report",
                str(report_path),
                "--db",
                str(tmp_path / "s.db"),
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        # Wait until the session has started (its first line), then interrupt it.
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "session S" in line, line
        assert time.monotonic() < deadline
        time.sleep(1.5)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        report = json.loads(report_path.read_text())
        assert report["stopped_by"] == "signal"
        assert report["samples"] > 0


def test_verbose_shows_no_third_party_debug_lines(tmp_path: Path) -> None:
    proc = run_cli(
        "-v",
        "--headless",
        "--device",
        "sim?speed=max",
        "--duration",
        "1",
        "--db",
        str(tmp_path / "s.db"),
        tmp_path=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "transitions" not in proc.stderr and "amqtt" not in proc.stderr, proc.stderr


def test_session_lines_are_not_highlighted_on_a_colour_terminal(tmp_path: Path) -> None:
    import asyncio
    import io

    from rich.console import Console

    from config import load_settings
    from feedback import app

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=300)
    options = app.RunOptions(
        device="sim?speed=max",
        duration_s=0.5,
        db=str(tmp_path / "s.db"),
        broker="embedded",
        report=None,
        live_view=False,
    )
    report = asyncio.run(app.run(load_settings(environ={}), options, console))
    text = out.getvalue()
    assert f"session {report['session_id']}: device" in text
    assert f"session {report['session_id']} ended" in text


@pytest.mark.parametrize("name", ["Jane Doe", "JaneDoe"])
def test_patient_flag_refuses_a_name(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--patient", name, "--db", str(tmp_path / "s.db")])
    assert exited.value.code == 2
    assert "never a name" in capsys.readouterr().err
    assert not (tmp_path / "s.db").exists()


def test_patient_flag_sets_the_session_patient(tmp_path: Path) -> None:
    import sqlite3

    proc = run_cli(
        "--patient",
        "P-0042",
        "--headless",
        "--device",
        "sim?speed=max",
        "--duration",
        "0.5",
        "--db",
        str(tmp_path / "s.db"),
        tmp_path=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "envelope delay 51 ms" in proc.stderr
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("SELECT patient FROM sessions").fetchall() == [("P-0042",)]
