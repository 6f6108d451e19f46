"""The pull feeds of the partitions one logger instance holds, read as one.

One PullFeed (nats_pull.py) per partition held, each on the partition's durable consumer; a
batch gathers what they have buffered (taking from each in turn), so one transaction stores
messages of several partitions, as the unpartitioned logger's batches mix stations. A
partition given back is drained first: its reader stops asking and the messages already on
their way are still stored (or they would wait out ack_wait with nobody).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerInfo

from feedback.clinic.nats_ackall import AckFloor
from feedback.clinic.nats_partitions import durable_name
from feedback.clinic.nats_pull import LINGER_S, PullFeed


class FeedSet:
    def __init__(self, nc: NATS, stream: str, group: str, *, batch: int, ahead: int) -> None:
        self.nc = nc
        self.stream = stream
        self.group = group
        self.batch = batch
        self.ahead = ahead
        self.feeds: dict[int, PullFeed] = {}
        # By durable name, kept after a partition is given back: its drained messages are
        # acknowledged after the feed has gone.
        self.floors: dict[str, AckFloor] = {}
        self.arrived = asyncio.Event()
        self._turn = 0

    @property
    def unavailable(self) -> int:
        return sum(f.unavailable for f in self.feeds.values())

    async def add(self, partition: int, info: ConsumerInfo | None = None) -> None:
        """`info`: the consumer as bound, before this reader asked it for anything (an
        AckPolicy.ALL consumer is acked through an AckFloor that starts from it)."""
        durable = durable_name(self.group, partition)
        floor = None
        if info is not None and info.config.ack_policy == AckPolicy.ALL:
            floor = self.floors[durable] = AckFloor(info)
        else:
            self.floors.pop(durable, None)
        feed = PullFeed(self.nc, self.stream, durable, batch=self.batch, ahead=self.ahead,
                        arrived=self.arrived, floor=floor)  # fmt: skip
        await feed.start()
        self.feeds[partition] = feed

    async def remove(self, partition: int) -> list[Msg]:
        """Stop reading a partition; returns what it had delivered, to be stored."""
        feed = self.feeds.pop(partition)
        try:
            return await feed.drain()
        finally:
            with contextlib.suppress(Exception):
                await feed.close()

    async def drop(self, partition: int) -> None:
        """Stop reading a partition whose consumer is gone: nothing more will come."""
        with contextlib.suppress(Exception):
            await self.feeds.pop(partition).close()

    async def close(self) -> None:
        for feed in self.feeds.values():
            with contextlib.suppress(Exception):
                await feed.close()
        self.feeds.clear()

    def shared(self) -> None:
        for feed in self.feeds.values():
            feed.shared()

    async def take(self, timeout_s: float) -> list[Msg]:
        """Up to about `batch` messages from the partitions held, each partition's in its
        stream order; waits LINGER_S once for a batch to fill; [] after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        out: list[Msg] = []
        lingered = False
        while True:
            self.arrived.clear()  # before looking: an arrival meanwhile is not missed
            feeds = list(self.feeds.values())
            self._turn = (self._turn + 1) % max(len(feeds), 1)
            for feed in feeds[self._turn :] + feeds[: self._turn]:
                if len(out) >= self.batch:
                    break
                out.extend(await feed.take(0.0))
            left = deadline - time.monotonic()
            if len(out) >= self.batch or left <= 0 or (out and lingered):
                return out
            lingered = bool(out)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), LINGER_S if out else left)
