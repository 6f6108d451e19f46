"""A station loads numba's compiled kernels before it opens its device: loading them (about
0.7 s) once a serial device streamed overflowed the simulated AVR firmware's UART buffer and
left a gap in the session (tests/firmware_c/test_avr_sim.py, seen in CI)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from config.loader import load_settings
from feedback import app
from feedback.processing import fused


async def kernels_loaded_when_the_device_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[bool]:
    """Whether numba's kernels were loaded at the moment the station opened its device (an
    offline 1 s simulated session; the process's warm-up flag reset first)."""
    from feedback import pipeline

    if fused.kernels() is None:
        pytest.skip("the numpy path (no numba or VMF_KERNELS=numpy): nothing to load")
    monkeypatch.setattr(pipeline, "_warmed", False)
    seen: list[bool] = []
    real_open = app.open_device

    def watching(spec: str, settings: Any) -> Any:
        seen.append(pipeline._warmed)
        return real_open(spec, settings)

    monkeypatch.setattr(app, "open_device", watching)
    settings = load_settings(environ={}, overrides={"session.station": "st-kernels"})
    options = app.RunOptions(device="sim", duration_s=1.0, db=str(tmp_path / "s.db"),
                             broker=app.NO_BROKER, report=None, live_view=False)  # fmt: skip
    with open(os.devnull, "w") as devnull:
        await app.run(settings, options, console=Console(file=devnull))
    return seen


async def test_the_kernels_are_loaded_before_the_device_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading them (about 0.7 s) once a serial device streamed overflowed the simulated AVR
    firmware's UART buffer: a gap in the session."""
    assert await kernels_loaded_when_the_device_opens(tmp_path, monkeypatch) == [True]


async def test_negative_control_a_station_that_loads_them_later_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "compile_kernels", lambda settings: False)
    assert await kernels_loaded_when_the_device_opens(tmp_path, monkeypatch) == [False]
