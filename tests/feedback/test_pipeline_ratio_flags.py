"""The VM/VL ratio and the limb symmetry index are withheld (None) while a channel they read has
a quality flag up at the block's end, on either path; `Pipeline.complete` learns that from the
block's `problems` without reading the flags of a clean block.

Negative control: the same blocks with a clean VM give a ratio, so None is not the only answer."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest

from config.loader import load_settings
from devices.base import SampleBlock
from feedback.pipeline import Pipeline, Tick
from feedback.processing import fused

RATE = 2000.0
CHANNELS = ("VM", "VL", "RF", "BF")


def _ticks(flat_vm: bool) -> list[Tick]:
    rng = np.random.default_rng(3)
    data = (rng.standard_normal((len(CHANNELS), int(4 * RATE))) * 0.2).astype(np.float32)
    if flat_vm:
        data[0, int(2 * RATE) :] = 0.0  # electrode off: a flat line
    pipe = Pipeline(load_settings(environ={}), RATE, CHANNELS)
    return [
        pipe.process(SampleBlock(i, 0.0, RATE, CHANNELS, data[:, i : i + 20]))
        for i in range(0, data.shape[1], 20)
    ]


@pytest.mark.parametrize("reference", [False, True], ids=["product", "numpy"])
def test_the_ratio_is_withheld_while_vm_is_flagged_at_the_block_end(reference: bool) -> None:
    with fused.reference_path() if reference else nullcontext():
        ticks, clean = _ticks(True), _ticks(False)
    flagged = [t for t in ticks if t.quality is not None and t.quality.last[0]]
    assert flagged, "the flat VM never raised a flag: the test would prove nothing"
    assert all(t.vm_vl_ratio is None and "VM" in (t.problems or {}) for t in flagged)
    unflagged = [t for t in ticks if t.quality is not None and not t.quality.last.any()]
    assert any(t.vm_vl_ratio is not None for t in unflagged)
    # Negative control: with VM clean throughout, the blocks give a ratio.
    assert all(t.vm_vl_ratio is not None for t in clean[len(clean) // 2 :])
