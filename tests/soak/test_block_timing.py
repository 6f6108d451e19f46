"""BlockTiming: p50/p99 in constant memory agree with numpy's on the full list."""

from __future__ import annotations

import numpy as np
import pytest

from feedback.block_timing import BlockTiming


def timing_of(values: np.ndarray) -> BlockTiming:
    t = BlockTiming()
    for v in values:
        t.add(float(v))
    return t


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_percentiles_agree_with_numpy_within_a_bin(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # like block times: mostly ~150 µs, a long tail of stalls up to tens of ms
    values = np.concatenate([rng.lognormal(np.log(150), 0.3, 20_000),
                             rng.uniform(2_000, 40_000, 300)])  # fmt: skip
    t = timing_of(rng.permutation(values))
    for q in (50, 90, 99, 99.9):
        assert t.percentile(q) == pytest.approx(np.percentile(values, q), rel=0.011)
    assert t.count == len(values) and t.max_us == values.max()


def test_memory_does_not_grow_with_the_session() -> None:
    t = BlockTiming()
    size = t.counts.nbytes
    for v in np.random.default_rng(3).uniform(50, 500, 100_000):
        t.add(float(v))
    assert t.counts.nbytes == size < 32_000


def test_edges_empty_tiny_huge() -> None:
    assert BlockTiming().percentile(50) == 0.0
    t = timing_of(np.array([0.0, 0.01, 1e9]))
    assert t.percentile(0) < 0.11  # below the range: the first bin
    assert 9e6 < t.percentile(100) < 1.1e7 and t.max_us == 1e9  # above it: the last bin


def test_negative_control_a_coarse_histogram_fails_the_agreement() -> None:
    """Bins 10x wider than ours miss numpy's p50 by more than the tolerance above."""
    rng = np.random.default_rng(0)
    values = rng.lognormal(np.log(150), 0.3, 20_000)
    edges = np.geomspace(0.1, 1e7, 80)  # ~26 % bins
    counts, _ = np.histogram(values, edges)
    i = int(np.searchsorted(np.cumsum(counts), len(values) // 2 + 1))
    coarse = float(np.sqrt(edges[i] * edges[i + 1]))
    assert coarse != pytest.approx(np.percentile(values, 50), rel=0.011)
