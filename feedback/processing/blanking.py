"""Stimulation-artefact blanking: the chain never sees the artefact, the detector never sees a gap.

Choice (a) of the two in issue 5: while a burst may be on, raw samples are replaced by zeros
before the band-pass (so neither the filter state nor the RMS window is polluted), and the
envelope and % MVC are held at the last trusted value from the blank's start until `tail`
samples after its end (the time the envelope needs to refill with clean signal). A held value
cannot cross the trigger threshold by itself, so the artefact can never re-trigger a burst, and
the exercise sees a steady activation rather than a dip or a spike.

Windows are in device sample indices and forward fills are vectorised with the value carried
across blocks, so any block split gives the same output.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from devices.base import SampleBlock
from feedback.processing.activation import any_true
from feedback.processing.chain import ProcessedBlock


class Blanker:
    def __init__(self, n_channels: int, tail: int) -> None:
        self.tail = tail
        self._windows: list[tuple[int, int]] = []
        self._env = np.zeros(n_channels)  # last trusted envelope and % MVC, per channel
        self._pct = np.zeros(n_channels)
        # The arrays of the last block `passed` (never edited): their last column is the value
        # to hold, taken only when a blank needs it (two slices a block saved).
        self._ends: tuple[np.ndarray, np.ndarray] | None = None
        self.samples_blanked = 0
        self._unheld: np.ndarray | None = None  # the all-false mask last handed out
        # No blank pending nor being held: `passed` may stand for `zero` and `hold`. (Kept as
        # the windows change, not a property: read every block, a call saved.)
        self.idle = True

    def add(self, start: int, end: int) -> None:
        """Blank raw samples [start, end) and hold the envelope until end + tail."""
        if end > start:
            self._windows.append((start, end))
            self.idle = False

    def passed(self, envelope: np.ndarray, pct: np.ndarray) -> np.ndarray:
        """`zero` and `hold` for a block while idle (done by the fused block): nothing held,
        the block's last values kept; returns the all-false held mask (read-only: the same
        array for every block of the same length)."""
        self._ends = (envelope, pct)
        unheld = self._unheld
        n = envelope.shape[1]
        return unheld if unheld is not None and unheld.shape[0] == n else self._all_false(n)

    def _all_false(self, n: int) -> np.ndarray:
        """The all-false held mask of n samples: one for every block of this length (a
        device's blocks all have one), read-only since every Tick hands it out (a new one
        each block cost half a microsecond)."""
        unheld = self._unheld
        if unheld is None or unheld.shape[0] != n:
            unheld = self._unheld = np.zeros(n, dtype=bool)
            unheld.flags.writeable = False
        return unheld

    def _carried(self) -> tuple[np.ndarray, np.ndarray]:
        """The last trusted envelope and % MVC, per channel."""
        if self._ends is not None:
            env, pct = self._ends
            self._env, self._pct, self._ends = env[:, -1], pct[:, -1], None
        return self._env, self._pct

    def _mask(self, first: int, n: int, extra: int) -> np.ndarray:
        idx = first + np.arange(n)
        mask = np.zeros(n, dtype=bool)
        for start, end in self._windows:
            mask |= (idx >= start) & (idx < end + extra)
        return mask

    def zero(self, block: SampleBlock) -> tuple[SampleBlock, np.ndarray]:
        """The block with blanked samples zeroed, and the mask of held samples."""
        # Windows entirely in the past are done with; keep the list short.
        self._windows = [w for w in self._windows if w[1] + self.tail > block.first_index]
        self.idle = not self._windows
        if not self._windows:
            return block, self._all_false(block.n_samples)
        raw = self._mask(block.first_index, block.n_samples, 0)
        held = self._mask(block.first_index, block.n_samples, self.tail)
        if raw.any():
            data = block.data.copy()
            data[:, raw] = 0.0
            block = replace(block, data=data)
            self.samples_blanked += int(raw.sum())
        return block, held

    def hold(self, processed: ProcessedBlock, held: np.ndarray) -> ProcessedBlock:
        env, pct = processed.envelope, processed.pct_mvc
        if held is not self._unheld and any_true(held):  # (`zero`'s all-false mask: nothing)
            carried_env, carried_pct = self._carried()
            env = _forward_fill(env, held, carried_env)
            pct = _forward_fill(pct, held, carried_pct)
            processed = replace(processed, envelope=env, pct_mvc=pct)
        if env.shape[1]:
            self._env, self._pct = env[:, -1].copy(), pct[:, -1].copy()
            self._ends = None
        return processed


def _forward_fill(x: np.ndarray, held: np.ndarray, carried: np.ndarray) -> np.ndarray:
    """Each held column takes the newest unheld column before it, or `carried` if none."""
    n = held.shape[0]
    positions = np.where(held, -1, np.arange(n))
    last = np.maximum.accumulate(positions)
    source = x[:, np.maximum(last, 0)]
    return np.where(last >= 0, source, carried[:, None])
