"""The quality detector on real EMG: quiet on clean recordings, still loud on real faults.

Before tuning (flat_uv 1.0 µV, mains_ratio 0.5) the 67 real files in ../shared/data raised
3.0 false mains flags and 0.29 false flat flags per channel-minute: EMG's own power near
50/60 Hz, and rest on a 14-bit amplifier whose step is 0.7 µV. `python -m bench.quality_realdata`
gives the figures; these fixtures are a sample of the same files.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.quality_realdata import flags_of, recordings
from config.loader import load_settings
from devices.recording_formats import Recording, load_recording
from feedback.processing.quality import Flag

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"


@pytest.mark.parametrize("mains_hz", [50, 60])  # UCI: Colombia (60 Hz); Santuz: Germany (50)
def test_no_flag_on_any_clean_fixture(mains_hz: int) -> None:
    settings = load_settings(environ={}, overrides={"quality.mains_hz": mains_hz})
    files = recordings([DATA])
    assert len(files) == 8  # 7 UCI files + the Santuz walking trial
    for path in files:
        channels, flags = flags_of(load_recording(path), settings)
        raised = {c: int(np.count_nonzero(f)) for c, f in zip(channels, flags, strict=True)}
        assert not any(raised.values()), (path.name, raised)


def with_fault(rec: Recording, channel: str, fault: np.ndarray) -> Recording:
    data = np.array(rec.data)
    data[rec.channels.index(channel)] = fault
    return replace(rec, data=data)


def test_real_faults_on_real_emg_are_still_flagged() -> None:
    """A quiet real VM (12 µV RMS) with 20 µV of 60 Hz hum, and the same electrode gone flat."""
    rec = load_recording(DATA / "4Npie.txt.gz")
    vm = np.asarray(rec.data[rec.channels.index("VM")], dtype=float)
    t = np.arange(vm.shape[0]) / rec.rate_hz
    settings = load_settings(environ={}, overrides={"quality.mains_hz": 60})
    channels, flags = flags_of(
        with_fault(rec, "VM", vm + 0.02 * np.sin(2 * np.pi * 60 * t)), settings
    )
    hum = flags[channels.index("VM")]
    assert ((hum & Flag.MAINS) != 0).mean() > 0.9
    assert not flags[channels.index("RF")].any()  # the other channels stay quiet
    off = vm.copy()
    off[5000:9000] = 0.0015  # a disconnected input reads one value
    channels, flags = flags_of(with_fault(rec, "VM", off), settings)
    flat = (flags[channels.index("VM")] & Flag.FLAT) != 0
    assert flat[5100:9000].all() and not flat[:5000].any()
