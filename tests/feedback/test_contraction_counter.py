"""The live contraction counter, called directly (no I/O): the offline rule's spans, whatever the
block sizes, reported only once they are final, with per-contraction metrics of known truth."""

from __future__ import annotations

from dataclasses import astuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedback.processing.activation import Zone
from feedback.processing.contraction_counter import ContractionCounter, CounterInput
from feedback.processing.contractions import contraction_spans
from feedback.processing.metrics import Contraction
from feedback.processing.offline_count import OfflineCount, OfflineCounter

RATE = 100.0
CHANNELS = ("VM", "VL")


def offline_spans(active: np.ndarray, rate: float, min_on_s: float, gap_s: float) -> list[tuple]:
    """The offline rule over the whole array (feedback.processing.contractions)."""
    return contraction_spans(active, rate, min_on_s, gap_s)


def feed(
    active: np.ndarray,
    sizes: list[int] | None = None,
    *,
    level: np.ndarray | None = None,
    zone: np.ndarray | None = None,
    onsets: tuple[tuple[str, int], ...] = (),
    min_on_s: float = 0.5,
    gap_s: float = 0.3,
) -> tuple[list[Contraction], list[int]]:
    """Counted contractions, and the sample index after each block that reported one."""
    n = active.shape[0]
    level = np.where(active, 0.1, 0.01) if level is None else level
    env = np.vstack([level, level / 2]).astype(np.float64)
    counter = ContractionCounter(RATE, CHANNELS, "VM", min_on_s=min_on_s, merge_gap_s=gap_s)
    out: list[Contraction] = []
    when: list[int] = []
    pos = 0
    for size in sizes or [n]:
        sl = slice(pos, pos + size)
        block = CounterInput(
            pos,
            active[sl],
            env[:, sl],
            env[:, sl] * 200.0,
            env[:, sl],
            None if zone is None else zone[sl],
            tuple(o for o in onsets if pos <= o[1] < pos + size),
        )
        got = counter.process(block)
        out += got
        when += [pos + size] * len(got)
        pos += size
    out += counter.finish()
    return out, when


def rounded(c: Contraction) -> tuple[object, ...]:
    # Sums over differently split blocks differ in the last bits only.
    return tuple(round(v, 9) if isinstance(v, float) else v for v in astuple(c))


def spans(cs: list[Contraction]) -> list[tuple[int, int]]:
    return [(c.onset_index, c.offset_index) for c in cs]


def pattern(*parts: tuple[bool, float]) -> np.ndarray:
    return np.concatenate([np.full(round(s * RATE), on) for on, s in parts])


def test_sustained_efforts_count_blips_do_not_and_short_dips_merge() -> None:
    a = pattern(
        (False, 1), (True, 0.8), (False, 1),  # one effort
        (True, 0.6), (False, 0.1), (True, 0.6), (False, 1),  # one effort with a short dip
        (True, 0.2), (False, 1),  # a blip
        (True, 0.6), (False, 0.5), (True, 0.6), (False, 1),  # two efforts
    )  # fmt: skip
    got, _ = feed(a)
    assert len(got) == 4
    assert spans(got) == offline_spans(a, RATE, 0.5, 0.3)
    assert got[1].duration_s == pytest.approx(1.3)


@pytest.mark.parametrize(
    ("detector", "expected"),
    [("always_on", 1), ("always_off", 0)],
)
def test_negative_controls_give_one_and_zero(detector: str, expected: int) -> None:
    a = np.full(3000, detector == "always_on")
    assert len(feed(a)[0]) == expected


def test_a_contraction_is_reported_only_once_its_dip_reaches_the_merge_gap() -> None:
    a = pattern((False, 0.5), (True, 1.0), (False, 1.0))
    one_by_one = [1] * a.shape[0]
    got, when = feed(a, one_by_one)
    assert len(got) == 1
    # Offset at 1.5 s; the dip must last 0.3 s before the effort cannot resume: known at 1.8 s.
    assert got[0].offset_index == 150 and when == [150 + 30]


@settings(max_examples=150, deadline=None)
@given(
    runs=st.lists(st.tuples(st.booleans(), st.integers(1, 90)), min_size=1, max_size=25),
    cuts=st.lists(st.integers(1, 60), min_size=1, max_size=40),
    min_on_s=st.sampled_from([0.0, 0.2, 0.5]),
    gap_s=st.sampled_from([0.0, 0.05, 0.3]),
)
def test_any_block_split_gives_the_offline_rules_contractions(
    runs: list[tuple[bool, int]], cuts: list[int], min_on_s: float, gap_s: float
) -> None:
    a = np.concatenate([np.full(n, on) for on, n in runs])
    rng = np.random.default_rng(len(runs))
    level = np.where(a, 0.2, 0.01) + rng.random(a.shape[0]) * 0.05
    zone = np.where(level > 0.21, Zone.IN_BAND, Zone.BELOW).astype(np.int8)
    sizes, total = [], 0
    for c in cuts * (a.shape[0] // max(sum(cuts), 1) + 1):
        if total >= a.shape[0]:
            break
        sizes.append(min(c, a.shape[0] - total))
        total += sizes[-1]
    whole, _ = feed(a, level=level, zone=zone, min_on_s=min_on_s, gap_s=gap_s)
    split, _ = feed(a, sizes, level=level, zone=zone, min_on_s=min_on_s, gap_s=gap_s)
    assert spans(whole) == offline_spans(a, RATE, min_on_s, gap_s)
    assert [rounded(c) for c in split] == [rounded(c) for c in whole]


def test_metrics_cover_the_span_and_merged_dips_only() -> None:
    a = pattern((False, 1), (True, 1.0), (False, 0.1), (True, 1.0), (False, 2))
    level = np.where(a, 0.2, 0.02)
    level[150:160] = 0.5  # the peak
    zone = np.where((level >= 0.19) & (level < 0.3), Zone.IN_BAND, Zone.BELOW).astype(np.int8)
    onsets = (("VM", 98), ("VL", 101), ("VL", 190))
    (c,), _ = feed(a, level=level, zone=zone, onsets=onsets)
    assert (c.onset_index, c.offset_index) == (100, 310)
    assert c.peak_mv == pytest.approx(0.5)
    mean = (0.2 * 190 + 0.5 * 10 + 0.02 * 10) / 210
    assert c.mean_mv == pytest.approx(mean)
    assert c.peak_pct == pytest.approx(100.0) and c.mean_pct == pytest.approx(200 * mean)
    assert c.hold_in_band_s == pytest.approx(1.9)  # 2 s active, minus the 0.1 s peak
    assert c.longest_hold_s == pytest.approx(1.0)  # 1.6–2.0 s, then the dip, then 2.1–3.1 s
    assert c.time_to_band_s == 0.0 and c.relaxation_s == pytest.approx(0.0)
    assert c.vm_vl_onset_ms == pytest.approx(30.0)  # VL 3 samples after VM at 100 Hz
    assert c.vm_vl_ratio == pytest.approx(2.0)


def test_a_gap_drops_the_open_contraction() -> None:
    counter = ContractionCounter(RATE, CHANNELS, "VM")
    on = np.ones(100, bool)
    env = np.full((2, 100), 0.1)
    assert counter.process(CounterInput(0, on, env, env, env)) == []
    counter.gap()
    assert counter.finish() == []


def offline(env: np.ndarray, sizes: list[int], rate: float = 1000.0) -> OfflineCount:
    oc = OfflineCounter(rate, 0, min_on_s=0.5, merge_gap_s=0.3)
    pos = 0
    for n in sizes:
        oc.add(pos, env[None, pos : pos + n])
        pos += n
    return oc.result()


def test_the_offline_pass_counts_efforts_whatever_the_blocks_and_none_in_a_flat_record() -> None:
    rng = np.random.default_rng(2)
    rate = 1000.0
    env = 0.005 + np.abs(rng.normal(0, 0.001, 20_000))
    for start in (2.0, 7.0, 12.0):  # three 2 s efforts
        env[round(start * rate) : round((start + 2) * rate)] += 0.1
    env[16_000:16_200] += 0.1  # a 0.2 s blip: not a contraction
    whole = offline(env, [env.shape[0]])
    split = offline(env, [37] * (env.shape[0] // 37) + [env.shape[0] % 37])
    assert whole.count == split.count == 3
    assert whole.spans_s == split.spans_s
    assert whole.spans_s[0] == pytest.approx((2.0, 4.0), abs=0.03)
    flat = offline(0.005 + np.abs(rng.normal(0, 0.001, 20_000)), [20_000])
    assert flat.count == 0
