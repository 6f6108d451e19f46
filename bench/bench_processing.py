"""Processing speed: per-block time of the full pipeline (4 channels, 2 kHz, 20-sample blocks)
against scipy's band-pass alone (the peer), throughput, how many sessions one process hosts on
the product's path (one `Pipeline` per session, with exercise, cues and metrics), and the ratio
against NeuroKit2's offline `emg_process` on the same real recording (when installed).

The machine may be shared: besides wall time, each block's thread CPU time is reported
(`time.thread_time_ns`), which leaves out the time other processes held the core."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal

from bench.stats import summary
from config.loader import load_settings
from devices.base import SampleBlock
from devices.recording_formats import load_recording
from feedback.pipeline import Pipeline
from feedback.processing import fused
from feedback.processing.chain import EmgChain

RATE = 2000.0
CHANNELS = ("VM", "VL", "RF", "BF")
BLOCK = 20
RECORDING = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "data" / "4Nsen.txt.gz"


def noise(seconds: float, rows: int = len(CHANNELS), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, int(seconds * RATE))) * 0.2).astype(np.float32)


def per_block(seconds: float) -> dict[str, Any]:
    """The product's pipeline (the compiled kernels when numba is there), the same pipeline on
    the numpy reference path (feedback.processing.fused.reference_path) and the peer, each
    block timed for all three in turn, so that all see the same machine."""
    settings = load_settings(environ={})
    data = noise(seconds)
    n_blocks = data.shape[1] // BLOCK
    pipe = Pipeline(settings, RATE, CHANNELS)
    with fused.reference_path():
        reference = Pipeline(settings, RATE, CHANNELS)
    sos = signal.butter(4, (20, 450), btype="bandpass", fs=RATE, output="sos")
    zi = np.zeros((sos.shape[0], len(CHANNELS), 2))
    names = ("pipeline", "reference", "peer")
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for i in range(n_blocks):
        chunk = data[:, i * BLOCK : (i + 1) * BLOCK]
        block = SampleBlock(i * BLOCK, 0.0, RATE, CHANNELS, chunk)
        c0, t0 = cpu_clock(), clock()
        pipe.process(block)
        t1, c1 = clock(), cpu_clock()
        reference.process(block)
        t2, c2 = clock(), cpu_clock()
        _, zi = signal.sosfilt(sos, chunk, axis=1, zi=zi)
        t3, c3 = clock(), cpu_clock()
        for name, (a, b), (ca, cb) in zip(
            names, ((t0, t1), (t1, t2), (t2, t3)), ((c0, c1), (c1, c2), (c2, c3)), strict=True
        ):
            wall[name].append((b - a) / 1e3)
            cpu[name].append((cb - ca) / 1e3)
    w = {name: summary(wall[name], "us") for name in names}
    c = {name: summary(cpu[name], "us") for name in names}
    total_s = sum(wall["pipeline"]) / 1e6
    kernels = fused.kernels()
    median, most = calls_per_block(*usual_blocks(5.0))
    calls = {"median": median, "max": most}
    return {
        "what": f"Pipeline.process (chain, quality, onsets, activation, band, exercise, cues, "
        f"metrics) per {BLOCK}-sample block, {len(CHANNELS)} channels, {RATE:.0f} Hz, "
        f"{n_blocks} blocks; reference = the same on the numpy path; peer = scipy sosfilt "
        f"band-pass alone on the same blocks",
        "kernel_path": "numpy (numba not installed or VMF_KERNELS=numpy)"
        if kernels is None
        else f"numba {kernels.numba_version()}",
        "pipeline_block_us": w["pipeline"],
        "reference_numpy_block_us": w["reference"],
        "peer_sosfilt_block_us": w["peer"],
        "ratio_p50": _ratio(w["pipeline"], w["peer"], "p50"),
        "ratio_p99": _ratio(w["pipeline"], w["peer"], "p99"),
        "reference_ratio_p50": _ratio(w["reference"], w["peer"], "p50"),
        "reference_ratio_p99": _ratio(w["reference"], w["peer"], "p99"),
        "pipeline_block_cpu_us": c["pipeline"],
        "reference_numpy_block_cpu_us": c["reference"],
        "peer_sosfilt_block_cpu_us": c["peer"],
        "cpu_ratio_p50": _ratio(c["pipeline"], c["peer"], "p50"),
        "cpu_ratio_p99": _ratio(c["pipeline"], c["peer"], "p99"),
        "reference_cpu_ratio_p50": _ratio(c["reference"], c["peer"], "p50"),
        "reference_cpu_ratio_p99": _ratio(c["reference"], c["peer"], "p99"),
        "pipeline_over_reference_cpu_p50": _ratio(c["pipeline"], c["reference"], "p50"),
        "goal_us": {"p50": 80, "p99": 150},
        "realtime_budget_us": BLOCK / RATE * 1e6,
        "streaming_throughput_samples_per_s": round(n_blocks * BLOCK / total_s),
        "envelope_group_delay_ms": round(pipe.chain.group_delay_ms, 1),
        "calls_per_block": calls,
    }


def _ratio(ours: dict[str, Any], peer: dict[str, Any], key: str) -> float:
    return round(float(ours[key]) / float(peer[key]), 2)


def calls_per_block(pipe: Pipeline, blocks: list[SampleBlock]) -> tuple[int, int]:
    """(median, most) Python and C calls `pipe.process` makes per block over `blocks`, as
    `sys.setprofile` sees them: a count, not a time, so the same on a loaded machine (the
    profiler's own `setprofile` call to stop is left out)."""
    counts = []
    seen = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal seen
        if event in ("call", "c_call"):
            seen += 1

    for block in blocks:
        seen = 0
        sys.setprofile(count)
        pipe.process(block)
        sys.setprofile(None)
        counts.append(seen - 1)
    return round(statistics.median(counts)), max(counts)


def usual_blocks(seconds: float, warm_s: float = 10.0) -> tuple[Pipeline, list[SampleBlock]]:
    """A pipeline (default settings) warmed on `warm_s` of noise, and the next `seconds` of
    noise in 20-sample blocks: the usual block, past the first rest windows."""
    settings = load_settings(environ={})
    data = noise(warm_s + seconds)
    blocks = [
        SampleBlock(i, 0.0, RATE, CHANNELS, data[:, i : i + BLOCK])
        for i in range(0, data.shape[1], BLOCK)
    ]
    pipe = Pipeline(settings, RATE, CHANNELS)
    warm = round(warm_s * RATE) // BLOCK
    for block in blocks[:warm]:
        pipe.process(block)
    return pipe, blocks[warm:]


def throughput(seconds: float) -> dict[str, Any]:
    """The full pipeline fed 1 s blocks: what one core does when block overhead is amortised."""
    settings = load_settings(environ={})
    data = noise(seconds)
    pipe = Pipeline(settings, RATE, CHANNELS)
    step = int(RATE)
    t0 = time.perf_counter()
    for i in range(0, data.shape[1], step):
        pipe.process(SampleBlock(i, 0.0, RATE, CHANNELS, data[:, i : i + step]))
    dt = time.perf_counter() - t0
    return {
        "what": f"full Pipeline, {len(CHANNELS)} channels at {RATE:.0f} Hz, 1 s blocks, one core",
        "samples_per_s": round(data.shape[1] / dt),
        "channel_samples_per_s": round(data.size / dt),
        "x_realtime": round(data.shape[1] / dt / RATE, 1),
    }


def sessions_per_process(
    sizes: tuple[int, ...] = (1, 8, 16, 32, 48, 64), seconds: float = 2.0
) -> dict[str, Any]:
    """The product's path for many sessions: one `Pipeline` per session (exercise, cues,
    metrics and all), each fed its own 20-sample block once per 10 ms round, in one process on
    one core. A size is sustained when a whole round's p99 fits in the 10 ms budget; on a shared
    machine the wall-time figure counts other processes' turns too, so the thread CPU time of
    a round gives the capacity of a core of one's own."""
    settings = load_settings(environ={})
    budget_us = BLOCK / RATE * 1e6
    rows: dict[str, Any] = {}
    capacity, cpu_capacity = 0, 0
    for s in sizes:
        pipes = [Pipeline(settings, RATE, CHANNELS) for _ in range(s)]
        data = [noise(seconds, seed=k) for k in range(s)]
        wall, cpu = [], []
        for i in range(0, data[0].shape[1], BLOCK):
            c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
            for pipe, d in zip(pipes, data, strict=True):
                pipe.process(SampleBlock(i, 0.0, RATE, CHANNELS, d[:, i : i + BLOCK]))
            wall.append((time.perf_counter_ns() - t0) / 1e3)
            cpu.append((time.thread_time_ns() - c0) / 1e3)
        st, ct = summary(wall, "us"), summary(cpu, "us")
        rows[str(s)] = {
            "wall": st,
            "cpu": ct,
            "per_session_cpu_us_p50": round(float(ct["p50"]) / s, 2),
        }
        capacity = s if float(st["p99"]) < budget_us else capacity
        cpu_capacity = s if float(ct["p99"]) < budget_us else cpu_capacity
    return {
        "what": "one Pipeline per session (the live path), 4 channels at 2 kHz, one 20-sample "
        "block per session per round, all in one process; time per round",
        "round_us_by_sessions": rows,
        "realtime_budget_us": budget_us,
        "sessions_sustained_p99_within_budget": capacity,
        "sessions_sustained_cpu_p99_within_budget": cpu_capacity,
    }


def neurokit_ratio(repeats: int = 5) -> dict[str, Any]:
    rec = load_recording(RECORDING)
    vm = rec.data[rec.channels.index("VM")].astype(np.float64)
    settings = load_settings(environ={})
    rate = rec.rate_hz

    def ours_offline() -> None:
        chain = EmgChain(settings.processing, settings.calibration, rate, ("VM",))
        chain.process(SampleBlock(0, 0.0, rate, ("VM",), vm[None, :]))

    def ours_streaming() -> None:
        pipe = Pipeline(settings, rate, ("VM",))
        for i in range(0, vm.shape[0], 10):
            pipe.process(SampleBlock(i, 0.0, rate, ("VM",), vm[None, i : i + 10]))

    out: dict[str, Any] = {
        "what": f"VM of {RECORDING.name} ({vm.shape[0]} samples at {rate:.0f} Hz), best of "
        f"{repeats}; ratio = neurokit time / ours",
        "ours_offline_chain_ms": _best(ours_offline, repeats),
        "ours_streaming_pipeline_10_sample_blocks_ms": _best(ours_streaming, repeats),
    }
    try:
        import neurokit2 as nk
    except ImportError:
        out["neurokit2"] = "not installed: pip install neurokit2 (benchmark only) for this figure"
        return out
    nk_ms = _best(lambda: nk.emg_process(vm, sampling_rate=int(rate)), repeats)
    out.update(
        neurokit2_version=nk.__version__,
        neurokit2_emg_process_ms=nk_ms,
        ratio_vs_offline_chain=round(nk_ms / out["ours_offline_chain_ms"], 1),
        ratio_vs_streaming_pipeline=round(
            nk_ms / out["ours_streaming_pipeline_10_sample_blocks_ms"], 2
        ),
    )
    return out


def _best(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 2)


def run(seconds: float = 60.0) -> dict[str, Any]:
    return {
        "per_block": per_block(seconds),
        "throughput": throughput(seconds),
        "sessions_per_process": sessions_per_process(),
        "neurokit2": neurokit_ratio(),
    }
