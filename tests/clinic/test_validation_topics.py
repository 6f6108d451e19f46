"""The check's per-topic saving keeps its answers: a topic's (clinic, station, leaf) kept is the
one matched, within its bound, and a refused topic is refused each time."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator

import pytest

from feedback.clinic import validation
from feedback.clinic.validation import InvalidMessage

Parts = tuple[str, ...]
TOPICS = [f"vmf/v1/clinic-a/st_01/{leaf}" for leaf in ("rep", "cue", "cmd/estop")]
REFUSED = "vmf/v1/clinic-a/st.01/rep"  # a dot in a station id


def _matched(topic: str) -> Parts:
    m = re.fullmatch(r"vmf/v1/([^/]+)/([^/]+)/(.+)", topic)
    if m is None or "." in topic:
        raise InvalidMessage("not a station topic", "topic")
    return m.groups()


def _kept_unbounded() -> Callable[[str], Parts]:
    """A wrong keeping: every topic ever seen stays (topics come from outside)."""
    kept: dict[str, Parts] = {}
    return lambda t: kept[t] if t in kept else kept.setdefault(t, _matched(t))


def _kept_by_station() -> Callable[[str], Parts]:
    """A wrong keeping: one answer per station, whatever the leaf."""
    kept: dict[str, Parts] = {}
    return lambda t: kept.setdefault(t.rsplit("/", 1)[0], _matched(t))


def _refusal_kept() -> Callable[[str], Parts]:
    """A wrong keeping: a refused topic remembered as the last good one's answer."""
    last: list[Parts] = [("", "", "")]

    def read(t: str) -> Parts:
        with contextlib.suppress(InvalidMessage):
            last[0] = validation._topic_parts(t)
        return last[0]

    return read


@pytest.fixture
def none_kept() -> Iterator[None]:
    validation._topic_parts.cache_clear()
    yield
    validation._topic_parts.cache_clear()


def _right_and_bounded(read: Callable[[str], Parts], size: Callable[[], int]) -> bool:
    """Rounds of more and more topics, the last twice as many as the bound."""
    for round_ in range(3):
        extra = [f"vmf/v1/c/st_{i}/cue" for i in range(round_ * validation.TOPICS_KEPT)]
        for t in [*TOPICS, *extra]:
            if read(t) != _matched(t) or size() > validation.TOPICS_KEPT:
                return False
        with pytest.raises(InvalidMessage):
            read(REFUSED)
    return True


@pytest.mark.usefixtures("none_kept")
@pytest.mark.parametrize("way", ["correct", "unbounded", "by_station", "refusal_kept"])
def test_topic_parts_kept_are_the_matched_ones_within_the_bound(way: str) -> None:
    """Each topic's parts come from the kept table: equal to the matched ones, the table never
    holds more than TOPICS_KEPT, and a refused topic is refused again (not kept: lru_cache
    keeps no exception), so each message on it is counted. Kept without a bound, per station
    instead of per topic, or a refusal turned into an answer, fails."""
    if way == "correct":
        parts = validation._topic_parts
        ok = _right_and_bounded(parts, lambda: parts.cache_info().currsize)
    elif way == "refusal_kept":
        try:
            ok = _right_and_bounded(_refusal_kept(), lambda: 0)
        except pytest.fail.Exception:
            ok = False
    else:
        wrong = _kept_unbounded() if way == "unbounded" else _kept_by_station()
        seen: set[str] = set()

        def read(t: str) -> Parts:
            seen.add(t)
            return wrong(t)

        ok = _right_and_bounded(read, (lambda: len(seen)) if way == "unbounded" else (lambda: 0))
    assert ok is (way == "correct")
