"""`run_feedback.py` as a user runs it: a real process, real files, real signals."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
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

    from config.loader import load_settings
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


# -- contractions without a protocol, and calibration from a recording, on real recordings ----

DATA = ROOT / "tests" / "fixtures" / "data"
SEATED = DATA / "4Nsen.txt.gz"  # seated knee extension: VM works with each extension


def extensions(path: Path) -> list[tuple[float, float]]:
    """The truth from the goniometer: spans (s) where the knee is more than halfway from its
    resting angle (the first second's median) to its furthest, for at least 0.3 s."""
    from devices.recording_formats import load_recording

    rec = load_recording(path)
    fx = rec.data[rec.channels.index("FX")].astype(float)
    rate = rec.rate_hz
    away = np.abs(fx - np.median(fx[: round(rate)]))
    moving = np.r_[0, (away > 0.5 * away.max()).astype(np.int8), 0]
    edges = np.flatnonzero(np.diff(moving))
    return [
        (s / rate, e / rate)
        for s, e in zip(edges[::2], edges[1::2], strict=True)
        if e - s >= 0.3 * rate
    ]


def matches_extensions(spans: list[tuple[float, float]], truth: list[tuple[float, float]]) -> bool:
    """As many contractions as extensions, each overlapping its own extension (one to one,
    in order, within 1 s: the envelope lags and VM works before the knee moves)."""
    return len(spans) == len(truth) and all(
        s - 1.0 < te and ts < e + 1.0 for (s, e), (ts, te) in zip(spans, truth, strict=True)
    )


def replay_session(tmp_path: Path, source: Path, *extra: str) -> tuple[dict[str, object], str]:
    proc = run_cli(
        "--headless",
        "--device",
        f"replay:{source}?speed=max",
        "--report",
        "r.json",
        "--db",
        str(tmp_path / "s.db"),
        *extra,
        tmp_path=tmp_path,
        env={"VMF_CALIBRATION__PROFILE_DIR": str(tmp_path / "profiles")},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads((tmp_path / "r.json").read_text()), proc.stderr + proc.stdout


def test_a_replay_counts_the_knee_extensions_the_goniometer_saw(tmp_path: Path) -> None:
    truth = extensions(SEATED)
    assert len(truth) == 4  # what anyone sees in the file's knee angle
    report, out = replay_session(tmp_path, SEATED)
    rate = 1000.0
    live = [
        (c["onset_index"] / rate, c["offset_index"] / rate) for c in report["contraction_metrics"]
    ]
    assert report["contractions"] == len(truth) and matches_extensions(live, truth)
    assert all(c["duration_s"] >= 0.5 for c in report["contraction_metrics"])  # no blips
    assert report["reps"] is None  # a replay followed no protocol: null, never 0
    offline = report["contractions_offline"]
    assert offline["count"] == len(truth) and "non-causal" in offline["method"]
    assert matches_extensions([tuple(s) for s in offline["spans_s"]], truth)
    # Uncalibrated: levels in mV, labelled; no % MVC band pretended.
    assert report["calibration"]["calibrated"] is False
    assert {c["level_unit"] for c in report["contraction_metrics"]} == {"mV"}
    assert "no reps counted (free)" in out and "uncalibrated" in out


@pytest.mark.parametrize("detector", ["always_on", "always_off"])
def test_the_extension_check_fails_for_an_always_on_or_always_off_detector(detector: str) -> None:
    """Negative controls: the same counter and the same check, fed a detector that is always
    on (one endless contraction) or always off (none), must disagree with the goniometer."""
    from feedback.processing.contraction_counter import ContractionCounter, CounterInput

    n, rate = 15_601, 1000.0
    active = np.full(n, detector == "always_on")
    env = np.ones((1, n))
    counter = ContractionCounter(rate, ("VM",), "VM")
    found = counter.process(CounterInput(0, active, env, env, env)) + counter.finish()
    spans = [(c.onset_index / rate, c.offset_index / rate) for c in found]
    assert len(found) == (1 if detector == "always_on" else 0)
    assert not matches_extensions(spans, extensions(SEATED))


def test_calibrating_from_a_recording_gives_sane_mvc_levels_and_band_cues(tmp_path: Path) -> None:
    report, out = replay_session(tmp_path, SEATED, "--calibrate-from", str(SEATED))
    assert "new from 4Nsen.txt.gz, stored in" in out
    profile = json.loads((tmp_path / "profiles" / "P-0001.json").read_text())
    stored = profile["calibrations"]["right"]
    assert stored["method"] == "recording" and stored["warnings"] == []
    assert report["calibration"]["calibrated"] is True
    metrics = report["contraction_metrics"]
    assert report["contractions"] == 4 and {c["level_unit"] for c in metrics} == {"% MVC"}
    peaks = [c["peak_pct"] for c in metrics]
    assert 95.0 <= max(peaks) <= 140.0 and min(peaks) >= 30.0  # the strongest effort is the MVC
    rest = stored["rest_mean_mv"]["VM"] / stored["mvc_mv"]["VM"] * 100
    assert 0.0 <= rest < 5.0  # rest near 0 % MVC
    with sqlite3.connect(tmp_path / "s.db") as db:
        cues = [
            json.loads(d)
            for (d,) in db.execute("SELECT detail_json FROM events WHERE kind = 'cue'")
        ]
    kinds = {c["kind"] for c in cues}
    assert "zone" in kinds and "calibration" not in kinds  # the band cue is on
    # The next session uses the stored calibration as a guided one would be used.
    again, out = replay_session(tmp_path, SEATED)
    assert again["calibration"]["source"] == "profile" and "from the recording 4Nsen" in out


def test_an_uncalibrated_replay_asks_for_a_calibration_instead_of_cueing_a_band(
    tmp_path: Path,
) -> None:
    """The control for the test above: the same replay without a calibration gives no zone
    cue, and one cue that asks for a calibration."""
    replay_session(tmp_path, SEATED)
    with sqlite3.connect(tmp_path / "s.db") as db:
        cues = [
            json.loads(d)
            for (d,) in db.execute("SELECT detail_json FROM events WHERE kind = 'cue'")
        ]
    assert "zone" not in {c["kind"] for c in cues}
    assert [c["value"] for c in cues if c["kind"] == "calibration"] == ["needed"]


def flat_recording(path: Path, seconds: float = 20.0, rate: float = 1000.0) -> Path:
    """Electrodes on a muscle that never works: amplifier noise only (2 µV RMS)."""
    rng = np.random.default_rng(3)
    t = np.arange(round(seconds * rate)) / rate
    vm = rng.normal(0.0, 0.002, t.shape[0])
    lines = ["time,VM"] + [f"{a:.3f},{b:.6f}" for a, b in zip(t, vm, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("source", ["4Npie.txt.gz", "flat"])
def test_calibrating_from_a_recording_without_a_clear_contraction_is_refused(
    tmp_path: Path, source: str
) -> None:
    ref = flat_recording(tmp_path / "flat.csv") if source == "flat" else DATA / source
    _, out = replay_session(tmp_path, SEATED, "--calibrate-from", str(ref), "--duration", "2")
    assert "VM: MVC" in out and "not clearly above rest" in out and "NOT stored" in out
    assert not (tmp_path / "profiles" / "P-0001.json").exists()
    # ... unless the user insists.
    _, out = replay_session(
        tmp_path, SEATED, "--calibrate-from", str(ref), "--accept-calibration", "--duration", "2"
    )
    assert "despite failed checks" in out
