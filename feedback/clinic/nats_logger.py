"""The clinic logger on a NATS JetStream cluster: the clinic's stream into the clinic database.

Example:
  python -m feedback.clinic.nats_logger --nats nats://n1:4222,nats://n2:4222,nats://n3:4222 \\
      --db postgresql://host/clinic --clinic clinic-demo

For a network that outgrows one Mosquitto (deploy/README.md): stations keep speaking MQTT to the
NATS MQTT gateway, which turns `vmf/v1/<clinic>/<station>/<leaf>` into the subject
`vmf.v1.<clinic>.<station>.<leaf>`; a stream replicated on three nodes (R3) captures the station
subjects, so a node can die without losing what it acknowledged.

- One consumer group: every instance pulls from the same durable consumer (`--durable`), so
  the instances split the messages between them, and a message an instance took and never
  acknowledged (it died) goes to another after `--ack-wait`.
- Acknowledged only after the commit: a batch is stored in one transaction (`ClinicStore`), the
  receipts go to the stations, then its messages are acknowledged. A copy delivered again (an
  ack lost with a node, a station's resend) is dropped by the store's ledger and counted.
- Kept while slow: what an instance holds unacked for over a quarter of `--ack-wait` (read
  ahead, or in a batch still being stored) gets an in-progress ack (+WPI), so that a loaded
  machine is not handed its own messages again, ahead of anything new.
- Order per session: the store's `stored_through` is the highest msg_id below which the session
  has no hole. A session message above the next one expected is not stored yet: held for up
  to HOLD_LOCAL_S (another instance is likely committing its predecessor), then given back to
  the stream (NAK with a delay) until its predecessors are in: with two instances (or a
  station's resend after a node's loss) the ledger still fills in msg_id order. The logger
  asks the station for what is missing below a held message (`resend`, as the MQTT logger does).
- Receipts and resend requests go out on core NATS subjects, which the MQTT gateway hands to
  the station's subscription on `.../receipt`.
- Read ahead (feedback/clinic/nats_pull.py): the next batch (`--ahead` batches at most) is
  requested while one is stored; not while the order gate finds another instance on the same
  sessions, which read-ahead would only make wait for each other more.
- Partitioned (`--partitions N`, the servers configured for it: nats_partitions.py): the
  stream holds each station's messages in one of N partitions, each with a durable consumer of
  its own, and an instance reads only the partitions it holds a lease on (nats_lease.py), so
  two instances never wait for each other's share of a session; a dead instance's partitions
  go to the others once its leases age out (`--lease`). The order gate stays, for the moments
  a lease changes hands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import logging
import re
import secrets
import sys
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    StorageType,
    StreamConfig,
)

from devices.backoff import Backoff
from feedback.clinic import nats_connect, nats_partitions
from feedback.clinic.metrics import NatsLoggerMetrics
from feedback.clinic.nats_ackall import AckFloor, delivery, times_delivered
from feedback.clinic.nats_group import FeedSet
from feedback.clinic.nats_lease import LEASE_S, Leases
from feedback.clinic.nats_pull import PullFeed
from feedback.clinic.partitions import RETENTION_DEFAULT_DAYS
from feedback.clinic.service import ingest_until_stored, run_until_signalled, service_main
from feedback.clinic.store import (
    ClinicStore,
    Delivery,
    Incoming,
    IngestResult,
    is_connection_fault,
)
from feedback.clinic.validation import LOGGED_LEAVES, Message
from feedback.outputs.receipts import Range, Receipt, Resend, encode_receipt, encode_resend
from feedback.outputs.topics import TOPIC_ROOT

log = logging.getLogger("feedback.clinic.nats_logger")

STREAM = "VMF"
DURABLE = "vmf-loggers"
# Messages per fetch and commit. 1000 rather than 500: fewer statements a message, PostgreSQL's
# CPU per message 35 us against 45 and two instances' rate 17.6k against 13.8k msg/s (medians
# of 5 paired runs, docs/notes/nats_logger_profile.md); three batches in flight per partition
# stay far below MAX_ACK_PENDING and are stored well within ACK_WAIT_S.
MAX_BATCH = 1000
AHEAD = 2  # batches requested ahead of the one being stored (nats_pull.py)
ACK_WAIT_S = 30.0  # a message an instance took and did not acknowledge goes to another after it
MAX_ACK_PENDING = 20_000
# How long a message held by the order gate stays with the stream before it returns: HOLD_S,
# doubled at each delivery up to HOLD_MAX_S. Not a fixed 0.2 s: the server hands out messages
# given back before anything new, so held messages cycling every 0.2 s can fill every pull
# while the predecessors they wait for (a station's resends, new at the stream's end) wait
# behind them; the longer a message has waited, the less likely its predecessor is near.
HOLD_S, HOLD_MAX_S = 0.2, 3.0
HOLD_LOCAL_S, HOLD_POLL_S = 0.5, 0.02  # first held here, looking again at the database
STREAM_MAX_AGE_S = 7 * 24 * 3600  # how long the stream keeps messages, stored or not
RESEND_FIRST_S, RESEND_MAX_S = 1.0, 30.0
UNSAFE_FLOOR_LOOK = 2.0  # x ack_wait: a partition's unsafe floor looked at even while delivering
CONSUMER_CHECK_S = 5.0  # while idle, how often to check that the consumer still exists


def hold_delay(m: Msg) -> float:
    """HOLD_S at the first delivery, doubled at each one after, at most HOLD_MAX_S."""
    doublings = min(times_delivered(m) - 1, 16)
    return min(HOLD_MAX_S, HOLD_S * 2.0**doublings)


def subject_of(topic: str) -> str:
    """The NATS subject the MQTT gateway publishes an MQTT topic on."""
    return topic.replace("/", ".")


TOPICS_KEPT = 10_000


@functools.lru_cache(maxsize=TOPICS_KEPT)  # bounded: subjects come from outside
def topic_of(subject: str) -> str:
    """The MQTT topic back: station and clinic ids hold no dot (validation refuses them).
    Kept per subject: a clinic's stations send on a few hundred subjects, each thousands of
    times (~3 us a message rebuilt, as much as the rest of the batch's bookkeeping)."""
    if subject.startswith(PARTITIONED_PREFIX):
        return nats_partitions.topic_of(subject)
    return subject.replace(".", "/")


PARTITIONED_PREFIX = nats_partitions.ROOT + "."


def stream_subjects(clinic: str = "*") -> list[str]:
    """Every station subject the logger keeps: one per leaf of the contract (not the binary
    `stream` leaf, nor receipts and command acknowledgements, which are not the stations')."""
    root = subject_of(TOPIC_ROOT)
    return [f"{root}.{clinic}.*.{subject_of(leaf)}" for leaf in sorted(LOGGED_LEAVES)]


async def ensure_stream(
    js: JetStreamContext,
    name: str = STREAM,
    clinic: str = "*",
    replicas: int = 3,
    partitioned: bool = False,
) -> None:
    """Create the clinic's stream if it is missing (an existing one is left as it is: its
    operator may have tuned it)."""
    try:
        await js.stream_info(name)
        return
    except nats.js.errors.NotFoundError:
        pass
    config = StreamConfig(
        name=name,
        subjects=(nats_partitions.stream_subjects if partitioned else stream_subjects)(clinic),
        num_replicas=replicas,
        storage=StorageType.FILE,
        max_age=STREAM_MAX_AGE_S,
        duplicate_window=120.0,
    )
    with contextlib.suppress(nats.js.errors.BadRequestError):  # another instance won the race
        await js.add_stream(config)


def consumer_config(
    durable: str, ack_wait_s: float, filter_subject: str | None = None, *, ack_all: bool = False
) -> ConsumerConfig:
    """An ack per message, unless `ack_all`: then one ack covers every message below it,
    which only a consumer with one reader at a time may use (a partition's, with `--acks all`:
    nats_ackall.py); the consumer shared by every instance of an unpartitioned group never."""
    return ConsumerConfig(
        durable_name=durable,
        filter_subject=filter_subject,
        ack_policy=AckPolicy.ALL if ack_all else AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait_s,
        max_deliver=-1,  # the order gate gives messages back: never give up on one
        max_ack_pending=MAX_ACK_PENDING,
    )


@dataclass(slots=True)
class NatsLoggerStats:
    received: int = 0  # deliveries, copies and held messages included
    batches: int = 0
    stored_batches: int = 0
    held: int = 0  # given back by the order gate, to come again after their predecessors
    connects: int = 0
    rebinds: int = 0  # the consumer was lost and bound again
    partitions_held: int = 0  # partitioned: how many this instance reads now
    fetch_errors: int = 0  # the cluster did not answer a fetch (a node lost, an election)
    db_errors: int = 0
    ingest_failures: int = 0
    receipts_sent: int = 0
    resend_requests: int = 0
    in_progress: int = 0  # +WPI sent: messages held unacked for over a quarter of ack_wait
    totals: IngestResult = field(default_factory=IngestResult)


@dataclass(frozen=True, slots=True)
class Gated:
    store: list[Msg]  # in stream order
    hold: list[Msg]
    missing: dict[str, tuple[str, str, int, int]]  # session → (clinic, station, first, last)


LedgerKey = tuple[str, int, str, str]  # session, msg_id, clinic, station


def gate(
    msgs: Sequence[Msg], keys: Sequence[LedgerKey | None], watermarks: dict[str, int]
) -> Gated:
    """Split a batch into what may be stored now and what must wait for a predecessor.

    `watermarks`: per session, the highest msg_id with every one before it stored (absent: 0).
    A session's messages are taken in msg_id order: the next one expected is stored (and a copy
    of one stored, which the store drops); from the first one above it, they wait. Anything
    else (live, commands, a last will, a message the store will quarantine) has no order to
    keep and goes through in stream order, first."""
    passed: list[Msg] = []
    per_session: dict[str, list[tuple[int, Msg, LedgerKey]]] = {}
    for m, key in zip(msgs, keys, strict=True):
        if key is None:
            passed.append(m)
        else:
            per_session.setdefault(key[0], []).append((key[1], m, key))
    held: list[Msg] = []
    missing: dict[str, tuple[str, str, int, int]] = {}
    for session, items in per_session.items():
        expected = watermarks.get(session, 0) + 1
        items.sort(key=lambda item: item[0])  # stable: copies keep their stream order
        for msg_id, m, (_, _, clinic, station) in items:
            if msg_id > expected:
                if session not in missing:
                    missing[session] = (clinic, station, expected, msg_id - 1)
                held.append(m)
                continue
            passed.append(m)
            expected = max(expected, msg_id + 1)
    return Gated(passed, held, missing)


def ledger_key(verdict: Message | str | None) -> LedgerKey | None:
    """(session, msg_id, clinic, station) of a session message, from the store's verdict on it
    (`ClinicStore.check_ahead`); None for anything else (a refused one is quarantined)."""
    if not isinstance(verdict, Message):
        return None
    b = verdict.body
    session, msg_id = b.get("session"), b.get("msg_id")
    if verdict.type in ("live", "command") or not isinstance(session, str):
        return None
    if type(msg_id) is not int or msg_id < 1:
        return None
    return session, msg_id, verdict.clinic, verdict.station


class NatsLogger:
    def __init__(
        self,
        servers: Sequence[str],
        store: ClinicStore,
        *,
        stream: str = STREAM,
        durable: str = DURABLE,
        clinic: str = "*",
        batch: int = MAX_BATCH,
        ahead: int = AHEAD,
        ack_wait_s: float = ACK_WAIT_S,
        create_stream: bool = True,
        replicas: int = 3,
        name: str = "vmf-logger",
        metrics: NatsLoggerMetrics | None = None,
        partitions: int = 0,
        lease_s: float = LEASE_S,
        ack_all: bool = False,
        members: int = 1,
    ) -> None:
        self.servers = list(servers)
        self.store = store
        self.stream = stream
        self.durable = durable
        self.clinic = clinic
        self.batch = batch
        self.ahead = ahead
        self.ack_wait_s = ack_wait_s
        self.create_stream = create_stream
        self.replicas = replicas
        self.name = name
        self.partitions = partitions
        self.lease_s = lease_s
        self.members = members  # instances started together: wait for them at the start
        self.ack_all = ack_all  # partition consumers it creates: AckPolicy.ALL, not EXPLICIT
        # The lease names this process, not its configured name: a restarted instance is a
        # new member, and its predecessor's leases age out as a dead one's do.
        self.member = re.sub(r"[^A-Za-z0-9_-]", "_", name) + "-" + secrets.token_hex(8)
        self.stats = NatsLoggerStats()
        self.connected = asyncio.Event()
        self._asked: dict[str, tuple[float, float]] = {}  # session → (next request, spacing)
        # The batch's messages as the store takes them, checked once (gate and store share the
        # verdict), by id() of the Msg (nats-py's Msg is unhashable); emptied after each batch.
        self._items: dict[int, Incoming] = {}
        self._batch: list[Msg] = []  # the one being handled: gated, held, stored, acked
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._checked = 0.0  # monotonic time the consumer was last seen to exist
        self._feed: PullFeed | FeedSet | None = None
        self._leased: tuple[set[int], set[int]] = (set(), set())  # held, to give back
        self._gone: set[int] = set()  # partitions held whose consumer was deleted
        # An AckPolicy.ALL floor → when a renewal first saw it unsafe (a new floor, after a
        # take or a rebind, starts its own count).
        self._unsafe_since: weakref.WeakKeyDictionary[AckFloor, float] = weakref.WeakKeyDictionary()
        self.metrics = metrics
        if metrics is not None:
            metrics.attach_nats(self)

    async def run(self) -> None:
        """Connect (nats-py reconnects by itself, to any node), bind the consumer, store;
        runs until cancelled. A cluster not up yet, or a consumer deleted under it, is waited
        for: the logger starts again from the connection."""
        backoff = Backoff(initial_s=0.2, max_s=5.0)
        while True:
            try:
                await self._connection()
            except (nats.errors.Error, OSError) as exc:
                log.warning("NATS cluster unreachable or consumer lost: %r", exc)
            self.connected.clear()
            await asyncio.sleep(backoff.next())

    async def _connection(self) -> None:
        nc = await nats_connect.connect(
            self.servers,
            name=self.name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
            connect_timeout=2,
            allow_reconnect=True,
            reconnected_cb=self._reconnected,
        )
        self._nc = nc
        keeping = asyncio.create_task(self._keep_in_progress())
        try:
            js = self._js = nc.jetstream(timeout=5.0)
            self.stats.connects += 1
            if self.partitions:
                await self._partitioned(nc, js)
            while True:
                await self._bind(js)
                feed = PullFeed(nc, self.stream, self.durable, batch=self.batch, ahead=self.ahead)
                await feed.start()
                self._feed = feed
                self.connected.set()
                bare, _ = nats_connect.split_credentials(self.servers)  # no password in logs
                log.info("pulling %s/%s from %s", self.stream, self.durable, ",".join(bare))
                try:
                    while True:
                        msgs = await self._fetch(feed)
                        if msgs:
                            await self.handle(nc, msgs)
                except nats.js.errors.APIError as exc:
                    # The consumer (or the stream) was deleted under it: create it again. It
                    # starts at the stream's first message; the store drops what it has.
                    log.warning("consumer lost (%r); binding again", exc)
                    self.stats.rebinds += 1
                finally:
                    with contextlib.suppress(Exception):
                        await feed.close()
        finally:
            keeping.cancel()
            self.connected.clear()
            with contextlib.suppress(Exception):
                await nc.close()

    async def _keep_in_progress(self) -> None:
        """Every ack_wait / 4, an in-progress ack (+WPI) for each message it holds unacked
        since the last look: read ahead, or in the batch being stored (or held by the order
        gate). On a loaded machine these can outlast ack_wait; the server would then deliver
        them again, ahead of anything new, and the logger would spend its time dropping its
        own copies (seen: 30k deliveries for 4k messages, on 2 loaded cores). Nothing for a
        logger that keeps up: a message is acked before the second look. A dead instance
        sends nothing, so what it held still comes back after ack_wait. Not the messages
        stored and waiting for an AckPolicy.ALL floor to be safe: each +WPI is a consensus
        round, and an unsafe floor can hold thousands for as long as a partition's previous
        holder's batch takes to come back (100k+ +WPI in a loaded run); they come again
        once, as copies the store drops. What is read ahead is bounded (nats_pull.py)."""
        seen: set[int] = set()
        while True:
            await asyncio.sleep(self.ack_wait_s / 4)
            held = self._unacked()
            for m in held:
                # (Not one acked or given back: a +WPI would hold a NAKed one for ack_wait.)
                if id(m) in seen and m.reply and not m.is_acked:
                    with contextlib.suppress(nats.errors.Error):
                        await m.in_progress()
                        self.stats.in_progress += 1
            seen = {id(m) for m in held}

    def _unacked(self) -> list[Msg]:
        held = list(self._batch)
        feed = self._feed
        feeds = list(feed.feeds.values()) if isinstance(feed, FeedSet) else [feed] if feed else []
        for f in feeds:
            held.extend(f.waiting())
        return held

    async def _partitioned(self, nc: NATS, js: JetStreamContext) -> None:
        """Read the partitions this instance holds a lease on. A task renews the leases every
        lease_s / 3, whatever a batch costs (held messages can keep one for a second); the
        reading loop follows what it says between batches: it reads a partition taken,
        drains and stores one lost or given back."""
        await self._bind(js, partition=None)
        leases = self._leases(nc)
        await leases.open()
        feeds = FeedSet(nc, self.stream, self.durable, batch=self.batch, ahead=self.ahead)
        self._feed = feeds
        news = asyncio.Event()
        renewing = asyncio.create_task(self._renew(js, leases, feeds, news))
        self.connected.set()
        try:
            while True:
                if renewing.done():
                    renewing.result()  # a bug in it: raise here rather than read on unleased
                if news.is_set():
                    news.clear()
                    await self._rebalance(nc, js, leases, feeds)
                try:
                    msgs = await self._fetch(feeds, 0.2 if not feeds.feeds else 1.0)
                except nats.js.errors.APIError as exc:
                    log.warning("a partition's consumer lost (%r); binding again", exc)
                    self.stats.rebinds += 1
                    await feeds.close()  # bound again at the next renewal
                    continue
                if msgs:
                    await self.handle(nc, msgs)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            await feeds.close()
            with contextlib.suppress(Exception):  # given back now rather than aged out
                await asyncio.wait_for(leases.release_all(), 2.0)

    def _leases(self, nc: NATS) -> Leases:
        return Leases(nc, self.partitions, self.member, lease_s=self.lease_s,
                      group=self.durable, replicas=self.replicas)  # fmt: skip

    async def _renew(
        self, js: JetStreamContext, leases: Leases, feeds: FeedSet, news: asyncio.Event
    ) -> None:
        with contextlib.suppress(TimeoutError, nats.errors.Error, nats.js.errors.Error):
            await leases.announce()
            await leases.wait_for_members(self.members, within_s=self.lease_s)
        await asyncio.sleep(self.lease_s / 3)
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                self._leased = await leases.renew()
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
                # The cluster is busy (an election): keep reading what we have and try again
                # soon, while the keys are still alive (each request waits lease / 4 at most);
                # a lease that ages out meanwhile goes to another, and the order gate covers
                # the overlap.
                log.warning("lease renewal failed (%r); retrying", exc)
                await asyncio.sleep(self.lease_s / 12)
                continue
            self._gone |= await self._look_at_consumers(js, feeds)
            news.set()
            # Every lease / 3 from the start of the last renewal, however long it took: the
            # requests' bounds alone do not bound the period.
            await asyncio.sleep(max(0.0, started + self.lease_s / 3 - loop.time()))

    async def _look_at_consumers(self, js: JetStreamContext, feeds: FeedSet) -> set[int]:
        """A deleted consumer stays silent to pull requests, so a silent feed's consumer is
        looked up. Not one that delivers: nats-server 2.9's CONSUMER.INFO on a partition's
        consumer past the middle of the stream's block can leave it recounting its pending
        messages, a scan of the block, at every delivery from then on
        (docs/notes/nats_logger_profile.md): 1-2k msg/s instead of 10k+. Except one whose
        ack floor has been unsafe for longer than UNSAFE_FLOOR_LOOK x ack_wait: nothing of it
        is acked meanwhile, so what it stored comes again every ack_wait and it never falls
        silent; a count its deliveries cannot complete would hold it so for good, and a
        slower consumer is the lesser harm. The looks go at once, bounded together by a third
        of the lease, so that they cannot hold back the next renewal; one not answered is
        looked at again."""
        looks = self._to_look_at(feeds, time.monotonic())
        infos = await asyncio.gather(
            *(self._consumer_info(js, k) for k in looks), return_exceptions=True
        )
        gone: set[int] = set()
        for (k, feed), info in zip(looks.items(), infos, strict=True):
            if isinstance(info, nats.js.errors.NotFoundError):
                log.warning("partition %d's consumer was deleted; binding again", k)
                gone.add(k)
            elif isinstance(info, BaseException):
                log.warning("partition %d's consumer did not answer (%r)", k, info)
            elif feed.floor is not None and not feed.floor.safe:
                feed.floor.check(info)  # (a count its deliveries cannot complete)
                if feed.floor.safe and self._unsafe_since.pop(feed.floor, None) is not None:
                    log.info("partition %d's ack floor safe again", k)
        return gone

    def _to_look_at(self, feeds: FeedSet, now: float) -> dict[int, PullFeed]:
        """The feeds whose consumer to look up now: the silent ones, and those whose ack floor
        has been unsafe for too long (`_look_at_consumers`)."""
        looks: dict[int, PullFeed] = {}
        for k, feed in list(feeds.feeds.items()):
            floor, since = feed.floor, None
            if floor is not None and not floor.safe:
                since = self._unsafe_since.setdefault(floor, now)
            elif floor is not None:
                self._unsafe_since.pop(floor, None)
            stuck = since is not None and now - since > UNSAFE_FLOOR_LOOK * self.ack_wait_s
            if feed.delivered_since_last_look() and not stuck:
                continue
            if since is not None and stuck:
                log.info("partition %d's ack floor unsafe for %.1f s: looked at", k, now - since)
            looks[k] = feed
        return looks

    async def _consumer_info(self, js: JetStreamContext, partition: int) -> ConsumerInfo:
        durable = nats_partitions.durable_name(self.durable, partition)
        info: ConsumerInfo = await js.consumer_info(self.stream, durable, timeout=self.lease_s / 3)
        return info

    async def _rebalance(
        self, nc: NATS, js: JetStreamContext, leases: Leases, feeds: FeedSet
    ) -> None:
        held, extra = self._leased
        before = len(feeds.feeds)
        gone, self._gone = self._gone, set()  # (the renewal task may add more meanwhile)
        for k in gone & set(feeds.feeds):
            self.stats.rebinds += 1
            await feeds.drop(k)
        leaving = sorted(set(feeds.feeds) - (held - extra))
        drained = await asyncio.gather(*(feeds.remove(k) for k in leaving))  # at once: each
        msgs = [m for part in drained for m in part]  # waits for its request in flight
        if msgs:
            await self.handle(nc, msgs)
        for k in leaving:
            if k in extra:
                await leases.release(k)
        taken = sorted(held - extra - set(feeds.feeds))
        # At once: creating a replicated consumer takes a round of the cluster's consensus
        # (a second and more for eight, one after the other, on a loaded machine).
        infos = await asyncio.gather(*(self._bind(js, partition=k) for k in taken))
        for k, info in zip(taken, infos, strict=True):
            await feeds.add(k, info)
        self.stats.partitions_held = len(feeds.feeds)
        if len(feeds.feeds) != before:
            log.info("reading partitions %s (%d instances)", sorted(feeds.feeds), leases.members)

    async def _reconnected(self) -> None:
        self.stats.connects += 1
        log.warning("reconnected to the NATS cluster")

    async def _bind(self, js: JetStreamContext, partition: int | None = -1) -> ConsumerInfo | None:
        """The stream and the durable consumer, created when missing; retried while the
        cluster elects its leaders (seconds after a start or a node's loss). `partition`:
        -1, the one consumer of an unpartitioned stream; None, the stream only; k, the
        consumer of partition k."""
        delay = 0.2
        durable, subject = self.durable, None
        if partition is not None and partition >= 0:
            durable = nats_partitions.durable_name(self.durable, partition)
            subject = nats_partitions.filter_subject(partition, self.clinic)
        while True:
            try:
                if self.create_stream:
                    await ensure_stream(js, self.stream, self.clinic, self.replicas,
                                        partitioned=bool(self.partitions))  # fmt: skip
                if partition is None:
                    return None
                info: ConsumerInfo
                try:
                    info = await js.consumer_info(self.stream, durable)
                except nats.js.errors.NotFoundError:
                    ack_all = subject is not None and self.ack_all
                    config = consumer_config(durable, self.ack_wait_s, subject, ack_all=ack_all)
                    try:
                        info = await js.add_consumer(self.stream, config)
                    except nats.js.errors.BadRequestError:  # another instance won the race
                        info = await js.consumer_info(self.stream, durable)
                return info
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
                log.warning("stream or consumer not ready (%r); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

    async def _fetch(self, feed: PullFeed | FeedSet, timeout_s: float = 1.0) -> list[Msg]:
        """The next batch (the feed raises ConsumerGone, an APIError, when the server says
        the consumer was deleted); [] after `timeout_s` without messages."""
        unavailable = feed.unavailable
        msgs = await feed.take(timeout_s=timeout_s)
        if feed.unavailable > unavailable:  # a node lost, a leader being elected: it retries
            self.stats.fetch_errors += feed.unavailable - unavailable
            log.warning("the cluster did not serve %d pull requests; retrying",
                        feed.unavailable - unavailable)  # fmt: skip
        if msgs or isinstance(feed, FeedSet):  # (partitions: checked at each renewal)
            return msgs
        # Nothing waiting, or no consumer any more: a deleted one may just stay silent.
        if self._js is not None and time.monotonic() - self._checked > CONSUMER_CHECK_S:
            self._checked = time.monotonic()
            try:
                await self._js.consumer_info(self.stream, self.durable)
            except nats.js.errors.NotFoundError:
                raise
            except nats.errors.Error:
                pass  # the cluster is busy: look again later
        return []

    async def handle(self, nc: NATS, msgs: list[Msg]) -> None:
        """Gate, store, answer the stations, then acknowledge (held messages go back)."""
        self.stats.received += len(msgs)
        self.stats.batches += 1
        items = [Incoming(topic_of(m.subject), m.data, 0.0) for m in msgs]
        self.store.check_ahead(items)
        self._items = {id(m): item for m, item in zip(msgs, items, strict=True)}
        self._batch = msgs
        try:
            await self._handle(nc, msgs)
        finally:
            self._items = {}
            self._batch = []

    async def _handle(self, nc: NATS, msgs: list[Msg]) -> None:
        gated = await self._gate(msgs)
        if gated.hold and self._feed is not None:
            self._feed.shared()
        if gated.store:
            await self.store_then_ack(nc, gated.store)
        # What waits for a predecessor another instance is committing: look again a few times
        # before giving it back (a NAK costs a redelivery, and meanwhile the consumer hands
        # out later messages of the same sessions, which would wait in turn).
        waited = 0.0
        while gated.hold and waited < HOLD_LOCAL_S:
            await asyncio.sleep(HOLD_POLL_S)
            waited += HOLD_POLL_S
            gated = await self._gate(gated.hold)
            if gated.store:
                await self.store_then_ack(nc, gated.store)
        if gated.hold:
            self.stats.held += len(gated.hold)
            await self._ask(nc, gated.missing)
            for m in gated.hold:  # (unstored: with --acks all, no ack covers it: AckFloor._barrier)
                await m.nak(delay=hold_delay(m))

    async def _gate(self, msgs: list[Msg]) -> Gated:
        keys = [ledger_key(self._item(m).verdict) for m in msgs]
        sessions = sorted({k[0] for k in keys if k is not None})
        marks = await self._with_db(lambda: self.store.stored_through(sessions), {})
        return gate(msgs, keys, marks)

    async def store_then_ack(self, nc: NATS, msgs: list[Msg]) -> None:
        now = time.time()
        items = [self._item(m) for m in msgs]
        for item in items:
            item.received_at = now
        result = await self._ingest(items)
        self.stats.stored_batches += 1
        self.stats.totals.add(result)
        if self.metrics is not None:
            self.metrics.batch(items, result, time.time(), 0)
        for reason in result.reasons:
            log.warning("quarantined: %s", reason)
        await self._answer(nc, result.deliveries)
        await self.acknowledge(msgs)

    def _item(self, m: Msg) -> Incoming:
        """Every message gated or stored came through `handle`, which checked it."""
        return self._items[id(m)]

    async def acknowledge(self, msgs: list[Msg]) -> None:
        """After the commit: each message of an AckPolicy.EXPLICIT consumer; for an
        AckPolicy.ALL one, what its floor says one ack may cover (nats_ackall.py)."""
        feed = self._feed
        known = feed.floors if isinstance(feed, FeedSet) else {}
        floors: dict[str, AckFloor] = {}
        for m in msgs:
            # The consumer's name from the reply subject: nats-py's `metadata` costs ~4 us.
            consumer = delivery(m)[0] if known else ""
            floor = known.get(consumer)
            if floor is None:
                await m.ack()
            else:
                floor.store(m)
                floors[consumer] = floor
        for durable, floor in floors.items():
            await self._ack_floor(durable, floor)

    async def _ack_floor(self, durable: str, floor: AckFloor) -> None:
        # Not safe: no CONSUMER.INFO here, on a consumer delivering (the floor learns from its
        # deliveries, or from the renewal's look at a silent consumer: nats_ackall.py).
        m = floor.due()
        if m is not None:
            await m.ack()
            floor.acked(m)

    async def _with_db(self, call: Any, default: Any) -> Any:
        try:
            return await asyncio.to_thread(call)
        except Exception as exc:
            if not is_connection_fault(exc):
                raise
            self.stats.db_errors += 1
            log.error("database read failed (%s); gating on what is known", exc)
            return default

    async def _ingest(self, items: list[Incoming]) -> IngestResult:
        return await ingest_until_stored(self.store, items, self.stats)

    async def _answer(self, nc: NATS, deliveries: list[Delivery]) -> None:
        """A receipt per session stored; before the acknowledgement, so that a logger lost
        meanwhile has its batch redelivered and the receipts go out again."""
        missing: dict[str, tuple[str, str, int, int]] = {}
        for d in deliveries:
            await nc.publish(self._receipt_subject(d.clinic, d.station),
                             encode_receipt(Receipt(d.session, d.through, d.stored)))  # fmt: skip
            self.stats.receipts_sent += 1
            if d.missing:
                first, last = d.missing[0]
                missing[d.session] = (d.clinic, d.station, first, last)
            else:
                self._asked.pop(d.session, None)
        await self._ask(nc, missing)

    async def _ask(self, nc: NATS, missing: dict[str, tuple[str, str, int, int]]) -> None:
        """Ask stations for the msg_ids below a held message, at most once a second per
        session, backing off to RESEND_MAX_S."""
        now = time.monotonic()
        for session, (clinic, station, first, last) in missing.items():
            due, spacing = self._asked.get(session, (0.0, RESEND_FIRST_S / 2))
            if now < due:
                continue
            if len(self._asked) > 10_000:
                self._asked.clear()  # bounded; at worst a request goes out early
            spacing = min(RESEND_MAX_S, spacing * 2)
            self._asked[session] = (now + spacing, spacing)
            hole: tuple[Range, ...] = ((first, last),)
            await nc.publish(self._receipt_subject(clinic, station),
                             encode_resend(Resend(session, hole)))  # fmt: skip
            self.stats.resend_requests += 1
            log.info("session %s waits for msg_ids %d-%d; asked %s/%s", session, first, last,
                     clinic, station)  # fmt: skip

    @staticmethod
    def _receipt_subject(clinic: str, station: str) -> str:
        return subject_of(f"{TOPIC_ROOT}/{clinic}/{station}/receipt")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m feedback.clinic.nats_logger",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--nats", required=True, metavar="URLS", help="nats://host:port,...")
    p.add_argument("--db", default="clinic.sqlite3", metavar="URL",
                   help="postgresql://user@host/db, sqlite:///PATH or a file path")  # fmt: skip
    p.add_argument("--clinic", default="*", help="clinic id the stream captures (default: all)")
    p.add_argument("--stream", help=f"JetStream stream (default {STREAM}, partitioned "
                   f"{nats_partitions.STREAM})")  # fmt: skip
    p.add_argument("--partitions", type=int, default=0, metavar="N",
                   help="the servers split the stream into N partitions (nats_partitions.py; "
                   "docs/operations.md); 0: one consumer shared by every instance")  # fmt: skip
    p.add_argument("--lease", type=float, default=LEASE_S, metavar="S",
                   help="partitioned: seconds before a silent instance's partitions go to "
                   "the others")  # fmt: skip
    p.add_argument(
        "--members",
        type=int,
        default=1,
        metavar="N",
        help="instances started together: at its start, one waits (a lease at "
        "most) until N are counted before taking partitions, so that they "
        "split them at once rather than one taking all and giving back",
    )
    p.add_argument("--acks", choices=("explicit", "all"), default="explicit",
                   help="partitioned: the policy of the partitions' consumers it creates: an ack "
                   "per message (default), or AckPolicy.ALL, one per batch (nats_ackall.py; "
                   "deploy/README.md says why it is not the default); an existing consumer "
                   "keeps its policy")  # fmt: skip
    p.add_argument("--durable", default=DURABLE, help="the consumer group's durable name")
    p.add_argument("--batch", type=int, default=MAX_BATCH, help="messages per fetch and commit")
    p.add_argument("--ahead", type=int, default=AHEAD, metavar="N",
                   help="batches requested ahead of the one being stored (at least 1)")  # fmt: skip
    p.add_argument("--ack-wait", type=float, default=ACK_WAIT_S, metavar="S",
                   help="seconds before another instance gets what one did not ack")  # fmt: skip
    p.add_argument("--replicas", type=int, default=3, help="replicas of a stream it creates")
    p.add_argument("--no-create-stream", action="store_true", help="the operator creates it")
    p.add_argument("--name", default="vmf-logger", help="this instance's connection name")
    p.add_argument("--retention-days", type=int, default=RETENTION_DEFAULT_DAYS, metavar="DAYS",
                   help="live metrics, events and quarantine older than this are dropped "
                   "(docs/storage.md)")  # fmt: skip
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics on http://ADDR:PORT/metrics "
                   "(docs/operations.md)")  # fmt: skip
    p.add_argument("--metrics-addr", default="127.0.0.1", metavar="ADDR",
                   help="address for --metrics-port (0.0.0.0: every interface)")  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def make_logger(args: argparse.Namespace) -> NatsLogger:
    metrics = None
    if args.metrics_port is not None:
        metrics = NatsLoggerMetrics()
        metrics.serve(args.metrics_port, args.metrics_addr)
    return NatsLogger(
        [u.strip() for u in args.nats.split(",") if u.strip()],
        ClinicStore(args.db, retention_days=args.retention_days),
        stream=args.stream or (nats_partitions.STREAM if args.partitions else STREAM),
        durable=args.durable,
        clinic=args.clinic,
        batch=args.batch,
        ahead=max(1, args.ahead),
        ack_wait_s=args.ack_wait,
        create_stream=not args.no_create_stream,
        replicas=args.replicas,
        name=args.name,
        metrics=metrics,
        partitions=max(0, args.partitions),
        lease_s=args.lease,
        ack_all=args.acks == "all",
        members=max(1, args.members),
    )


# Objects allocated between two young collections (CPython's default 700). A batch builds tens
# of thousands of container objects (deliveries, bodies, rows) that reference counting frees at
# its end; at 700 the collector walked them about thirteen times a batch and promoted them into
# full collections: 13 % of the logger's CPU (docs/notes/nats_logger_profile.md).
GC_YOUNG = 10_000


def collect_less() -> None:
    """Start-up's objects (modules, schemas, the database driver) frozen out of the collector,
    whose full collections walked them all, and young collections rarer. The logger makes
    little cyclic garbage; what it makes after the start is still collected, later. (What the
    start made and later drops is freed by reference counting, unless it sits in a cycle.)"""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, middle, old)


async def amain(args: argparse.Namespace, logger: NatsLogger | None = None) -> None:
    logger = logger or make_logger(args)
    collect_less()
    await run_until_signalled(logger.run())
    logger.store.close()
    t, s = logger.stats.totals, logger.stats
    print(
        f"received {s.received}: stored {t.stored}, duplicates dropped {t.duplicates}, "
        f"quarantined {t.invalid}, held for order {s.held}, receipts {s.receipts_sent}, "
        f"resend requests {s.resend_requests}, in-progress acks {s.in_progress}",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return service_main("clinic logger", amain, args, (ValueError,))


if __name__ == "__main__":
    sys.exit(main())
