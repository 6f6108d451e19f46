"""A second, non-causal count of contractions over the whole recording, for the report and the
record next to the live (causal) count: a check on the live detector, never a cue.

It keeps the target channel's envelope at DECIMATED_HZ (bin means, bins on the device's sample
index so block sizes do not matter) and, at the end, thresholds it with levels taken from the
whole recording, which no live detector can know in advance: rest = the REST_PERCENTILE of the
envelope, reference = its REF_PERCENTILE, active above rest + ACTIVE_FRACTION · (reference −
rest). The spans then follow the same rule as the live count (min_on_s, merge_gap_s). A
recording whose reference is not clearly above rest (MIN_CONTRAST) has no contraction.
The envelope is the causal chain's, so the spans lag the muscle by the chain's delay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feedback.processing.contraction_counter import ContractionCounter, CounterInput

DECIMATED_HZ = 50.0
REST_PERCENTILE = 10.0
REF_PERCENTILE = 99.0
ACTIVE_FRACTION = 0.2
MIN_CONTRAST = 3.0  # reference / rest below this: no clear contraction anywhere

METHOD = (
    "non-causal: whole-recording levels (rest = 10th, reference = 99th percentile of the "
    "envelope; active above rest + 20 % of the range), same min_on_s and merge_gap_s"
)


@dataclass(frozen=True, slots=True)
class OfflineCount:
    count: int
    spans_s: list[tuple[float, float]]  # (start, end) seconds from the first sample
    rest_mv: float
    reference_mv: float
    method: str = METHOD


class OfflineCounter:
    def __init__(self, rate_hz: float, target: int, *, min_on_s: float, merge_gap_s: float) -> None:
        self.factor = max(1, round(rate_hz / DECIMATED_HZ))
        self.rate_hz = rate_hz / self.factor
        self.target = target
        self.min_on_s, self.merge_gap_s = min_on_s, merge_gap_s
        # One growing array, not a list of per-block pieces: a 20-sample block yields 0 or 1
        # bin, and a numpy array per bin would cost ~100 bytes of overhead for 8 of data.
        self._env = np.empty(4096)
        self._n = 0
        self._carry = np.zeros(0)
        self._first: int | None = None

    def add(self, first_index: int, envelope: np.ndarray) -> None:
        if self._first is None:
            self._first = first_index
        x = np.concatenate([self._carry, envelope[self.target].astype(np.float64)])
        whole = x.shape[0] // self.factor * self.factor
        if whole:
            bins = x[:whole].reshape(-1, self.factor).mean(axis=1)
            if self._n + bins.shape[0] > self._env.shape[0]:
                grown = np.empty(max(2 * self._env.shape[0], self._n + bins.shape[0]))
                grown[: self._n] = self._env[: self._n]
                self._env = grown
            self._env[self._n : self._n + bins.shape[0]] = bins
            self._n += bins.shape[0]
        self._carry = x[whole:]

    def result(self) -> OfflineCount:
        env = self._env[: self._n]
        if not env.shape[0]:
            return OfflineCount(0, [], 0.0, 0.0)
        rest = float(np.percentile(env, REST_PERCENTILE))
        ref = float(np.percentile(env, REF_PERCENTILE))
        active = env > rest + ACTIVE_FRACTION * (ref - rest)
        if ref < MIN_CONTRAST * max(rest, 1e-9):
            active[:] = False
        counter = ContractionCounter(
            self.rate_hz,
            ("X",),
            "X",
            min_on_s=self.min_on_s,
            merge_gap_s=self.merge_gap_s,
        )
        row = env[None, :]
        found = counter.process(CounterInput(0, active, row, row, row)) + counter.finish()
        spans = [(c.onset_index / self.rate_hz, c.offset_index / self.rate_hz) for c in found]
        return OfflineCount(len(found), spans, rest, ref)
