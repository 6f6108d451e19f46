"""Compiled per-block kernels (numba) for the chain, the signal quality, the onset rest window,
the switches and the activation frames, one module per step, and `block`: the usual block
through all of them in one call.

Each kernel runs one block over all channels, with the state carried between blocks in the
arrays the numpy path keeps (the SOS `zi` per channel, the moving-RMS history, the quality's
run counters), and computes every value with the operations of that path in the same order,
so the results are the same to the bit:

- the SOS cascade is scipy's `_sosfilt` (direct form II transposed, section after section);
- a sum is numpy's pairwise summation (`pairwise_sum` in loops_utils.h.src: what
  `np.add.reduce` does along a contiguous axis: eight accumulators up to 128 values, halves
  above that), the moving RMS's windows included;
- no fast-math, so LLVM contracts nothing into fused multiply-adds.

numba is imported here only: `feedback.processing.fused` loads this package on first use, so
neither `run_feedback.py --help` nor a caller that only designs filters pays for it. Every
function is compiled once per machine and cached on disk (`cache=True`).
"""

from __future__ import annotations

from feedback.processing.kernels.baseline import (
    _running_total,
    baseline_add,
    baseline_add_running,
    baseline_add_window,
    baseline_stats,
    baseline_stats_running,
    running_plan,
)
from feedback.processing.kernels.block import BlockState, bind_block, block_sos, block_step
from feedback.processing.kernels.chain import cascade, chain_lowpass, chain_rms
from feedback.processing.kernels.common import (
    CLIP,
    FLAT,
    MAD_TO_SD,
    MAINS,
    MOTION,
    OUTLIER_SPREADS,
    PAIRWISE_BLOCK,
    RELEARN_RATIO,
    numba_version,
)
from feedback.processing.kernels.frames import frame_close
from feedback.processing.kernels.quality import quality_flags
from feedback.processing.kernels.sums import pairwise_plan, plan_sum, windowed_sums
from feedback.processing.kernels.switch import activation_switch, band_zone, debounce

__all__ = [
    "CLIP",
    "FLAT",
    "MAD_TO_SD",
    "MAINS",
    "MOTION",
    "OUTLIER_SPREADS",
    "PAIRWISE_BLOCK",
    "RELEARN_RATIO",
    "BlockState",
    "_running_total",
    "activation_switch",
    "band_zone",
    "baseline_add",
    "baseline_add_running",
    "baseline_add_window",
    "baseline_stats",
    "baseline_stats_running",
    "bind_block",
    "block_sos",
    "block_step",
    "cascade",
    "chain_lowpass",
    "chain_rms",
    "debounce",
    "frame_close",
    "numba_version",
    "pairwise_plan",
    "plan_sum",
    "quality_flags",
    "running_plan",
    "windowed_sums",
]
