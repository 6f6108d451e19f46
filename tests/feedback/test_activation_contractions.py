"""The one definition of a contraction (feedback.processing.contractions)."""

from __future__ import annotations

import numpy as np
import pytest

from feedback.processing.contractions import (
    activation_runs,
    contraction_spans,
    count_contractions,
)

RATE = 1000.0


def pattern(*parts: tuple[bool, float]) -> np.ndarray:
    return np.concatenate([np.full(round(s * RATE), on, dtype=bool) for on, s in parts])


def test_runs_of_an_empty_an_all_off_and_an_all_on_array() -> None:
    assert activation_runs(np.zeros(0, bool)) == []
    assert activation_runs(np.zeros(5, bool)) == []
    assert activation_runs(np.ones(5, bool)) == [(0, 5)]


def test_blips_do_not_count_and_a_held_effort_does() -> None:
    a = pattern((False, 1), (True, 0.2), (False, 1), (True, 0.8), (False, 1))
    assert contraction_spans(a, RATE) == [(2200, 3000)]
    assert count_contractions(a, RATE) == 1


def test_short_dips_merge_before_the_duration_check() -> None:
    # 0.3 s + 0.1 s dip + 0.3 s: one effort of 0.7 s, although each part is under 0.5 s.
    a = pattern((False, 1), (True, 0.3), (False, 0.1), (True, 0.3), (False, 1))
    assert count_contractions(a, RATE) == 1
    assert count_contractions(a, RATE, merge_gap_s=0.05) == 0
    # A real relaxation between two efforts keeps them apart.
    b = pattern((True, 1), (False, 0.6), (True, 1))
    assert count_contractions(b, RATE) == 2


def test_a_run_open_at_either_end_counts() -> None:
    a = pattern((True, 0.6), (False, 1), (True, 0.6))
    assert contraction_spans(a, RATE) == [(0, 600), (1600, 2200)]


def test_min_on_boundary_is_inclusive() -> None:
    assert count_contractions(pattern((True, 0.5)), RATE) == 1
    assert count_contractions(pattern((True, 0.499)), RATE) == 0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        count_contractions(np.zeros((2, 3), bool), RATE)
    with pytest.raises(ValueError):
        count_contractions(np.zeros(3, bool), 0.0)
