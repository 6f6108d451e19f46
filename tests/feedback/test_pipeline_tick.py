"""What the per-block cost work (issue 12, item 4) changed in the Tick's contract and in how
the fused block is fed: `complete` builds the Tick positionally (a field out of place would
go unseen by the reference digests, both paths sharing `complete`), the idle blanker hands one
read-only all-false mask to every block, and the onset detector hands its bound state with
its per-block arguments."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from config.loader import load_settings
from config.settings import Settings
from devices.base import SampleBlock
from feedback.pipeline import Pipeline, Tick
from feedback.processing import fused

RATE = 2000.0
CHANNELS = ("VM", "VL", "RF", "BF")


def settings() -> Settings:
    """A protocol whose sets, reps and the counts all differ, so a swap shows."""
    s = load_settings(environ={})
    return s.model_copy(update={"protocol": s.protocol.model_copy(update={"sets": 3, "reps": 4})})


def ticks(pipe: Pipeline, blocks: int, start: int = 0) -> list[Tick]:
    data = np.random.default_rng(3).standard_normal((len(CHANNELS), 20 * blocks)) * 0.01
    return [
        pipe.process(
            SampleBlock(start + 20 * i, 0.0, RATE, CHANNELS, data[:, 20 * i : 20 * i + 20])
        )
        for i in range(blocks)
    ]


def misplaced(tick: Tick, pipe: Pipeline) -> list[str]:
    """The fields whose value is not the pipeline's own (after the block, none pending)."""
    want = {
        "protocol": pipe.protocol.name,
        "sets": pipe.protocol.sets,
        "reps_total": pipe.reps_total,
        "contraction_count": pipe.counter.count,
        "contracting": pipe.counter.contracting,
        "band": (pipe.detector.low_pct, pipe.detector.high_pct),
        "band_raised": (),
        "switched_at": None,
        "calibration": None,
        "calibrated": None,
        "contractions": (),
    }
    wrong = [
        k for k, v in want.items() if getattr(tick, k) != v or type(getattr(tick, k)) is not type(v)
    ]
    if tick.activation is not tick.onsets or tick.blanked is None:
        wrong.append("activation/blanked")
    elif tick.blanked.shape != (tick.processed.envelope.shape[1],):
        wrong.append("blanked")
    return wrong


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
def test_every_tick_field_is_in_its_place(compiled: bool) -> None:
    s = settings()
    if compiled:
        pipe = Pipeline(s, RATE, CHANNELS)
    else:
        with fused.reference_path():
            pipe = Pipeline(s, RATE, CHANNELS)
    assert pipe.reps_total == 12 and pipe.protocol.sets == 3
    for tick in ticks(pipe, 60):
        assert misplaced(tick, pipe) == []
    # Negative control: two int fields swapped (what a positional slip makes) are seen.
    swapped = replace(tick, sets=tick.reps_total, reps_total=tick.sets)
    assert misplaced(swapped, pipe) == ["sets", "reps_total"]
    assert misplaced(replace(tick, contraction_count=tick.switched_at), pipe) == [
        "contraction_count"
    ]


def written(mask: np.ndarray) -> bool:
    """Whether a caller could write into the mask (and so into every later Tick's)."""
    try:
        mask[:1] = mask[:1]
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
def test_the_idle_blankers_mask_is_shared_and_read_only(compiled: bool) -> None:
    """One all-false mask for every idle block of a length: shared, so no Tick may edit it."""
    if compiled:
        pipe = Pipeline(settings(), RATE, CHANNELS)
    else:
        with fused.reference_path():
            pipe = Pipeline(settings(), RATE, CHANNELS)
    masks = [t.blanked for t in ticks(pipe, 30)]
    assert all(m is masks[0] for m in masks)
    assert masks[0] is not None and not masks[0].any() and not written(masks[0])
    # Negative control: the per-block mask made before was writable.
    assert written(np.zeros(20, dtype=bool))
    # A blank still holds the envelope: the held mask is then its own, with true samples.
    pipe.blanker.add(30 * 20 + 5, 30 * 20 + 10)
    held = ticks(pipe, 1, start=30 * 20)[0].blanked
    assert held is not None and held is not masks[0] and held[5:].all() and not held[:5].any()


def test_the_onset_state_handed_with_the_arguments_follows_the_window() -> None:
    """`OnsetDetector.fused_args` hands the state to bind (`fused_state`'s), cached while the
    window is the same and new after a gap starts a new one (else the fused block would learn
    into the old window's arrays)."""
    pytest.importorskip("feedback.processing.kernels")
    pipe = Pipeline(settings(), RATE, CHANNELS)
    ticks(pipe, 10)
    onset = pipe.onset
    before = onset.fused_args(20)
    assert before is not None and before[0] is onset.fused_state()
    onset.gap(0)
    ticks(pipe, 2, start=10 * 20)  # (the new window's first block makes its arrays)
    after = onset.fused_args(20)
    assert after is not None and after[0] is onset.fused_state()
    # Negative control: the state cached before the gap is not the new window's.
    assert before[0] is not after[0]


def test_the_block_states_class_type_is_each_instances() -> None:
    """numba's dispatcher types a BlockState by its class attribute (not StructRefProxy's
    per-instance property): it must be the type `bind_block` gives every instance."""
    kernels = pytest.importorskip("feedback.processing.kernels")
    from numba.experimental.structref import StructRefProxy

    pipe = Pipeline(settings(), RATE, CHANNELS)
    ticks(pipe, 10)
    steps = pipe._steps
    assert steps is not None
    state = steps._state
    assert isinstance(state, kernels.BlockState)
    own = StructRefProxy._numba_type_.fget(state)  # (the instance's, as numba boxed it)
    assert own == kernels.BlockState._numba_type_
    # Negative control: a BlockStateType with other fields is another type.
    from feedback.processing.kernels.block import BlockStateType, types

    assert own != BlockStateType(fields=(("rms", types.boolean),))


def test_reps_total_follows_a_protocol_switch() -> None:
    """`reps_total` is made when the protocol changes: the reps done before + the new
    protocol's reps x sets (not the old protocol's)."""
    s = settings()
    pipe = Pipeline(s, RATE, CHANNELS)
    ticks(pipe, 5)
    assert pipe.reps_total == 12
    new = s.protocol.model_copy(update={"sets": 2, "reps": 7, "name": "other"})
    pipe.change_protocol(new, s.target.low_pct, s.target.high_pct)
    last = ticks(pipe, 3, start=5 * 20)[-1]
    assert pipe.protocol is new and last.protocol == "other"
    assert pipe.reps_total == last.reps_total == pipe.exercise.state.reps_done + 14
    # Negative control: the old protocol's count is not what it says.
    assert last.reps_total != 12
