"""Which logger instance reads which partition: leases in a JetStream key-value bucket.

A partition's key (`p.<k>`) names its reader; only a create (no key yet) or an update at the
revision the holder last wrote succeeds, so two instances never both believe they hold it. The
bucket's age limit is the lease: a holder renews its keys every `lease_s / 3`; a holder
killed with -9 stops renewing, its keys age out and the others take its partitions. Each
instance also renews a member key (`m.<id>`), so that the instances can count each other and
each takes its share, ceil(partitions / members), giving back the rest.

Every request a renewal makes waits at most a quarter of the lease, and a failed renewal is
tried again after a twelfth of it: when a node is killed, the answer to a request its stream
leader had taken is lost, and waiting the client's usual 5 s for it let a short lease age out.
A write that was stored but whose answer was lost is found again: a key that holds this
member's name is its own (no other process writes that name), whatever revision it is at.

The lease is for speed, not for safety: an instance that held a partition past its lease (a
pause longer than `lease_s`) can still store a batch while the next holder starts; the order
gate and the store's ledger keep that exactly once and in order, as with a shared consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import zlib
from collections.abc import Coroutine
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

BUCKET_PREFIX = "leases-"  # + the group's durable name: a bucket per consumer group
LEASE_S = 6.0
SETUP_TIMEOUT_S = 5.0  # finding or creating the bucket, once at the start: not in a hurry


class PartitionCountMismatch(ValueError):
    """This instance was started with another partition count than the group's."""


class Leases:
    def __init__(
        self,
        nc: NATS,
        partitions: int,
        member: str,
        *,
        lease_s: float = LEASE_S,
        group: str = "vmf-loggers",
        replicas: int = 3,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=lease_s / 4)
        self.partitions = partitions
        self.member = member  # unique per process: [A-Za-z0-9_-]
        self.lease_s = lease_s
        self.bucket = BUCKET_PREFIX + group
        self.replicas = replicas
        self.held: dict[int, int] = {}  # partition → revision of our last write
        self.members = 0
        self._kv: KeyValue | None = None
        self._lock = asyncio.Lock()  # a renewal and a release do not interleave

    async def open(self) -> None:
        """Every request here waits SETUP_TIMEOUT_S, the renewals' ones a quarter of the lease:
        the bucket is looked up once, and the handle the renewals write through is made for
        their context rather than looked up again through it (at the start a cluster may still
        be electing, and a lookup timed out at lease / 4 would fail the logger's start)."""
        setup = self.nc.jetstream(timeout=SETUP_TIMEOUT_S)
        try:
            info = await setup.stream_info(self._stream)
        except nats.js.errors.NotFoundError:
            config = KeyValueConfig(
                bucket=self.bucket, history=1, ttl=self.lease_s, replicas=self.replicas
            )
            with contextlib.suppress(nats.js.errors.BadRequestError):  # another made it first
                await setup.create_key_value(config)
            info = await setup.stream_info(self._stream)
        direct = bool(info.config.allow_direct)
        await self._check_partition_count(self._bucket_through(setup, direct))
        self._kv = self._bucket_through(self.js, direct)

    def _bucket_through(self, js: JetStreamContext, direct: bool) -> KeyValue:
        """The bucket as `js.key_value` makes it, each request with `js`'s timeout."""
        return KeyValue(
            name=self.bucket, stream=self._stream, pre=self._subject(""), js=js, direct=direct
        )

    async def _check_partition_count(self, kv: KeyValue) -> None:
        """The count is the servers' (their import transforms); one instance with another
        would leave partitions unread, or read ones that never fill. The first to come writes
        it down; it ages out with the bucket, and is written again by every renewal."""
        count = str(self.partitions).encode()
        with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
            await kv.create("partitions", count)
        entry = await kv.get("partitions")
        if entry.value != count:
            raise PartitionCountMismatch(
                f"the logger group reads {entry.value!r} partitions; this one {self.partitions}"
            )

    async def announce(self) -> None:
        """Be counted before taking anything: instances that start together then split the
        partitions at once, rather than the first taking all and giving half back."""
        assert self._kv is not None
        await self._kv.put(f"m.{self.member}", b"1")

    async def wait_for_members(self, count: int, within_s: float) -> None:
        """At the start, until `count` members are counted or `within_s` has passed: instances
        started together (a deployment, the load test) then split the partitions at their
        first renewal, where one whose start was slower than the others' by more than the
        first renewal's delay would find every partition taken, and each give-back after
        costs a drain (the idea of Kafka's group.initial.rebalance.delay.ms, by count)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        announced = loop.time()
        while loop.time() < deadline:
            # (A count the cluster does not answer, in an election at the start, is asked
            # again; this member's own key renewed as a renewal would, lest it age out.)
            with contextlib.suppress(TimeoutError, nats.errors.Error, nats.js.errors.Error):
                if loop.time() - announced > self.lease_s / 3:
                    await self.announce()
                    announced = loop.time()
                if await self._count_members() >= count:
                    return
            await asyncio.sleep(min(0.1, self.lease_s / 12))

    async def renew(self) -> tuple[set[int], set[int]]:
        """Renew, count the members, take what is free up to this instance's share.
        Returns (held now, held beyond the share: to give back once drained)."""
        async with self._lock:
            return await self._renew()

    async def _renew(self) -> tuple[set[int], set[int]]:
        kv = self._kv
        assert kv is not None
        # At once, not one after the other: each write is a round of the bucket's consensus,
        # and on a loaded machine (a CI run on 2 cores) eight of them in a row took longer
        # than two thirds of a 2 s lease, so a renewal let the keys it came last to age out.
        # First the ones held: they can run out.
        renewed = {
            k: kv.update(self._key(k), self._value, last=rev) for k, rev in self.held.items()
        }
        await self._write_at_once(renewed)
        await asyncio.gather(
            kv.put(f"m.{self.member}", b"1"), kv.put("partitions", str(self.partitions).encode())
        )
        self.members = max(1, await self._count_members())
        share = math.ceil(self.partitions / self.members)
        free = [k for k in self._preference() if k not in self.held]
        while free and len(self.held) < share:  # in rounds: another member may take some
            wanted, free = free[: share - len(self.held)], free[share - len(self.held) :]
            created = {k: kv.create(self._key(k), self._value) for k in wanted}
            for k in await self._write_at_once(created):
                log.info("took partition %d (%d members)", k, self.members)
        extra = set(sorted(self.held)[share:])
        return set(self.held), extra

    async def _write_at_once(self, writes: dict[int, Coroutine[Any, Any, int]]) -> set[int]:
        """The lease keys' writes (renewals or takes) at once; returns the keys written. First
        `held` is brought up to date: each revision written kept, each key whose revision had
        moved kept at its new revision if it is still ours, dropped if it expired or another
        member has it; then the first other failure is raised (the cluster is busy: the
        caller retries)."""
        outcomes = await asyncio.gather(*writes.values(), return_exceptions=True)
        refused = [
            k
            for k, outcome in zip(writes, outcomes, strict=True)
            if isinstance(outcome, nats.js.errors.KeyWrongLastSequenceError)
        ]
        owners = dict(zip(refused, await self._owned_revisions(refused), strict=True))
        written: set[int] = set()
        failed: list[BaseException] = []
        for k, outcome in zip(writes, outcomes, strict=True):
            result = owners.get(k, outcome)
            if result is None:
                if self.held.pop(k, None) is not None:
                    log.warning("lease on partition %d lost (expired, taken by another)", k)
            elif isinstance(result, BaseException):
                failed.append(result)
            else:
                self.held[k] = result
                written.add(k)
        if failed:
            raise failed[0]
        return written

    async def _owned_revisions(self, keys: list[int]) -> list[int | BaseException | None]:
        """For keys a write was refused on (its revision had moved): the revision a key is at
        if it holds this member's name (an earlier write of ours was stored though its answer
        was lost, e.g. timed out in an election), None if it is gone or another's; an error
        if the bucket could not be read (kept for the retry)."""
        kv = self._kv
        assert kv is not None
        entries = await asyncio.gather(
            *(kv.get(self._key(k)) for k in keys), return_exceptions=True
        )
        return [self._revision_if_ours(e) for e in entries]

    def _revision_if_ours(
        self, entry: KeyValue.Entry | BaseException
    ) -> int | BaseException | None:
        if isinstance(entry, nats.js.errors.KeyNotFoundError):  # aged out, or given back
            return None
        if isinstance(entry, BaseException):
            return entry
        return entry.revision if entry.value == self._value else None

    async def _count_members(self) -> int:
        """The members' keys, from the stream's count per subject: one request to the stream's
        leader. Not `kv.keys()`: that creates an ephemeral R1 consumer, which nats-server 2.9
        can place on a replica that is down; after a node's loss one listing in three to five
        then timed out (5 s), longer than a lease, and every renewal it failed lost them all."""
        info = await self.js.stream_info(self._stream, subjects_filter=self._subject("m.*"))
        return len(info.state.subjects or {})

    async def release(self, partition: int) -> None:
        """Give a partition back at once (its reader is drained), instead of letting it age."""
        async with self._lock:
            await self._release(partition)

    async def _release(self, partition: int) -> None:
        kv = self._kv
        revision = self.held.pop(partition, None)
        if kv is None or revision is None:
            return
        with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError, nats.errors.Error):
            await kv.delete(self._key(partition), last=revision)

    async def release_all(self) -> None:
        for k in list(self.held):
            await self.release(k)
        if self._kv is not None:  # purged, not deleted: a delete marker would still count
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                await self.js.purge_stream(self._stream, subject=self._subject(f"m.{self.member}"))

    def _preference(self) -> list[int]:
        """Each member starts looking at another partition, so that two starting together
        do not race for the same keys."""
        start = zlib.crc32(self.member.encode()) % self.partitions
        return [(start + i) % self.partitions for i in range(self.partitions)]

    @property
    def _stream(self) -> str:
        return f"KV_{self.bucket}"

    def _subject(self, key: str) -> str:
        return f"$KV.{self.bucket}.{key}"

    @staticmethod
    def _key(partition: int) -> str:
        return f"p.{partition}"

    @property
    def _value(self) -> bytes:
        return self.member.encode()
