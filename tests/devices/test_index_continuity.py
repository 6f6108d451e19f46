"""How a reconnect's sample-index jump is read (devices.link.IndexContinuity), without timing:
blocks are built with the arrival times a real link would stamp."""

from __future__ import annotations

import numpy as np

from devices.base import LinkStats, SampleBlock
from devices.link import IndexContinuity

RATE = 2000.0


def block(first: int, arrival: float, n: int = 20) -> SampleBlock:
    data = np.zeros((1, n), np.float32)
    return SampleBlock(first, arrival, RATE, ("VM",), data, t_arrival=arrival)


def replug(new_first: int, silence_s: float) -> tuple[int, LinkStats]:
    stats = LinkStats()
    keep = IndexContinuity(stats)
    keep.adjust(block(980, 0.5))  # the old device: 1,000 samples in 0.5 s
    keep.link_lost()
    back = keep.adjust(block(new_first, 0.5 + silence_s + 20 / RATE))
    return back.first_index, stats


def test_a_device_that_carried_on_gives_its_own_jump() -> None:
    first, stats = replug(1000 + 1200, 0.6)  # the counter ran on through 0.6 s of silence
    assert first == 2200 and stats.samples_lost == 1200


def test_a_restarted_device_behind_its_old_count_is_estimated_from_the_silence() -> None:
    first, stats = replug(100, 0.6)
    assert first == 1000 + 1200 and stats.samples_lost == 1200


def test_a_restarted_device_that_ran_longer_than_the_old_one_is_not_a_small_jump() -> None:
    # The host came back 1.1 s after the unplug, the new device had run 0.51 s: its counter
    # (1,020) is past the old end (1,000), but the 20-sample jump would hide 1.1 s of loss.
    first, stats = replug(1020, 1.1)
    assert stats.samples_lost == 2200 and first == 3200
