"""The session pipeline settles the first contraction of an uncalibrated session (the counter
gets the activation detector's on levels, docs/activation.md), and only then.

On the 4Nsen fixture replayed uncalibrated (the newcomer's report), the first contraction was
reported from 1.552 s for 2.05 s; settled it starts at 2.307 s and lasts 1.30 s, like the
others (1.27-1.32 s). The control unwires the on levels (the old behaviour) and must fail. A
calibrated session is never settled: its reference is the measured MVC from the start.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from config.loader import load_settings
from config.settings import CalibrationSettings, Settings
from devices.base import SampleBlock
from devices.recording_formats import load_recording
from feedback.pipeline import Pipeline
from feedback.processing.metrics import Contraction

RECORDING = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "4Nsen.txt.gz"


def contractions(settings: Settings, block: int = 20) -> list[Contraction]:
    rec = load_recording(RECORDING)
    keep = [i for i, u in enumerate(rec.units) if u == "mV"]  # not the goniometer
    data, rate = rec.data[keep], rec.rate_hz
    channels = tuple(rec.channels[i] for i in keep)
    pipe = Pipeline(settings, rate, channels)
    found: list[Contraction] = []
    for a in range(0, data.shape[1], block):
        part = data[:, a : a + block]
        found += pipe.process(SampleBlock(a, a / rate, rate, channels, part)).contractions
    return found + pipe.finish()


def uncalibrated() -> Settings:
    s = load_settings(environ={})
    return s.model_copy(
        update={"calibration": CalibrationSettings(mvc_mv={}, source="placeholder")}
    )


@pytest.mark.parametrize("variant", ["correct", "unwired"])
def test_an_uncalibrated_session_settles_its_first_contraction(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if variant == "unwired":
        monkeypatch.setattr(Pipeline, "_settling_level", lambda self, index: None)
    found = contractions(uncalibrated())
    assert len(found) == 4
    first, others = found[0], found[1:]
    ok = (first.onset_index, first.offset_index) == (2307, 3606) and first.duration_s <= max(
        c.duration_s for c in others
    )
    assert ok is (variant == "correct"), (first.onset_index, first.duration_s)


@pytest.mark.parametrize("block", [7, 333])
def test_the_settled_figures_do_not_depend_on_block_sizes(block: int) -> None:
    want = contractions(uncalibrated())
    got = contractions(uncalibrated(), block)
    assert [(c.onset_index, c.offset_index) for c in got] == [
        (c.onset_index, c.offset_index) for c in want
    ]
    for g, w in zip(got, want, strict=True):
        assert np.isclose(g.mean_mv, w.mean_mv, rtol=1e-9) and g.peak_mv == w.peak_mv
        assert np.isclose(g.median_freq_hz, w.median_freq_hz, rtol=1e-9)


@pytest.mark.parametrize("variant", ["correct", "settles-calibrated"])
def test_a_calibrated_session_is_not_settled(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cal = CalibrationSettings(
        mvc_mv={"VM": 0.4}, rest_mv={"VM": 0.003}, rest_sd_mv={"VM": 0.001}, source="guided"
    )
    settings = load_settings(environ={}).model_copy(update={"calibration": cal})
    with monkeypatch.context() as m:
        m.setattr(Pipeline, "_settling_level", lambda self, index: None)
        plain = contractions(settings)
    if variant == "settles-calibrated":
        # The wrong wiring: settle against any level, calibrated or not.
        monkeypatch.setattr(
            Pipeline,
            "_settling_level",
            lambda self, index: float(self.activation.on_level_at(index)[self._target]) * 3,
        )
    got = contractions(settings)
    ok = [(c.onset_index, c.offset_index) for c in got] == [
        (c.onset_index, c.offset_index) for c in plain
    ]
    assert ok is (variant == "correct")
