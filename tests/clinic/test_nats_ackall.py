"""What one AckPolicy.ALL ack may cover (nats_ackall.py), without a cluster: the server deletes
every pending message at or below the acked stream sequence, so the floor must never ack past
one that is held, or was delivered elsewhere, or lost on the way. Each rule has a wrong floor
that breaks it (the negative controls); the cluster test is in test_nats_partitions.py."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any, cast

import pytest
from nats.aio.msg import Msg
from nats.js.api import ConsumerInfo

from feedback.clinic.nats_ackall import AckFloor, Delivered, delivery, redelivered
from feedback.clinic.nats_group import FeedSet
from feedback.clinic.nats_logger import NatsLogger


class Consumer:
    """The server's side of an AckPolicy.ALL consumer, as far as the floor meets it."""

    def __init__(self) -> None:
        self.dseq = 0
        self.pending: set[int] = set()  # stream sequences delivered, not acked
        self.ack_floor = (0, 0)  # (consumer, stream)
        self.last_sseq = 0
        self.times: dict[int, int] = {}  # stream sequence -> deliveries of it

    def deliver(self, sseq: int) -> Msg:
        self.dseq += 1
        self.pending.add(sseq)
        self.last_sseq = max(self.last_sseq, sseq)
        self.times[sseq] = self.times.get(sseq, 0) + 1
        seq = SimpleNamespace(stream=sseq, consumer=self.dseq)
        meta = SimpleNamespace(sequence=seq, consumer="c", num_delivered=self.times[sseq])
        return cast(Msg, SimpleNamespace(metadata=meta))

    def ack(self, m: Msg) -> None:
        s, d = m.metadata.sequence.stream, m.metadata.sequence.consumer
        if d <= self.ack_floor[0] or s <= self.ack_floor[1]:
            return
        self.ack_floor = (d, s)
        self.pending = {p for p in self.pending if p > s}

    def info(self) -> ConsumerInfo:
        return cast(ConsumerInfo, SimpleNamespace(
            num_ack_pending=len(self.pending),
            delivered=SimpleNamespace(consumer_seq=self.dseq, stream_seq=self.last_sseq),
            ack_floor=SimpleNamespace(consumer_seq=self.ack_floor[0],
                                      stream_seq=self.ack_floor[1]),
        ))  # fmt: skip


class Trusting(AckFloor):
    """Wrong: takes the consumer as its own from the start and never doubts it."""

    def __init__(self, info: ConsumerInfo) -> None:
        super().__init__(info)
        self.safe = True
        self.next_dseq = info.delivered.consumer_seq + 1

    def arrived(self, m: Msg) -> None:
        self.received.add(m.metadata.sequence.stream)


class SnapshotOnly(AckFloor):
    """Wrong: a check that forgets the deliveries since its snapshot."""

    def check(self, info: ConsumerInfo) -> None:
        self.late.clear()
        super().check(info)


class NoBarrier(AckFloor):
    """Wrong: acks the last stored message, held ones below it or not."""

    def _barrier(self) -> int | None:
        return None


class MissesNotCounted(AckFloor):
    """Wrong: counts only what was pending at the bind, not the deliveries missed since."""

    def arrived(self, m: Msg) -> None:
        super().arrived(m)
        if not self.safe and len(self.came_back) >= self.unknown:
            self._safe_from(self.top + 1)


class AckedCounted(AckFloor):
    """Wrong: takes any redelivery of a message it never had as one pending elsewhere, even
    one its own ack covered (the ack crossed the redelivery)."""

    def arrived(self, m: Msg) -> None:
        self.covered = 0
        super().arrived(m)


FLOORS: dict[str, type[AckFloor]] = {
    "correct": AckFloor,
    "trusting": Trusting,
    "no-barrier": NoBarrier,
    "snapshot-only": SnapshotOnly,
    "misses-not-counted": MissesNotCounted,
    "acked-counted": AckedCounted,
}


def settle(
    c: Consumer, floor: AckFloor, stored: set[int], msgs: list[Msg], *, check: bool = True
) -> None:
    """Store `msgs` (the reader's commit), let the floor check (unless `check` is False: the
    logger asks no snapshot of a delivering consumer) and ack; `stored` gathers what the
    database has, and every message the server forgot must be in it."""
    for m in msgs:
        stored.add(m.metadata.sequence.stream)
        floor.store(m)
    if check and not floor.safe:
        floor.check(c.info())
    m = floor.due()
    if m is not None:
        c.ack(m)
        floor.acked(m)


def take(c: Consumer, floor: AckFloor, seqs: Iterable[int]) -> list[Msg]:
    """The server delivers `seqs` in this order, and they all reach this reader."""
    batch = [c.deliver(s) for s in seqs]
    for m in batch:
        floor.arrived(m)
    return batch


def after_a_dead_holder(variant: str) -> tuple[Consumer, AckFloor]:
    """The partition's previous reader died (killed -9) with 1-5 delivered to it and not
    stored; the next reader binds with a `variant` floor."""
    c = Consumer()
    for s in range(1, 6):
        c.deliver(s)
    return c, FLOORS[variant](c.info())


def forgotten_unstored(c: Consumer, delivered: set[int], stored: set[int]) -> set[int]:
    return {s for s in delivered - c.pending if s not in stored}


@pytest.mark.parametrize("variant", ["correct", "trusting"])
def test_a_dead_holder_s_batch_is_not_covered_by_the_next_reader_s_ack(variant: str) -> None:
    """The partition's previous reader died with messages 1-5 taken, not stored: the next
    reader stores 6-10 and may not ack them until 1-5 came back to it (after ack_wait) and
    were stored. Control: a floor that trusts the consumer acks 10 at once, and 1-5 are gone."""
    c, floor = after_a_dead_holder(variant)
    delivered = set(range(1, 11))
    stored: set[int] = set()
    settle(c, floor, stored, take(c, floor, range(6, 11)))
    if variant == "trusting":
        assert forgotten_unstored(c, delivered, stored) == {1, 2, 3, 4, 5}
        return
    assert c.pending == delivered and floor.due() is None
    settle(c, floor, stored, take(c, floor, range(1, 6)))  # ack_wait: redelivered here
    assert not c.pending and floor.safe and not forgotten_unstored(c, delivered, stored)
    nxt = take(c, floor, [11])  # and from now on one ack a batch, without a check
    assert floor.safe
    settle(c, floor, stored, nxt)
    assert not c.pending and floor.acks == 2


@pytest.mark.parametrize("variant", ["correct", "no-barrier"])
def test_a_held_message_is_not_covered_until_it_is_stored(variant: str) -> None:
    """3 is held by the order gate (NAKed); 1, 2, 4, 5 are stored: the ack covers 1-2 only,
    and 4-5 once 3 is stored. Control: acking the last stored message forgets 3."""
    c = Consumer()
    floor = FLOORS[variant](c.info())
    assert floor.safe
    batch = take(c, floor, range(1, 6))
    # 3 held: received and not stored (the gate's NAK comes after the others' commit and ack)
    stored: set[int] = set()
    settle(c, floor, stored, [m for m in batch if m is not batch[2]])
    if variant == "no-barrier":
        assert forgotten_unstored(c, set(range(1, 6)), stored) == {3}
        return
    assert c.pending == {3, 4, 5}
    again = take(c, floor, [3])
    assert floor.safe  # its redelivery is the next delivery: no other reader took one
    settle(c, floor, stored, again)
    assert not c.pending and not forgotten_unstored(c, set(range(1, 6)), stored)


@pytest.mark.parametrize("variant", ["correct", "trusting"])
def test_a_delivery_lost_on_the_way_stops_the_acks_until_it_comes_back(variant: str) -> None:
    """Delivery 3 never arrived (a node died with it in flight): 1, 2, 4, 5 are stored, and
    no ack may cover 3 until its redelivery is stored. Control: the trusting floor acks 5."""
    c = Consumer()
    floor = FLOORS[variant](c.info())
    msgs = [c.deliver(s) for s in range(1, 6)]
    got = [m for m in msgs if m.metadata.sequence.stream != 3]
    for m in got:
        floor.arrived(m)
    stored: set[int] = set()
    settle(c, floor, stored, got)
    if variant == "trusting":
        assert forgotten_unstored(c, set(range(1, 6)), stored) == {3}
        return
    assert c.pending == {1, 2, 3, 4, 5}
    settle(c, floor, stored, take(c, floor, [3]))
    assert not c.pending and stored == {1, 2, 3, 4, 5}


@pytest.mark.parametrize("variant", ["correct", "snapshot-only"])
def test_a_check_is_not_fooled_by_a_delivery_elsewhere_since_its_snapshot(variant: str) -> None:
    """At the snapshot every pending message is this reader's; before the answer comes, the
    next delivery goes to another reader (a lease changing hands) and the one after here. The
    floor stays unsafe. Control: a check that trusts the snapshot alone acks past it."""
    c = Consumer()
    c.deliver(1)  # to the reader killed -9
    floor = FLOORS[variant](c.info())
    assert not floor.safe
    again = c.deliver(1)  # ack_wait: here
    floor.arrived(again)
    snapshot = c.info()
    c.deliver(2)  # to the other reader, which dies with it
    third = c.deliver(3)
    floor.arrived(third)
    stored: set[int] = set()
    for m in (again, third):
        stored.add(m.metadata.sequence.stream)
        floor.store(m)
    floor.check(snapshot)
    m = floor.due()
    if m is not None:
        c.ack(m)
    lost = forgotten_unstored(c, {1, 2, 3}, stored)
    if variant == "snapshot-only":
        assert lost == {2}
        return
    assert not floor.safe and m is None and not lost


@pytest.mark.parametrize("variant", ["correct", "trusting"])
def test_a_dead_holder_s_batch_coming_back_makes_the_floor_safe_without_a_check(
    variant: str,
) -> None:
    """As above, with no snapshot at all (the logger asks none of a delivering consumer):
    the floor acks nothing until the dead holder's 1-5 came back here, then everything.
    Control: the trusting floor acks 10 at once, and 1-5 are gone."""
    c, floor = after_a_dead_holder(variant)
    delivered = set(range(1, 13))
    stored: set[int] = set()
    for s in range(6, 11):
        settle(c, floor, stored, take(c, floor, [s]), check=False)
    if variant == "trusting":
        assert forgotten_unstored(c, set(range(1, 11)), stored) == {1, 2, 3, 4, 5}
        return
    assert c.pending == set(range(1, 11)) and not floor.safe
    settle(c, floor, stored, take(c, floor, (1, 2, 3, 4)), check=False)  # ack_wait: here
    assert not floor.safe and c.pending == set(range(1, 11))  # 5 is still out
    last = take(c, floor, (5, 11, 12))
    assert floor.safe
    settle(c, floor, stored, last, check=False)
    assert not c.pending and not forgotten_unstored(c, delivered, stored)


@pytest.mark.parametrize("variant", ["correct", "misses-not-counted"])
def test_a_delivery_elsewhere_after_the_bind_is_waited_for_too(variant: str) -> None:
    """1 was pending with a dead holder at the bind; after it, delivery 2 goes to another
    reader (a lease changing hands), 3 comes here, then 1's redelivery: 2 is still out, so
    no ack may cover it until it came back. Control: a floor that waits only for what was
    pending at the bind acks 3, and 2 is gone."""
    c = Consumer()
    c.deliver(1)  # to the reader killed -9
    floor = FLOORS[variant](c.info())
    c.deliver(2)  # to the other reader, which dies with it
    stored: set[int] = set()
    settle(c, floor, stored, take(c, floor, (3, 1)), check=False)
    lost = forgotten_unstored(c, {1, 2, 3}, stored)
    if variant == "misses-not-counted":
        assert lost == {2}
        return
    assert not floor.safe and not lost and c.pending == {1, 2, 3}
    again = take(c, floor, [2])
    assert floor.safe
    settle(c, floor, stored, again, check=False)
    assert not c.pending and stored == {1, 2, 3}


@pytest.mark.parametrize("variant", ["correct", "acked-counted"])
def test_a_redelivery_of_a_message_already_acked_is_not_counted(variant: str) -> None:
    """1-2 stored and acked here; delivery 3 goes elsewhere; then a redelivery of 1 that
    crossed the ack arrives, then 4: 3 is still out. Control: counting the acked 1 as one
    that came back acks 4, and 3 is gone."""
    c = Consumer()
    floor = FLOORS[variant](c.info())
    stored: set[int] = set()
    settle(c, floor, stored, take(c, floor, (1, 2)), check=False)
    assert not c.pending and floor.covered == 2
    c.deliver(3)  # to another reader, which dies with it
    stale = c.deliver(1)
    c.pending.discard(1)  # acked: the server sent it as the ack came in
    later = [stale, c.deliver(4)]
    for m in later:
        floor.arrived(m)
    settle(c, floor, stored, later, check=False)
    lost = forgotten_unstored(c, {1, 2, 3, 4}, stored)
    if variant == "acked-counted":
        assert lost == {3}
        return
    assert not floor.safe and not lost


class CountingJetStream:
    def __init__(self) -> None:
        self.infos = 0

    async def consumer_info(self, stream: str, durable: str) -> ConsumerInfo:
        self.infos += 1
        raise AssertionError("not expected to answer")


async def test_the_logger_asks_no_consumer_info_of_a_delivering_partition() -> None:
    """A partition taken with a dead holder's batch pending: the logger stores what comes
    and acks nothing, without asking CONSUMER.INFO after each batch (nats-server 2.9 would
    recount the consumer's pending messages at every later delivery). Negative control: the
    logger before this change (a check every 0.5 s while not safe) asked once per batch."""
    c, floor = after_a_dead_holder("correct")
    logger = NatsLogger(["nats://127.0.0.1:1"], cast(Any, None))
    js = CountingJetStream()
    logger._js = cast(Any, js)
    feeds = FeedSet(cast(Any, None), "S", "g", batch=10, ahead=1)
    feeds.floors["c"] = floor
    logger._feed = feeds
    for s in range(6, 11):
        batch = take(c, floor, [s])
        floor.store(batch[0])
        await logger.acknowledge(batch)
    assert js.infos == 0 and not floor.safe and c.pending == set(range(1, 11))


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.VMFP.vmf-loggers-p3.2.12345.6789.1764615000123456789.400",
        "$JS.ACK._.ACCHASH.VMFP.vmf-loggers-p3.2.12345.6789.1764615000123456789.400.tok",
        "$JS.ACK.hub.ACCHASH.VMFP.vmf-loggers-p3.2.12345.6789.1764615000123456789.400",
    ],
)
def test_delivery_reads_the_reply_subject_as_nats_py_does(reply: str) -> None:
    """The floor's sequences come from the cheap parse; nats-py's metadata is the reference
    (a parse with the v1 indices on a v2 subject gives (ACCHASH, ...): shown to fail)."""
    m = Msg(_client=None, subject="x", reply=reply, data=b"")  # type: ignore[arg-type]
    meta = m.metadata
    assert delivery(m) == (meta.consumer, meta.sequence.stream, meta.sequence.consumer)
    assert redelivered(m) == (meta.num_delivered > 1)


REPLIES = [
    "$JS.ACK.VMFP.vmf-loggers-p3.1.12345.6789.1764615000123456789.400",
    "$JS.ACK.VMFP.vmf-loggers-p5.2.12346.6790.1764615000123456790.399",
]


def _kept_per_class() -> Callable[[Msg], tuple[str, int, int]]:
    """A wrong keeping: one value for every delivery of the class (the first one read)."""
    kept: dict[type, tuple[str, int, int]] = {}
    return lambda m: kept.setdefault(type(m), delivery(m))


def _each_keeps_its_own(read: Callable[[Msg], tuple[str, int, int]]) -> bool:
    for reply in REPLIES:
        m = Delivered(_client=None, subject="x", reply=reply, data=b"")  # type: ignore[arg-type]
        meta = m.metadata
        want = (meta.consumer, meta.sequence.stream, meta.sequence.consumer)
        if [read(m), read(m)] != [want, want]:
            return False
    return True


@pytest.mark.parametrize("read", ["correct", "kept_per_class"])
def test_a_delivered_keeps_its_own_coordinates(read: str) -> None:
    """The feeds' Delivered reads its reply subject once: each delivery keeps its own
    (consumer, stream sequence, delivery sequence), as nats-py's metadata says, and a second
    look gives the same. A value kept for the class instead of the message fails."""
    reader = delivery if read == "correct" else _kept_per_class()
    assert _each_keeps_its_own(reader) is (read == "correct")


class RewindBlind(AckFloor):
    """Wrong: counts as before when the consumer's delivery count goes back, where nothing
    can be counted (missed 0, came back 0: safe at once)."""

    def arrived(self, m: Msg) -> None:
        super().arrived(m)
        if self.rewound:
            self.rewound = False
            self._safe_from(self.top + 1)


def delivered_as(sseq: int, dseq: int) -> Msg:
    seq = SimpleNamespace(stream=sseq, consumer=dseq)
    meta = SimpleNamespace(sequence=seq, consumer="c", num_delivered=1)
    return cast(Msg, SimpleNamespace(metadata=meta))


@pytest.mark.parametrize("variant", ["correct", "rewind-blind"])
def test_a_delivery_count_that_goes_back_keeps_the_floor_unsafe(variant: str) -> None:
    """Deliveries 1-3 came in order (safe); then delivery sequence 2 comes again, for stream
    sequence 20: a new consumer leader without the last deliveries numbers again, so which
    messages went where cannot be counted, and only a snapshot may make the floor safe.
    Control: a floor that counts on finds nothing missing and is safe at once (found in
    review: with it an ack could cover what went to a dead holder under the old numbers)."""
    kind = RewindBlind if variant == "rewind-blind" else AckFloor
    floor = kind(Consumer().info())
    for s in (1, 2, 3):
        floor.arrived(delivered_as(s, s))
    assert floor.safe
    floor.arrived(delivered_as(20, 2))
    assert (not floor.safe) is (variant == "correct")
