"""The compiled kernels (feedback/processing/kernels/, numba) against the numpy path they
replace (issue 12, item 4): the same values to the bit, block by block, in every Tick field,
so the stored reference digests (test_pipeline_reference.py) hold for both paths.

Equality, not a tolerance: the kernels run the numpy path's float operations in the same
order (scipy's SOS cascade, numpy's pairwise sums, the same comparisons), so any difference
is a mistake. The negative controls show the comparisons see one ulp in one sample and one
part in 10¹² in one filter coefficient."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.loader import load_settings
from devices.base import SampleBlock
from feedback.pipeline import Pipeline, Tick
from feedback.processing import fused
from feedback.processing.block_step import BlockSteps
from feedback.processing.onset import MAD_TO_SD, OUTLIER_SPREADS, _complete_mean_sd
from feedback.processing.quality import Flag
from tests.feedback import test_pipeline_reference as ref

kernels = pytest.importorskip("feedback.processing.kernels")  # (numba installed)
ROOT = Path(__file__).resolve().parents[2]


def run(scenario: str, kind: str, compiled: bool) -> dict[str, str]:
    if compiled:
        return ref.run(scenario, kind)
    with fused.reference_path():
        return ref.run(scenario, kind)


def test_the_paths_are_what_they_say() -> None:
    s = load_settings(environ={})
    compiled = Pipeline(s, ref.RATE, ref.CHANNELS)
    with fused.reference_path():
        numpy_path = Pipeline(s, ref.RATE, ref.CHANNELS)
    assert compiled._compiled and compiled.chain._kernels is kernels
    assert not numpy_path._compiled and numpy_path.chain._kernels is None
    assert numpy_path.quality._kernels is None and numpy_path.activation._kernels is None


def test_the_kernels_flag_bits_are_the_quality_flags() -> None:
    """The kernels write and read the flags with their own copy of the bits."""
    got = (kernels.FLAT, kernels.CLIP, kernels.MAINS, kernels.MOTION)
    assert got == (Flag.FLAT, Flag.CLIP, Flag.MAINS, Flag.MOTION)


@pytest.mark.parametrize("scenario", list(ref.SCENARIOS))
@pytest.mark.parametrize("kind", ["20", "333", "random+gaps"])
def test_compiled_and_numpy_paths_give_the_same_ticks(scenario: str, kind: str) -> None:
    got, want = run(scenario, kind, True), run(scenario, kind, False)
    differ = [name for name in want if got[name] != want[name]]
    assert not differ, f"{scenario} in blocks of {kind}: fields differ: {differ}"


def other_chain_ticks(compiled: bool, dtype: str) -> Iterator[Tick]:
    """Settings the reference scenarios do not cover: the low-passed envelope, the mains
    notch in the band-pass, float64 samples."""
    s = ref.settings_for("band")
    processing = s.processing.model_copy(update={"envelope": "lowpass", "notch_hz": 50})
    s = s.model_copy(update={"processing": processing})
    with fused.reference_path() if not compiled else _nothing():
        pipe = Pipeline(s, ref.RATE, ref.CHANNELS)
    data = ref.synthetic(seconds=6.0).astype(dtype)
    rng = np.random.default_rng(5)
    for first, start, stop in ref.splits("random+gaps", data.shape[1], rng):
        yield pipe.process(SampleBlock(first, 0.0, ref.RATE, ref.CHANNELS, data[:, start:stop]))


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_lowpass_envelope_and_the_notch_agree_too(dtype: str) -> None:
    blocks = 0
    pairs = zip(other_chain_ticks(True, dtype), other_chain_ticks(False, dtype), strict=True)
    for got, want in pairs:
        for name in ("processed", "zone", "quality", "activation", "exercise"):
            a, b = ref.hashlib.sha256(), ref.hashlib.sha256()
            ref.feed(a, getattr(got, name))
            ref.feed(b, getattr(want, name))
            assert a.digest() == b.digest(), (blocks, name)
        blocks += 1
    assert blocks > 100


def test_one_ulp_in_one_envelope_sample_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: a chain kernel wrong by one ulp in one sample of one block (the usual
    block's fused call, kernels.block_step, or the chain's own) fails both the comparison
    with the numpy path and the stored reference."""
    real, real_block, calls = kernels.chain_rms, kernels.block_step, [0]

    def nudge(envelope: np.ndarray) -> None:
        calls[0] += 1
        if calls[0] == 1500:  # one block of 2400, well after the first baseline window
            envelope[1, 5] = np.nextafter(envelope[1, 5], np.inf)

    def off_by_one_ulp(*args: object) -> None:
        real(*args)
        out = args[-1]  # (filtered, envelope, pct)
        assert isinstance(out, tuple)
        nudge(out[1])

    def block_off_by_one_ulp(*args: object) -> int:
        code = real_block(*args)
        outs = args[-1]  # (floats: filtered, envelope, ...; flags; switches; sums)
        assert isinstance(outs, tuple)
        nudge(outs[0][1])
        return int(code)

    monkeypatch.setattr(kernels, "chain_rms", off_by_one_ulp)
    monkeypatch.setattr(kernels, "block_step", block_off_by_one_ulp)
    with pytest.raises(AssertionError, match="fields differ"):
        test_compiled_and_numpy_paths_give_the_same_ticks("band", "20")
    calls[0] = 0
    with pytest.raises(AssertionError, match="fields differ"):
        ref.test_every_tick_field_equals_the_reference("band", "20")


def test_one_wrong_coefficient_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: the compiled band-pass with one coefficient off by 1e-12 (in the
    chain's kernel and in the fused block's) fails the stored reference (which the numpy
    path meets)."""
    real, real_block = kernels.chain_rms, kernels.block_step

    def perturbed(raw: np.ndarray, sos: np.ndarray, *rest: object) -> object:
        wrong = sos.copy()
        wrong[2, 1] *= 1 + 1e-12
        return real(raw, wrong, *rest)

    def block_perturbed(raw: np.ndarray, state: object, *rest: object) -> object:
        sos = kernels.block_sos(state)  # (the chain's own array: put back after the call)
        right = sos[2, 1]
        sos[2, 1] *= 1 + 1e-12
        try:
            return real_block(raw, state, *rest)
        finally:
            sos[2, 1] = right

    monkeypatch.setattr(kernels, "chain_rms", perturbed)
    monkeypatch.setattr(kernels, "block_step", block_perturbed)
    with pytest.raises(AssertionError, match="fields differ"):
        ref.test_every_tick_field_equals_the_reference("band", "20")


def test_the_usual_block_takes_the_fused_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled pipeline runs nearly every 20-sample block in one call (kernels.
    block_step), and the blocks it does not take (a window's first, a gap's settling) go
    step by step: both counted, so a fast path that silently stopped applying would show."""
    real_block, real_chain, fused_calls, chain_calls = (
        kernels.block_step,
        kernels.chain_rms,
        [0],
        [0],
    )

    def count_block(*args: object) -> int:
        fused_calls[0] += 1
        return int(real_block(*args))

    def count_chain(*args: object) -> None:
        chain_calls[0] += 1
        real_chain(*args)

    def counted() -> tuple[int, int]:
        fused_calls[0] = chain_calls[0] = 0
        blocks = int(ref.run("band", "20")["blocks"])
        assert fused_calls[0] + chain_calls[0] == blocks
        return fused_calls[0], blocks

    Pipeline(load_settings(environ={}), ref.RATE, ref.CHANNELS)  # (the warm-up, uncounted)
    monkeypatch.setattr(kernels, "block_step", count_block)
    monkeypatch.setattr(kernels, "chain_rms", count_chain)
    fast, blocks = counted()
    assert fast > 0.95 * blocks, (fast, blocks)
    # Negative control: a fused path that never applies is seen (and changes no result).
    monkeypatch.setattr(BlockSteps, "run", lambda *args: None)
    fast, blocks = counted()
    assert fast == 0 and blocks > 1000


@settings(max_examples=200, deadline=None)
@given(width=st.integers(1, 700), count=st.integers(1, 60), seed=st.integers(0, 2**31))
def test_windowed_sums_are_numpys_sums(width: int, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(width - 1 + count) ** 2 * 10.0 ** rng.integers(-8, 8)
    got, plan = np.empty(count), kernels.pairwise_plan(width)
    kernels.windowed_sums(a, plan, count, got)
    windows = np.lib.stride_tricks.sliding_window_view(a, width)
    np.testing.assert_array_equal(got, np.add.reduce(windows, axis=1))
    one = kernels.plan_sum(a, plan, np.empty(plan[1].shape[0]))  # (one window, no arrays)
    assert one.hex() == float(np.add.reduce(a[:width])).hex()


def test_a_left_to_right_sum_is_not_numpys() -> None:
    """Negative control for the above: summing each window left to right (what a naive
    kernel does) differs from numpy in the last bits."""
    a = np.random.default_rng(1).standard_normal(219) ** 2
    windows = np.lib.stride_tricks.sliding_window_view(a, 200)
    naive = np.array([sum(w.tolist(), 0.0) for w in windows])
    assert not np.array_equal(naive, np.add.reduce(windows, axis=1))


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 700),
    levels=st.integers(1, 6),
    seed=st.integers(0, 2**31),
    outliers=st.booleans(),
)
def test_the_compiled_rest_window_equals_the_numpy_one(
    n: int, levels: int, seed: int, outliers: bool
) -> None:
    """Points inserted one by one stay sorted as np.sort sorts them, and the window's mean
    and SD equal `_complete_mean_sd` to the bit (ties, outliers, flat rows)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, levels, (3, n)).astype(float) * 0.25 + rng.choice([0.0, 1e-3], (3, n))
    if outliers:
        x[1, rng.random(n) < 0.2] += 50.0
    points, ordered = np.empty_like(x), np.empty_like(x)
    no_mask = np.zeros((0, 0), dtype=bool)
    at = 0
    while at < n:
        step = int(rng.integers(1, 40))
        part = np.ascontiguousarray(x[:, at : at + step])
        at += kernels.baseline_add(part, no_mask, 0, 1, at, points, ordered)
    np.testing.assert_array_equal(points, x)
    np.testing.assert_array_equal(ordered, np.sort(x, axis=1))
    plan = kernels.pairwise_plan(n)
    ok, mean, sd = kernels.baseline_stats(points, ordered, plan, MAD_TO_SD, OUTLIER_SPREADS)
    want_mean, want_sd = _complete_mean_sd(x, np.sort(x, axis=1))
    assert ok
    np.testing.assert_array_equal(mean, want_mean)
    np.testing.assert_array_equal(sd, want_sd)


def test_importing_the_pipeline_does_not_import_numba() -> None:
    """numba (about 0.5 s) loads when a pipeline is built, not when its module is imported."""
    probe = "import sys, feedback.pipeline; print('numba' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.stdout.strip() == "False", done.stderr


def unwarmed_sample_types(signatures: list[tuple[object, ...]]) -> set[str]:
    """Sample types (of the raw block, the first argument) a fused-block dispatcher has not
    been compiled for."""
    have = {str(sig[0]) for sig in signatures}
    return {f"array({t}, 2d, C)" for t in ("float32", "float64")} - have


def test_the_warm_up_compiles_the_fused_block_for_both_sample_types() -> None:
    """A device may deliver float32 or float64 blocks: the warm-up (before a station opens
    its device) leaves neither to be compiled inside a session."""
    probe = (
        "from feedback.pipeline import compile_kernels; compile_kernels(); "
        "from feedback.processing import kernels; "
        "print('|'.join(str(sig[0]) for sig in kernels.block_step.signatures))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    warmed = [(t,) for t in out.stdout.strip().split("|")]  # (a fresh process: the warm-up's)
    assert unwarmed_sample_types(warmed) == set(), warmed
    # Negative control: a warm-up that ran float32 blocks only is caught.
    only_float32 = [sig for sig in warmed if "float32" in sig[0]]
    assert unwarmed_sample_types(only_float32) == {"array(float64, 2d, C)"}
