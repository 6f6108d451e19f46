"""The partitioned logger's side tasks, without a cluster: how long a held message stays with
the stream, which partitions' consumers the renewal task looks up, and that the looks go at once
(nats_logger.py: `hold_delay`, `_to_look_at`, `_look_at_consumers`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, cast

import pytest
from nats.aio.msg import Msg
from nats.js.api import ConsumerInfo

from feedback.clinic import nats_logger
from feedback.clinic.nats_group import FeedSet
from feedback.clinic.nats_logger import HOLD_MAX_S, HOLD_S, NatsLogger, hold_delay
from feedback.clinic.nats_pull import PullFeed

ACK_WAIT_S = 3.0


def delivered(times: int) -> Msg:
    """A JetStream delivery as nats-py reads it: the count is in the reply subject."""
    reply = f"$JS.ACK.VMFP.loggers-p3.{times}.100.{100 + times}.1700000000000000000.0"
    return Msg(cast(Any, None), subject="vmfp.3.c.s.live", reply=reply, data=b"{}")


def fixed_delay(m: Msg) -> float:
    return HOLD_S


@pytest.mark.parametrize("variant", ["correct", "fixed"])
def test_a_held_message_waits_longer_at_each_delivery(variant: str) -> None:
    """Given back at its first delivery for HOLD_S, then twice as long each time, up to
    HOLD_MAX_S. Control: the fixed delay, under which held messages keep crowding the pulls."""
    delay: Callable[[Msg], float] = fixed_delay if variant == "fixed" else hold_delay
    delays = [delay(delivered(n)) for n in range(1, 9)]
    ok = (
        delays[:4] == [HOLD_S, 2 * HOLD_S, 4 * HOLD_S, 8 * HOLD_S]
        and delays == sorted(delays)
        and delays[-1] == HOLD_MAX_S
    )
    assert ok is (variant == "correct")


class Floor:
    safe = False


class Feed:
    """A partition's feed that delivers at every look, with an unsafe ack floor."""

    def __init__(self) -> None:
        self.floor = Floor()

    def delivered_since_last_look(self) -> bool:
        return True


class Feeds:
    def __init__(self, feeds: dict[int, Any]) -> None:
        self.feeds = feeds


class SilentOnly(NatsLogger):
    """Looks up only the consumers of feeds that fell silent, as before."""

    def _to_look_at(self, feeds: FeedSet, now: float) -> dict[int, PullFeed]:
        return {k: f for k, f in feeds.feeds.items() if not f.delivered_since_last_look()}


def logger(kind: type[NatsLogger] = NatsLogger) -> NatsLogger:
    return kind(["nats://127.0.0.1:1"], cast(Any, None), partitions=8, ack_wait_s=ACK_WAIT_S)


@pytest.mark.parametrize("variant", ["correct", "silent-only"])
def test_a_floor_unsafe_too_long_is_looked_at_while_it_delivers(variant: str) -> None:
    """A floor unsafe since the first look and still so after twice ack_wait has its consumer
    looked up although it delivers (its copies never let it fall silent); not before. Control:
    looking only at silent feeds never looks at it."""
    it = logger(SilentOnly if variant == "silent-only" else NatsLogger)
    feeds = cast(FeedSet, Feeds({3: Feed()}))
    assert it._to_look_at(feeds, now=100.0) == {}
    later = 100.0 + nats_logger.UNSAFE_FLOOR_LOOK * ACK_WAIT_S + 0.1
    assert (list(it._to_look_at(feeds, now=later)) == [3]) is (variant == "correct")


class SilentFeed(Feed):
    def delivered_since_last_look(self) -> bool:
        return False


class CountingJs:
    """consumer_info that never answers in time, counting how many wait at once."""

    def __init__(self) -> None:
        self.waiting = 0
        self.most = 0

    async def consumer_info(self, stream: str, durable: str, timeout: float) -> ConsumerInfo:
        self.waiting += 1
        self.most = max(self.most, self.waiting)
        try:
            await asyncio.sleep(0.01)
            raise TimeoutError
        finally:
            self.waiting -= 1


class OneAfterAnother(NatsLogger):
    async def _look_at_consumers(self, js: Any, feeds: FeedSet) -> set[int]:
        for k in self._to_look_at(feeds, 0.0):
            with contextlib.suppress(TimeoutError):
                await self._consumer_info(js, k)
        return set()


@pytest.mark.parametrize("variant", ["correct", "one-after-another"])
async def test_the_looks_go_at_once(variant: str) -> None:
    """Three silent partitions whose consumers do not answer: the three looks wait together,
    so that together they take one timeout, not three, before the next renewal. Control:
    one after the other (two timeouts of a third of the lease each let every lease age out
    in a loaded run)."""
    it = logger(OneAfterAnother if variant == "one-after-another" else NatsLogger)
    feeds = cast(FeedSet, Feeds({k: SilentFeed() for k in (1, 4, 6)}))
    js = CountingJs()
    gone = await it._look_at_consumers(cast(Any, js), feeds)
    assert gone == set()
    assert (js.most == 3) is (variant == "correct")
