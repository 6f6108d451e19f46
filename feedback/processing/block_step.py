"""The numeric steps of a usual block in one compiled call (kernels.block_step): the chain, the
signal quality, the Hodges-Bui onset switch and its rest window, the activation switch.

A usual block lies inside one onset rest window and one activation frame (either may end at
its last sample), after any settling and with no stimulation blank near it: then each step's
per-block Python work reduces to a few counters and the events, and the one call replaces six
(whose argument unboxing alone cost more than their arithmetic). Any other block takes the
steps one by one, as on the numpy path; both edit the same state arrays, so a session may
switch between them at any block, and the values are the same to the bit either way
(tests/feedback/test_kernels.py compares every Tick with the numpy path's).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from devices.base import SampleBlock
from feedback.processing.activation import ActivationBlock, ActivationDetector, BandDetector
from feedback.processing.blanking import Blanker
from feedback.processing.chain import EmgChain, ProcessedBlock
from feedback.processing.onset import OnsetDetector
from feedback.processing.quality import Flag, QualityBlock, SignalQuality

FLAT = int(Flag.FLAT)

# (processed, blanked, quality, activation, flagged, each row's envelope sum or None (valid
# until the next block), the target's zone or None, whether any row's activation is on
# anywhere in the block)
Fast = tuple[
    ProcessedBlock,
    np.ndarray,
    QualityBlock,
    ActivationBlock,
    bool,
    np.ndarray | None,
    np.ndarray | None,
    bool,
]


class BlockSteps:
    """`run` a block through the steps in one call, or None: take them one by one. Each step
    tells what the call needs (`fused_state`: its long-lived arrays, bound once; `fused_args`:
    the rest, per block, or None when the block is not usual for it; the onset detector's
    also hands its `fused_state`, to bind again when its window changed) and does its own
    bookkeeping after it (`fused_done`)."""

    def __init__(
        self,
        kernels: ModuleType,
        steps: tuple[EmgChain, SignalQuality, OnsetDetector, ActivationDetector, BandDetector],
        blanker: Blanker,
    ) -> None:
        """`steps`: the chain, the quality, the two switches and the target band's."""
        self._k = kernels
        self.chain, self.quality, self.onset, self.activation, self.band = steps
        self.blanker = blanker
        self._state: Any = None  # kernels.BlockState, bound to the steps' arrays
        self._bound: tuple[object, object] = (None, None)  # the chain's and onset's states bound
        b1 = np.zeros(0, bool)
        # No zone asked for: block_step's `band` of the types the zone's would have, built once.
        self._no_band = (False, 0, np.zeros(0), np.zeros(0), b1, (1, 1), np.zeros(0, np.int8), b1)
        # The rest window's statistics and the envelope sums: read within the block (the onset
        # detector copies the statistics it keeps), so one array serves every block.
        self._sums: np.ndarray | None = None

    def _bind(self, chain: tuple[Any, ...], window: tuple[Any, ...]) -> None:
        """A BlockState over the arrays the steps keep (a calibration gives the chain a new
        scale, a gap the onset detector a new rest window: then it is bound again)."""
        quality = self.quality.fused_state()
        assert quality is not None
        act, band = self.activation.fused_state(), self.band.fused_state()
        self._state = self._k.bind_block(chain, quality, window, act, band)
        self._bound = (chain, window)

    def run(self, block: SampleBlock, row: int | None = None) -> Fast | None:
        """`Fast`, or None for a block that is not usual; `row`: the channel whose zone in
        the target band to find in the same call (the band unchanged throughout the
        block)."""
        data = block.data
        rows, n = data.shape
        if not n or not self.blanker.idle:
            return None
        onset = self.onset.fused_args(n)
        act_args = self.activation.fused_args(n)
        if onset is None or act_args is None:
            return None
        window, onset_args, learning = onset
        chain = self.chain.fused_state()
        bound = self._bound
        if bound[0] is not chain or bound[1] is not window:
            self._bind(chain, window)
        # (one compiled layout; the array itself when contiguous, checked in C: reading
        # `data.flags` makes a flags object each block)
        raw = np.ascontiguousarray(data)
        # The rest are handed out with the Tick (kept by the outputs): new each block.
        floats = np.empty((4, rows, n))
        flags = np.empty((rows, n), dtype=np.uint8)
        switches = np.empty((3, rows, n), dtype=bool)
        sums = self._sums
        if sums is None or sums.shape[1] != rows:  # (the kernel checks no bounds)
            sums = self._sums = np.empty((3, rows))
        band = self._no_band if row is None else self.band.compiled_args(n, row)
        first = block.first_index
        # (advanced before the call: nothing between can fail but the kernel itself, and a
        # kernel that raised leaves the session's state half-made either way)
        seen = self.quality.advance(n)
        code = self._k.block_step(
            raw,
            self._state,
            onset_args,
            act_args,
            band,
            (first, seen, *learning),
            (floats, flags, switches, sums),
        )
        envelope, pct = floats[1], floats[2]
        flagged = bool(code & 32)
        self.onset.fused_done(code, switches[0], sums)
        usable = (flags & FLAT) == 0 if flagged and not code & 16 else None
        onsets = self.activation.fused_done(
            first, code, (envelope, switches[1], switches[2], floats[3]), usable
        )
        blanked = self.blanker.passed(envelope, pct)
        processed = ProcessedBlock(block, floats[0], envelope, pct)
        env_sums = sums[2] if code & 64 else None
        zone = None
        if row is not None:
            if code & 128:
                self.band.compiled_done()
            zone = band[6]
        active = bool(code & 2048)
        return processed, blanked, QualityBlock(flags), onsets, flagged, env_sums, zone, active
