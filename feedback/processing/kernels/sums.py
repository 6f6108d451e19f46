"""numpy's pairwise summation (`pairwise_sum` in loops_utils.h.src: what `np.add.reduce`
does along a contiguous axis) reproduced to the bit: eight accumulators up to 128 values, halves
above that, for one window or for every window of a moving sum.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from feedback.processing.kernels.common import PAIRWISE_BLOCK, jit


def pairwise_plan(n: int) -> tuple[np.ndarray, np.ndarray]:
    """How numpy's pairwise sum splits n values (above PAIRWISE_BLOCK a sum is the sum of its
    two halves, the first a multiple of 8): the leaves (start, length) in order and, in
    post-order, the program `windowed_sums` runs (a leaf's index, or -1: add the top two).
    Computed once per window width, in Python: a recursive jitted function does not load
    reliably from numba's cache."""
    leaves: list[tuple[int, int]] = []
    ops: list[int] = []

    def walk(start: int, length: int) -> None:
        if length <= PAIRWISE_BLOCK:
            ops.append(len(leaves))
            leaves.append((start, length))
            return
        half = length // 2
        half -= half % 8
        walk(start, half)
        walk(start + half, length - half)
        ops.append(-1)

    walk(0, n)
    return np.array(leaves, dtype=np.int64).reshape(-1, 2), np.array(ops, dtype=np.int64)


@jit
def _leaf_sums(a: Any, off: int, n: int, count: int, out: Any) -> None:
    """out[i] = numpy's pairwise sum of a[off + i : off + i + n] for i < count, n at most
    PAIRWISE_BLOCK (loops_utils.h.src), with the same operations in the same order.

    Below 8 values: from 0.0, left to right. Otherwise eight accumulators, the j-th summing
    a[lo + j], a[lo + j + 8], ... left to right: for window i that sequence depends on i + j
    only, so each of the count + 7 sequences is summed once and shared by the windows."""
    if n < 8:
        for i in range(count):
            res = 0.0
            for k in range(n):
                res += a[off + i + k]
            out[i] = res
        return
    terms = n // 8
    # Term by term across the sequences (each still summed left to right): independent
    # additions, which LLVM vectorises, instead of one long dependent chain per sequence.
    seq = a[off : off + count + 7].copy()
    for q in range(1, terms):
        base = off + 8 * q
        for t in range(count + 7):
            seq[t] += a[base + t]
    stop = 8 * terms
    for i in range(count):
        res = ((seq[i] + seq[i + 1]) + (seq[i + 2] + seq[i + 3])) + (
            (seq[i + 4] + seq[i + 5]) + (seq[i + 6] + seq[i + 7])
        )
        for k in range(stop, n):
            res += a[off + i + k]
        out[i] = res


@jit
def _leaf_sum(a: Any, off: int, n: int) -> float:
    """`_leaf_sums` for one window, its accumulators as scalars (no array made)."""
    if n < 8:
        res = 0.0
        for k in range(n):
            res += a[off + k]
        return res
    r0, r1, r2, r3 = a[off], a[off + 1], a[off + 2], a[off + 3]
    r4, r5, r6, r7 = a[off + 4], a[off + 5], a[off + 6], a[off + 7]
    stop = n - n % 8
    for k in range(off + 8, off + stop, 8):
        r0 += a[k]
        r1 += a[k + 1]
        r2 += a[k + 2]
        r3 += a[k + 3]
        r4 += a[k + 4]
        r5 += a[k + 5]
        r6 += a[k + 6]
        r7 += a[k + 7]
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for k in range(off + stop, off + n):
        res += a[k]
    return res  # type: ignore[no-any-return]


@jit
def plan_sum(a: Any, plan: Any, stack: Any) -> float:
    """np.add.reduce(a[:width]) to the bit, with the plan `pairwise_plan(width)` gives and a
    scratch `stack` of at least len(plan[1]) values."""
    leaves, ops = plan
    top = 0
    for op in ops:
        if op >= 0:
            stack[top] = _leaf_sum(a, leaves[op, 0], leaves[op, 1])
            top += 1
        else:
            stack[top - 2] += stack[top - 1]
            top -= 1
    return stack[0]  # type: ignore[no-any-return]


@jit
def windowed_sums(a: Any, plan: Any, count: int, out: Any) -> None:
    """out[i] = np.add.reduce(a[i : i + width]) for i < count, to the bit, with the plan
    `pairwise_plan(width)` gives."""
    leaves, ops = plan
    stack = np.empty((ops.shape[0], count))
    top = 0
    for op in ops:
        if op >= 0:
            _leaf_sums(a, leaves[op, 0], leaves[op, 1], count, stack[top])
            top += 1
        else:
            for i in range(count):
                stack[top - 2, i] += stack[top - 1, i]
            top -= 1
    for i in range(count):
        out[i] = stack[0, i]
