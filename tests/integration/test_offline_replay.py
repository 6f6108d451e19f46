"""A headless replay at speed=max is an offline analysis: large blocks, no broker unless asked,
and the same contractions as a replay in the usual small blocks."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from config.loader import load_settings
from devices.registry import MAX_SPEED_BLOCK_MS, open_device
from devices.replay import ReplayDevice
from feedback import app, cli

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "4Nsen.txt.gz"
FAST = f"replay:{FIXTURE}?speed=max"


def broker_for(*argv: str) -> str:
    args = cli.build_parser().parse_args(list(argv))
    settings = load_settings(environ={}, overrides={"device.spec": args.device or "sim"})
    return cli._broker(args, settings.mqtt.broker, settings.device.spec)


def test_only_a_headless_full_speed_replay_goes_without_a_broker() -> None:
    assert broker_for("--headless", "--device", FAST) == "none"
    # Asked for, or watched live, or not at full speed: the broker as configured.
    assert broker_for("--headless", "--device", FAST, "--broker", "embedded") == "embedded"
    assert broker_for("--headless", "--device", FAST, "--web") == "embedded"
    assert broker_for("--device", FAST) == "embedded"
    assert broker_for("--headless", "--device", f"replay:{FIXTURE}") == "embedded"
    assert broker_for("--headless", "--device", f"replay:{FIXTURE}?speed=1") == "embedded"
    assert broker_for("--headless", "--device", "sim?speed=max") == "embedded"


def test_a_full_speed_replay_reads_large_blocks() -> None:
    settings = load_settings(environ={})
    fast, paced = open_device(FAST, settings), open_device(f"replay:{FIXTURE}", settings)
    assert isinstance(fast, ReplayDevice) and isinstance(paced, ReplayDevice)
    rate = fast.info.rate_hz
    assert fast.block_samples == round(MAX_SPEED_BLOCK_MS * rate / 1000)
    assert paced.block_samples == round(settings.device.block_ms * rate / 1000)


def _session(tmp_path: Path, name: str, device: str, broker: str) -> dict[str, Any]:
    settings = load_settings(environ={}, protocol="free")
    report = tmp_path / f"{name}.json"
    options = app.RunOptions(
        device=device,
        duration_s=None,
        db=str(tmp_path / f"{name}.sqlite3"),
        broker=broker,
        report=report,
        live_view=False,
    )
    with open(os.devnull, "w") as devnull:
        asyncio.run(app.run(settings, options, console=Console(file=devnull)))
    out: dict[str, Any] = json.loads(report.read_text())
    return out


def test_an_offline_replay_starts_no_broker_and_counts_as_the_paced_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_broker(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an embedded broker was started")

    with monkeypatch.context() as m:
        m.setattr(app, "EmbeddedBroker", no_broker)
        offline = _session(tmp_path, "offline", FAST, "none")
    assert offline["broker"] == "none" and offline["mqtt_flushed"] is True
    assert not list(tmp_path.glob("*outbox*"))  # nothing kept for a later publish
    # The same file in the usual 10 ms blocks (at full speed too, so the test is short):
    # the processing does not depend on the block size.
    monkeypatch.setattr("devices.registry.MAX_SPEED_BLOCK_MS", 10.0)
    small = _session(tmp_path, "small", FAST, "none")
    assert offline["contractions"] == small["contractions"] and offline["contractions"]
    assert offline["samples"] == small["samples"]
