"""When one acknowledgement may stand for a partition's whole batch (AckPolicy.ALL).

Each explicit ack is a consumer-state update the cluster replicates on three nodes; a partition's
consumer has one reader at a time (the lease), which receives in delivery order and acks only
after its commit, so one ack per batch could do. But with AckPolicy.ALL the server takes an ack
of stream sequence S as an ack of EVERY message still pending on the consumer at or below S,
whoever received it. Acking the last stored message is right only when every such message is
stored; it is wrong (a message lost for good) when one below S is:

- received here and not stored (yet): held by the order gate (NAKed, to come back after its
  predecessors), or still on its way through this batch's commit: the barrier below;
- delivered to someone else: the previous holder of the partition, killed mid-batch (its
  batch waits for ack_wait, then comes here), or a second reader while a lease changes hands;
- lost on the way (a node died with the delivery in flight, to come back after ack_wait).

The floor knows none of these happened when the deliveries it received are contiguous in the
consumer's delivery sequence from a point where nothing was pending with anyone else: from the
bind, if the consumer had nothing pending then. Otherwise it acks nothing until every message
pending with someone else has come here: it counts them (`unknown`: pending at the bind, plus
one per delivery sequence it never received since) and the redeliveries it receives of stream
sequences it never had (each one of those; a dead holder's batch comes back after ack_wait),
and is safe again once as many came back as there were. It learns this from its deliveries
alone: asking the server (CONSUMER.INFO) makes nats-server 2.9 recount the consumer's pending
messages at every later delivery (docs/notes/nats_logger_profile.md). A snapshot (`check`)
also makes it safe, and is used when the consumer is silent anyway (a count that cannot
complete: the previous holder, still alive, acked some of what was pending at the bind).
"""

from __future__ import annotations

from nats.aio.msg import Msg
from nats.js.api import ConsumerInfo


class Delivered(Msg):
    """A delivery as the feeds' direct path builds it (nats_pull.py): its coordinates are read
    off the reply subject once, not at each of the floor's arrival, store and ack and the
    logger's grouping by consumer (three reads a message were ~9 % of the event loop's CPU in
    a profile of the PostgreSQL bench: docs/notes/nats_logger_profile.md)."""

    coords: tuple[str, int, int] | None = None


def delivery(m: Msg) -> tuple[str, int, int]:
    """(consumer, stream sequence, delivery sequence) of a JetStream delivery, read off its
    reply subject: nats-py's `metadata` builds two dataclasses and a datetime a message
    (~4.5 us on the bench machine; this ~0.5), kept on a Delivered. Anything else goes
    through `metadata`."""
    if type(m) is Delivered:
        coords = m.coords
        if coords is None:
            coords = m.coords = _coords(m)
        return coords
    return _coords(m)


def _ack_fields(m: Msg) -> list[str] | None:
    """The reply subject's fields from the stream on: <stream>.<consumer>.<delivered>.<stream
    sequence>.<delivery sequence>...; None for anything else (then nats-py's `metadata`)."""
    reply: str | None = getattr(m, "reply", None)
    if reply:
        t = reply.split(".")
        if len(t) >= 9 and t[0] == "$JS" and t[1] == "ACK":
            if len(t) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>
                return t[2:]
            if len(t) >= 11:  # $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>...
                return t[4:]
    return None


def _coords(m: Msg) -> tuple[str, int, int]:
    f = _ack_fields(m)
    if f is not None:
        return f[1], int(f[3]), int(f[4])
    meta = m.metadata
    return meta.consumer, meta.sequence.stream, meta.sequence.consumer


def times_delivered(m: Msg) -> int:
    """How many times the server has delivered this message (to anyone), this time included."""
    f = _ack_fields(m)
    if f is not None:
        return int(f[2])
    return int(m.metadata.num_delivered or 1)


def redelivered(m: Msg) -> bool:
    """Whether the server delivered this message before (to anyone)."""
    return times_delivered(m) > 1


class AckFloor:
    def __init__(self, info: ConsumerInfo) -> None:
        self.safe = not info.num_ack_pending
        self.next_dseq = (info.delivered.consumer_seq or 0) + 1 if info.delivered else 1
        self.received: set[int] = set()  # stream sequences received, not yet covered by an ack
        self.late: set[int] = set()  # delivery sequences received while not safe
        self.stored: dict[int, Msg] = {}  # stream sequence -> a stored delivery of it
        self.acked_dseq = 0
        self.covered = 0  # stream sequence every message at or below which is acked
        self.acks = 0
        # While not safe: messages pending with someone else (at the bind, then per delivery
        # sequence missed from `since` on), and those of them that came here since.
        self.unknown = info.num_ack_pending or 0
        self.since = self.next_dseq
        self.counted = 0  # deliveries received with a delivery sequence >= since
        self.top = self.next_dseq - 1  # highest delivery sequence received
        self.came_back: set[int] = set()
        # A delivery sequence at or below one already passed: the consumer's count went back
        # (a new leader without the last deliveries), so what went where cannot be counted;
        # only a snapshot (`check`) makes the floor safe again.
        self.rewound = False

    def arrived(self, m: Msg) -> None:
        """Every delivery, in the order it came (the feed's subscription callback)."""
        _, sseq, dseq = delivery(m)
        if self.safe and dseq == self.next_dseq:
            self.received.add(sseq)
            self.next_dseq += 1
            return
        if self.safe:  # a delivery went elsewhere, or was lost on the way (or the count went back)
            self.safe = False
            self.unknown, self.since, self.counted = 0, self.next_dseq, 0
            self.top, self.came_back = self.next_dseq - 1, set()
        if dseq < self.since:
            self.rewound = True
        # A message pending with someone else is one delivered before and never here; not one
        # acked (an ack crossing its redelivery sends it anyway).
        if sseq not in self.received and sseq > self.covered and redelivered(m):
            self.came_back.add(sseq)
        self.received.add(sseq)
        self.late.add(dseq)
        if dseq >= self.since:
            self.counted += 1
            self.top = max(self.top, dseq)
        missed = self.top - self.since + 1 - self.counted
        # came_back holds distinct messages each pending elsewhere, of which there are at
        # most unknown + missed: as many means every one of them is here.
        if not self.rewound and len(self.came_back) >= self.unknown + missed:
            self._safe_from(self.top + 1)

    def store(self, m: Msg) -> None:
        """After the commit."""
        self.stored[delivery(m)[1]] = m

    def due(self) -> Msg | None:
        """The delivery to ack, covering every stored message below the first one received and
        not stored; None when nothing may be acked yet."""
        if not self.safe or not self.stored:
            return None
        barrier = self._barrier()
        below = [s for s in self.stored if barrier is None or s < barrier]
        if not below:
            return None
        m = self.stored[max(below)]
        # The server ignores an ack whose delivery is older than the last one acked: what it
        # covers stays pending and comes back after ack_wait (the store drops the copies).
        return m if delivery(m)[2] > self.acked_dseq else None

    def _barrier(self) -> int | None:
        """The lowest stream sequence received and not stored. Derived, not kept: a message the
        order gate will hold is unstored from the moment it arrives, before the gate decides,
        so a commit of its batch's other messages cannot be acked past it."""
        waiting = self.received - self.stored.keys()
        return min(waiting) if waiting else None

    def acked(self, m: Msg) -> None:
        _, sseq, dseq = delivery(m)
        self.acked_dseq = max(self.acked_dseq, dseq)
        self.acks += 1
        self._cover(sseq)

    def _cover(self, through: int) -> None:
        self.covered = max(self.covered, through)
        self.received = {s for s in self.received if s > through}
        self.stored = {s: m for s, m in self.stored.items() if s > through}

    def check(self, info: ConsumerInfo) -> None:
        """A snapshot of the consumer: safe again when every message pending on it is one this
        reader received, and it has received every delivery since (none went elsewhere)."""
        floor = info.ack_floor.stream_seq if info.ack_floor and info.ack_floor.stream_seq else 0
        last = info.delivered.stream_seq if info.delivered and info.delivered.stream_seq else 0
        dseq = info.delivered.consumer_seq if info.delivered and info.delivered.consumer_seq else 0
        self._cover(floor)  # acked by another reader's ack
        mine = sum(1 for s in self.received if s <= last)
        self.late = {d for d in self.late if d > dseq}
        if mine != (info.num_ack_pending or 0):
            return
        nxt = dseq + 1
        while nxt in self.late:
            nxt += 1
        if any(d > nxt for d in self.late):
            return  # a delivery since the snapshot went elsewhere
        self._safe_from(nxt)

    def _safe_from(self, next_dseq: int) -> None:
        self.safe, self.next_dseq, self.rewound = True, next_dseq, False
        self.late.clear()
        self.came_back = set()
