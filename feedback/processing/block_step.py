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
from feedback.processing.activation import ActivationBlock, ActivationDetector
from feedback.processing.blanking import Blanker
from feedback.processing.chain import EmgChain, ProcessedBlock
from feedback.processing.onset import OnsetDetector, OnsetEvent, _Baseline
from feedback.processing.quality import Flag, QualityBlock, SignalQuality

FLAT = int(Flag.FLAT)
_NO_WINDOW = (0, 0, 1)  # (point index, skip, stride) of no rest window

# (processed, blanked, quality, activation, flagged, each row's envelope sum or None)
Fast = tuple[ProcessedBlock, np.ndarray, QualityBlock, ActivationBlock, bool, np.ndarray | None]


class BlockSteps:
    """`run` a block through the steps in one call, or None: take them one by one."""

    def __init__(
        self,
        kernels: ModuleType,
        chain: EmgChain,
        quality: SignalQuality,
        onset: OnsetDetector,
        activation: ActivationDetector,
        blanker: Blanker,
    ) -> None:
        self._k = kernels
        self.chain, self.quality, self.onset, self.activation = chain, quality, onset, activation
        self.blanker = blanker
        self._state: Any = None  # kernels.BlockState, bound to the steps' arrays
        self._bound: tuple[object, object] = (None, None)  # (chain scale, rest window) bound

    def _bind(self, learning: _Baseline | None) -> None:
        """A BlockState over the arrays the steps keep (a calibration replaces the chain's
        scale, a gap the rest window: then it is bound again)."""
        c, q, o, a = self.chain, self.quality, self.onset, self.activation
        rows = len(c.channels)
        rms = c._rms is not None
        lp = c._env_lp
        plan = c._plan if rms else (np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
        chain = (
            rms,
            c._band.sos,
            c._band.state,
            c._squares if rms else np.zeros((rows, 0)),
            *plan,
            lp.sos if lp is not None else np.zeros((0, 6)),
            lp.state if lp is not None else np.zeros((rows, 0, 2)),
            *c._scale,
        )
        counts = np.array([q._warmup, q._flat_run, q._hold], dtype=np.int64)
        quality = (q._filters, q._states, np.array(q._levels), counts, q._last_raw, q._same)
        if learning is not None:
            assert learning._window is not None and learning._running is not None
            points, ordered, last = learning._window
            run, (leaves, ops, leaf_of) = learning._running
        else:
            points = ordered = np.zeros((rows, 0))
            last, run = np.zeros(rows), np.zeros((rows, 0, 9))
            leaves, ops, leaf_of = np.zeros((0, 2), np.int64), *np.zeros((2, 0), np.int64)
        window = (o._reach, points, ordered, last, run, (ops, leaf_of), leaves)
        self._state = self._k.bind_block(
            chain, (*quality, q._since), window, (a._reach, a._sum, a._count)
        )
        self._bound = (c._scale, learning)

    def run(self, block: SampleBlock) -> Fast | None:
        """`Fast`, or None for a block that is not usual."""
        data = block.data
        rows, n = data.shape
        onset, act, learning = self.onset, self.activation, self.onset._learning
        if (
            not n
            or self.blanker._windows
            or onset._settle
            or act._settle
            or act._restart
            or n > act._frame - act._in_frame
        ):
            return None
        if learning is not None and (n > learning.needed - learning.seen or not learning._window):
            return None  # (a new window's first block makes its arrays, step by step)
        if self._bound[0] is not self.chain._scale or self._bound[1] is not learning:
            self._bind(learning)
        raw = data if data.flags.c_contiguous else np.ascontiguousarray(data)
        floats = np.empty((4, rows, n))
        flags = np.empty((rows, n), dtype=np.uint8)
        switches = np.empty((3, rows, n), dtype=bool)
        sums = np.empty((3, rows))
        first = block.first_index
        if learning is not None:
            seen, stride = learning.seen, learning.stride
            window = (first, self.quality._seen, True, -(-seen // stride), -seen % stride, stride)
        else:
            window = (first, self.quality._seen, False, *_NO_WINDOW)
        o_carry, a_carry = onset._carry, act._carry
        o_before, a_before = o_carry.state, a_carry.state
        quiet = act._quiet_hb
        code = self._k.block_step(
            raw,
            self._state,
            (*onset._level_arrays, o_before, *o_carry.run_arrays(), onset.baseline is not None),
            (*act._level_arrays, *act._scales, a_before, *a_carry.run_arrays(), quiet),
            window,
            (floats, flags, switches, sums),
        )
        self.quality._seen += n
        envelope, pct = floats[1], floats[2]
        hb, above, active = switches[0], switches[1], switches[2]
        flagged = bool(code & 32)
        # The onset detector's `_segment`. (Its events are not needed: the pipeline hands on
        # the activation's, which take the Hodges-Bui instants from `above`.)
        if code & 1:
            o_carry.state = hb[:, n - 1].copy()  # (the switch's state at the block's end)
        if learning is not None:
            if code >> 8 == 1:  # the window's statistics, made in the same call
                learning._stats = (sums[0], sums[1])
            learning._last = learning._window[2]  # type: ignore[index]
            learning.seen += n
            if learning.seen >= learning.needed:
                onset._window_done(learning)
        # The activation detector's `_segment` and the end of its `process`.
        if code & 4:
            a_carry.state = active[:, n - 1].copy()
        found: list[OnsetEvent] = []
        if code & 8:  # (else the kernel moved the last quiet sample)
            found = act._edges(first, envelope, above, a_before, active)
        if code & 16:  # (the kernel added the sums and counts)
            act._in_frame += n
            if act._in_frame >= act._frame:
                act._close_compiled()
        else:
            act._learn(envelope, (flags & FLAT) == 0 if flagged else None)
        onsets = ActivationBlock(
            active,
            tuple(found),
            act._ready,
            above,
            act._rest_now,
            act._reference_now,
            act.on_level,
            act.off_level,
            act.calibrated,
            floats[3],
        )
        # The blanker's `zero` and `hold` with no window: nothing held, the last values kept.
        blanked = np.zeros(n, dtype=bool)
        self.blanker._unheld = blanked
        self.blanker._env, self.blanker._pct = envelope[:, n - 1], pct[:, n - 1]
        processed = ProcessedBlock(block, floats[0], envelope, pct)
        env_sums = sums[2] if code & 64 else None
        return processed, blanked, QualityBlock(flags), onsets, flagged, env_sums
