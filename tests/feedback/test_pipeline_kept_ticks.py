"""Ticks kept past later blocks keep their values: the outputs hold a Tick's arrays after the
pipeline has moved on (a latest-wins queue, the recorder, the session tally), so a buffer the
fused block reuses from one block to the next must be one no Tick hands out (issue 12, item 4:
the per-block allocations cut). The real recording's whole run, every Tick kept until the end
and only then hashed, must give the reference digests that hashing each Tick as it comes
gives (tests/feedback/test_pipeline_reference.py)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from devices.base import SampleBlock
from devices.formats import load_recording
from feedback.pipeline import Pipeline, Tick
from feedback.processing import block_step
from tests.feedback.test_pipeline_reference import (
    RECORDING,
    digests,
    reference,
    settings_for,
    splits,
)


def kept_digests() -> dict[str, str]:
    rec = load_recording(RECORDING)
    keep = [i for i, u in enumerate(rec.units) if u == "mV"]
    data, rate = rec.data[keep], rec.rate_hz
    channels = tuple(rec.channels[i] for i in keep)
    pipe = Pipeline(settings_for("band"), rate, channels)
    rng = np.random.default_rng(7)
    kept: list[Tick] = []
    baselines: list[object] = []
    for first, start, stop in splits("20", data.shape[1], rng):
        block = SampleBlock(first, first / rate, rate, channels, data[:, start:stop])
        kept.append(pipe.process(block))
        baselines.append(pipe.onset.baseline)
    steps: Iterator[object] = iter(baselines)
    return digests(iter(kept), pipe.finish, lambda: next(steps))


def test_ticks_kept_to_the_end_equal_the_reference() -> None:
    want = reference()["real-4Nsen/20"]
    got = kept_digests()
    differ = [name for name in want if got[name] != want[name]]
    assert not differ, f"fields changed after their block: {differ}"


def test_a_reused_output_buffer_would_be_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: the fused block's outputs made once per shape and reused (the naive
    preallocation) pass a Tick-by-Tick comparison but not this one."""
    pytest.importorskip("feedback.processing.kernels")
    made: dict[tuple[Any, ...], np.ndarray] = {}

    def reused(shape: Any, dtype: Any = float) -> np.ndarray:
        key = (shape, np.dtype(dtype).str)
        if key not in made:
            made[key] = np.empty(shape, dtype)
        return made[key]

    public = {name: getattr(np, name) for name in dir(np) if not name.startswith("__")}
    numpy_reusing = SimpleNamespace(**{**public, "empty": reused})
    monkeypatch.setattr(block_step, "np", numpy_reusing)
    with pytest.raises(AssertionError, match="fields changed after their block"):
        test_ticks_kept_to_the_end_equal_the_reference()
    assert made  # (the fused block ran)
