"""The durable consumer's messages, requested ahead of the logger (JetStream pull, nats-py).

nats-py's `PullSubscription.fetch` asks for a batch only when the logger asks for one, so the
stream stands still while a batch is stored, and it takes each message through `next_msg`
(a task, a timer and a uuid per message): the bare fetch-and-ack loop tops out near 16-19k
messages/s on the bench's 2-core machine, and the logger spent two thirds of its time waiting
in it. Here one pull request at a time stays with the server while the logger stores a batch,
and the messages land in a buffer from a subscription callback; the logger takes a batch from
the buffer. Nothing else changes: a message is still acknowledged by the logger, after its
commit; a message buffered when the logger dies is given to another instance after ack_wait,
as one it was storing would be. The buffer holds at most `ahead` batches, which the logger
stores in well under ack_wait.

A request is for `batch` messages and expires after `expires_s`: it ends when that many came,
or with a status (408: expired, with the count it did not deliver; 409: a conflict, such as a
leader change; 503: no consumer leader to answer, while the cluster elects one). A request
that neither delivered nor ended by `expires_s` plus a grace (lost with a connection) counts
as ended, so the feed never stalls waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import weakref
from collections.abc import Callable

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.client import __version__ as nats_py_version
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from feedback.clinic.nats_ackall import AckFloor, Delivered

STATUS = "Status"
PENDING = "Nats-Pending-Messages"
LINGER_S = 0.005  # once some messages are here: how long to wait for the rest of a batch
LOST_REQUEST_GRACE_S = 2.0
RETRY_S = 0.2  # after a request the cluster could not serve (an election): before the next
SHARED_S = 5.0  # after the logger met another instance's sessions: no reading ahead this long


_DIRECT = "_vmf_direct_sids"  # on the client: subscription id -> the feed's delivery handler
# The nats-py whose `Client._process_msg` the direct path was written and tested against: with
# any other, the feeds take nats-py's own path (a test fails, so the internals are read again).
NATS_PY = "2.16.0"
DIRECT = nats_py_version == NATS_PY


def _direct(nc: NATS) -> dict[int, Callable[[Msg], None]]:
    """The feeds' subscriptions whose deliveries skip nats-py's per-message path.

    nats-py parses every message's headers (the MQTT gateway's deliveries carry some) and
    hands it through the subscription's queue to a task that awaits the callback: ~6 us a
    message on the bench machine, a tenth of the logger's CPU, for headers the logger never
    reads. A delivery (no inline status) to a feed's inbox becomes a Msg without headers
    (a Delivered, which reads its reply subject once), given to the feed at once; a status
    (408, 409, 503, a heartbeat) and every other subscription's messages take nats-py's path
    (`Client._process_msg`, nats-py 2.16)."""
    table: dict[int, Callable[[Msg], None]] | None = getattr(nc, _DIRECT, None)
    if table is not None:
        return table
    table = {}
    original = nc._process_msg

    async def process_msg(
        sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        handler = table.get(sid)
        # (A slice, not an index: a header block cut short goes to nats-py's own path, whose
        # parser says what is wrong with it, instead of raising here in its read loop.)
        if handler is None or (
            headers and headers[HEADER_LINE_SIZE : HEADER_LINE_SIZE + 1] != b"\r"
        ):
            await original(sid, subject, reply, data, headers)
            return
        nc.stats["in_msgs"] += 1
        nc.stats["in_bytes"] += len(data)
        handler(Delivered(_client=nc, subject=subject.decode(), reply=reply.decode(),
                          data=data, _sid=sid))  # fmt: skip

    nc._process_msg = process_msg  # type: ignore[method-assign]
    setattr(nc, _DIRECT, table)
    return table


# Each client's started feeds, whose buffers share one budget; kept beside the client, not
# written onto nats-py's object, and gone with it.
_FEEDS: weakref.WeakKeyDictionary[NATS, set[PullFeed]] = weakref.WeakKeyDictionary()


def _feeds(nc: NATS) -> set[PullFeed]:
    """The feeds reading on one client: one logger instance's (the partitions it holds)."""
    return _FEEDS.setdefault(nc, set())


HEADER_LINE_SIZE = len(b"NATS/1.0")  # then " <status>" for a status, CRLF for headers only


class ConsumerGone(nats.js.errors.APIError):
    """The server says the consumer was deleted: the logger binds (creates) it again."""


class PullFeed:
    def __init__(
        self,
        nc: NATS,
        stream: str,
        durable: str,
        *,
        batch: int,
        ahead: int = 2,
        expires_s: float = 1.0,
        api_prefix: str = "$JS.API",
        arrived: asyncio.Event | None = None,
        floor: AckFloor | None = None,
    ) -> None:
        self.nc = nc
        self.durable = durable
        self.floor = floor  # AckPolicy.ALL: what one ack may cover (nats_ackall.py)
        self.arrived = arrived  # set when a message lands or a request ends (FeedSet's wait)
        self.batch = batch
        self.ahead = ahead
        self.expires_s = expires_s
        self.subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.unavailable = 0  # 503s and conflicts: the cluster had no consumer leader to ask
        self.received = 0  # messages delivered, all requests together
        self._looked_at = 0  # `received` when `delivered_since_last_look` last asked
        self._buffer: list[Msg] = []
        self._full = asyncio.Event()  # a batch is buffered, or a request ended
        self._inbox = ""
        self._sub: Subscription | None = None
        self._owed = 0  # messages the request in flight may still deliver
        self._asked_at = 0.0  # monotonic time the request in flight was sent (0: none)
        self._pause_until = 0.0  # monotonic: no request before it
        self._shared_until = 0.0  # monotonic: until then, ask only when the buffer is empty
        self._gone: str | None = None  # why the consumer is gone, raised by `take`
        self._draining = False  # no more requests: the partition is being given back

    async def start(self) -> None:
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self._inbox, cb=self._on_msg)
        if DIRECT:
            _direct(self.nc)[self._sub._id] = self._arrive
        _feeds(self.nc).add(self)

    async def close(self) -> None:
        _feeds(self.nc).discard(self)
        if self._sub is not None:
            sub, self._sub = self._sub, None
            if DIRECT:
                _direct(self.nc).pop(sub._id, None)
            await sub.unsubscribe()
        self._buffer.clear()

    async def drain(self) -> list[Msg]:
        """Stop asking; once the request in flight has ended (or been given up on), what it
        and earlier ones delivered. Closing with a request in flight would leave what it
        still delivers unacknowledged with nobody, until ack_wait."""
        self._draining = True
        deadline = time.monotonic() + self.expires_s + LOST_REQUEST_GRACE_S
        while self._asked_at and time.monotonic() < deadline:
            self._full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), max(deadline - time.monotonic(), 0))
        out, self._buffer = self._buffer, []
        return out

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def waiting(self) -> list[Msg]:
        """The messages delivered and not yet taken by the logger."""
        return list(self._buffer)

    def delivered_since_last_look(self) -> bool:
        """Whether messages came since the last call: then the consumer exists, and asking the
        servers (CONSUMER.INFO) would only slow it down (nats_logger.py, `_renew`)."""
        came, self._looked_at = self.received != self._looked_at, self.received
        return came

    def shared(self) -> None:
        """Another instance pulls the same sessions (the order gate held some of this batch):
        stop reading ahead for SHARED_S. With requests always waiting on both sides the server
        deals the stream out between them a few messages at a time, so every batch of each
        would wait for the other's; asked only when needed, each gets a run of the stream, and
        the instances take turns batch by batch (two PostgreSQL loggers, 20k messages of 50
        sessions: 1.0k msg/s reading ahead, 2.7k without)."""
        self._shared_until = time.monotonic() + SHARED_S

    async def take(self, timeout_s: float) -> list[Msg]:
        """Up to `batch` messages, in delivery order: as soon as a batch is buffered, or once
        the messages stop coming for LINGER_S; [] when none came within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            await self._ask()
            if self._gone is not None:
                raise ConsumerGone(description=self._gone)
            if len(self._buffer) >= self.batch:
                break
            seen = len(self._buffer)
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                break
            if seen:
                wait = LINGER_S
            elif self._asked_at:
                wait = left
            else:  # no request could go out: wait for the pause, not for an answer
                wait = min(left, max(self._pause_until - now, 0.01))
            self._full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), wait)
            if seen and len(self._buffer) == seen:
                break  # nothing more came while lingering: the stream is drained for now
        out = self._buffer[: self.batch]
        del self._buffer[: self.batch]
        if time.monotonic() >= self._shared_until:
            await self._ask()  # the next batch comes while this one is stored
        return out

    async def _ask(self) -> None:
        now = time.monotonic()
        if self._asked_at and now - self._asked_at > self.expires_s + LOST_REQUEST_GRACE_S:
            self._ended()  # its end never came (lost with a connection, or a node)
        if self._asked_at or now < self._pause_until or self._draining:
            return
        ahead = self.ahead if now >= self._shared_until else 0
        if len(self._buffer) > max(ahead * self.batch - 1, 0):
            return
        # The read-ahead is the instance's, not each partition's: eight partitions held, each
        # with `ahead` batches buffered, were more than a loaded machine stored within
        # ack_wait, and what waited that long came again, ahead of anything new (the server
        # redelivers first): the logger spent its time dropping its own copies.
        if ahead and sum(f.buffered for f in _feeds(self.nc)) > ahead * self.batch - 1:
            return
        request = {"batch": self.batch, "expires": int(self.expires_s * 1e9)}
        try:
            await self.nc.publish(self.subject, json.dumps(request).encode(), reply=self._inbox)
        except nats.errors.Error:
            self._pause_until = now + RETRY_S  # reconnecting: asked again after the pause
            return
        self._owed, self._asked_at = self.batch, now

    def _ended(self) -> None:
        self._owed, self._asked_at = 0, 0.0
        self._full.set()
        if self.arrived is not None:
            self.arrived.set()

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get(STATUS) if msg.headers else None
        if status is None:
            self._arrive(msg)
            return
        self._status(msg, status)

    def _arrive(self, msg: Msg) -> None:
        """A delivery: in the buffer, in the order it came."""
        self.received += 1
        if self.floor is not None:
            self.floor.arrived(msg)
        self._buffer.append(msg)
        self._owed -= 1
        if self._owed <= 0:
            self._ended()
        elif len(self._buffer) >= self.batch:
            self._full.set()
        if self.arrived is not None:
            self.arrived.set()

    def _status(self, msg: Msg, status: str) -> None:
        if status == "100":  # an idle heartbeat (never asked for): not an answer
            return
        description = (msg.headers or {}).get("Description", "")
        if status == "409" and "consumer deleted" in description.lower():
            self._gone = description
        elif status in ("409", "503"):
            self.unavailable += 1
            self._pause_until = time.monotonic() + RETRY_S
        self._ended()  # 404, 408, 409, 503: the request is over
