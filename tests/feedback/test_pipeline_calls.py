"""The usual block's count of Python and C calls (issue 12, item 4): at 20-sample blocks the
per-call overhead, not the arithmetic, is most of `Pipeline.process`, and a count (unlike a
time) is the same on a loaded machine, so a step that creeps back in fails here rather than
hiding in benchmark noise. The number is the compiled path's (the numpy path is the
reference, not the budget)."""

from __future__ import annotations

import pytest

from bench.bench_processing import calls_per_block, usual_blocks
from feedback.pipeline import CueStep, Pipeline, Tick

# The median over the usual block after this work (bench/bench_processing.py reports it as
# `calls_per_block`; 59 before it, docs/notes/block_profile.md).
BUDGET = 45


def test_the_usual_block_stays_within_its_call_budget() -> None:
    pytest.importorskip("feedback.processing.kernels")
    median, _ = calls_per_block(*usual_blocks(2.0))
    assert median <= BUDGET


def test_one_more_call_a_block_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Negative control: a wrapper around one step the usual block takes (one Python call
    more) shows as exactly one call more, over the budget when the budget is exact."""
    pytest.importorskip("feedback.processing.kernels")
    pipe, blocks = usual_blocks(2.0)
    twin, same = usual_blocks(2.0)  # the same pipeline at the same point, on the same blocks
    before, _ = calls_per_block(pipe, blocks)
    real = Pipeline.complete

    def wrapped(self: Pipeline, step: CueStep) -> Tick:
        return real(self, step)

    monkeypatch.setattr(Pipeline, "complete", wrapped)
    after, _ = calls_per_block(twin, same)
    assert after == before + 1
    assert before < BUDGET or after > BUDGET  # exact budget: the extra call fails the test
