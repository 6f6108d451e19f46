"""The NATS logger's per-message savings keep its answers: topics kept per subject are the ones
rebuilt, within their bound; start-up frozen out of the collector leaves garbage collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator

import pytest

from feedback.clinic import nats_logger, nats_partitions
from feedback.clinic.nats_logger import collect_less, topic_of

SUBJECTS = [
    "vmf.v1.clinic-a.st_01.session.rep",
    "vmf.v1.clinic-a.st_01.session.cue",
    "vmfp.3.clinic-a.st_01.cmd.estop",
    "vmfp.0.clinic-b.st_02.live",
]


def _rebuilt(subject: str) -> str:
    if subject.startswith(nats_logger.PARTITIONED_PREFIX):
        return nats_partitions.topic_of(subject)
    return subject.replace(".", "/")


def _kept_unbounded() -> Callable[[str], str]:
    """A wrong keeping: every subject ever seen stays (subjects come from outside)."""
    kept: dict[str, str] = {}
    return lambda s: kept.setdefault(s, _rebuilt(s))


def _kept_by_station() -> Callable[[str], str]:
    """A wrong keeping: one topic per station, whatever the leaf."""
    kept: dict[str, str] = {}
    return lambda s: kept.setdefault(s.rsplit(".", 2)[0], _rebuilt(s))


@pytest.fixture
def none_kept() -> Iterator[None]:
    topic_of.cache_clear()
    yield
    topic_of.cache_clear()


def _right_and_bounded(read: Callable[[str], str], size: Callable[[], int]) -> bool:
    """Rounds of more and more subjects, the last twice as many as the bound."""
    for round_ in range(3):
        extra = [f"vmf.v1.c.st_{i}.session.cue" for i in range(round_ * nats_logger.TOPICS_KEPT)]
        for s in SUBJECTS + extra:
            if read(s) != _rebuilt(s) or size() > nats_logger.TOPICS_KEPT:
                return False
    return True


@pytest.mark.usefixtures("none_kept")
@pytest.mark.parametrize("way", ["correct", "unbounded", "by_station"])
def test_topics_kept_per_subject_are_the_rebuilt_ones_within_the_bound(way: str) -> None:
    """Each delivery's topic comes from the kept table (bounded: subjects are the stations'):
    equal to the rebuilt one, and the table never holds more than TOPICS_KEPT. Kept without a
    bound, or per station instead of per subject, fails."""
    if way == "correct":
        assert _right_and_bounded(topic_of, lambda: topic_of.cache_info().currsize)
        return
    wrong = _kept_unbounded() if way == "unbounded" else _kept_by_station()
    seen: set[str] = set()

    def read(s: str) -> str:
        seen.add(s)
        return wrong(s)

    size = (lambda: len(seen)) if way == "unbounded" else (lambda: 0)
    assert not _right_and_bounded(read, size)


@pytest.fixture
def collector_restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("collector_restored")
def test_collect_less_freezes_start_up_and_still_collects_cycles() -> None:
    """What exists at start-up leaves the collector; a cycle made afterwards is still freed
    (young collections are rarer, not off)."""
    collect_less()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == nats_logger.GC_YOUNG

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    assert gc.isenabled()
    gc.collect()
    assert gone() is None
