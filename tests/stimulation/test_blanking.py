"""EMG blanking during stimulation: the artefact never reaches the envelope or the detector."""

from __future__ import annotations

import numpy as np

from config.loader import load_settings
from devices.base import SampleBlock
from feedback.pipeline import Pipeline
from feedback.processing import fused

RATE = 2000.0
CHANNELS = ("VM", "VL")


def signal_with_artefact() -> np.ndarray:
    """1 s of 0.1 mV noise (~20 % MVC), then 1 s with 5 mV stimulation pulses at 50 Hz."""
    rng = np.random.default_rng(3)
    data = rng.standard_normal((2, 4000)) * 0.1
    pulses = np.zeros(2000)
    pulses[::40] = 5.0  # 50 Hz, one-sample spikes
    pulses[1::40] = -5.0
    data[:, 2000:] += pulses
    return data.astype(np.float32)


def run(
    data: np.ndarray, size: int, blank: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    pipe = Pipeline(load_settings(environ={}), RATE, CHANNELS)
    if blank is not None:
        pipe.blanker.add(*blank)
    pct, held = [], []
    for start in range(0, data.shape[1], size):
        chunk = data[:, start : start + size]
        tick = pipe.process(SampleBlock(start, 0.0, RATE, CHANNELS, chunk))
        pct.append(tick.processed.pct_mvc)
        assert tick.blanked is not None
        held.append(tick.blanked)
    return np.concatenate(pct, axis=1), np.concatenate(held)


def test_artefact_without_blanking_would_trigger() -> None:
    pct, _ = run(signal_with_artefact(), 20, None)
    assert pct[0, 2400:4000].min() > 60.0  # far above the band: the test below can fail


def test_blanked_artefact_is_held_at_the_last_trusted_value() -> None:
    pct, held = run(signal_with_artefact(), 20, (2000, 4000))
    before = pct[0, 1999]
    assert 5.0 < before < 40.0
    assert held[2000:].all() and not held[:2000].any()
    np.testing.assert_array_equal(pct[:, 2000:], np.repeat(pct[:, 1999:2000], 2000, axis=1))


def test_envelope_refills_cleanly_after_the_blank() -> None:
    data = signal_with_artefact()
    data[:, 3000:] = np.random.default_rng(4).standard_normal((2, 1000)) * 0.1  # artefact ends
    pct, held = run(data, 20, (2000, 3000))
    tail_end = int(np.flatnonzero(held)[-1]) + 1
    assert 3000 < tail_end < 3600  # held for the envelope's refill time only
    assert pct[0, tail_end:].max() < 40.0  # no artefact tail, no zero-input dip spike
    assert pct[0, tail_end:].min() > 5.0  # and no dip from the zeroed samples either


def test_any_block_split_gives_the_same_blanked_output() -> None:
    data = signal_with_artefact()
    ref, ref_held = run(data, 4000, (2100, 3100))
    for size in (1, 7, 20, 333):
        pct, held = run(data, size, (2100, 3100))
        np.testing.assert_allclose(pct, ref, rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(held, ref_held)


def run_blank_added_late(data: np.ndarray, blank: tuple[int, int]) -> np.ndarray:
    """As a stimulator does: blocks flow (the fused block while nothing is blanked), then a
    blank is announced just before the burst."""
    pipe = Pipeline(load_settings(environ={}), RATE, CHANNELS)
    pct = []
    for start in range(0, data.shape[1], 20):
        if start == blank[0]:  # (the block before was a fused one)
            pipe.blanker.add(*blank)
        chunk = data[:, start : start + 20]
        pct.append(pipe.process(SampleBlock(start, 0.0, RATE, CHANNELS, chunk)).processed.pct_mvc)
    return np.concatenate(pct, axis=1)


def test_a_blank_after_fused_blocks_holds_their_last_value_on_either_path() -> None:
    data = signal_with_artefact()
    pct = run_blank_added_late(data, (2000, 4000))
    with fused.reference_path():
        reference = run_blank_added_late(data, (2000, 4000))
    before = pct[0, 1999]
    assert 5.0 < before < 40.0  # a real value: holding zeros (or anything else) fails below
    np.testing.assert_array_equal(pct[:, 2000:], np.repeat(pct[:, 1999:2000], 2000, axis=1))
    np.testing.assert_array_equal(pct, reference)
