"""The partitions' leases against a real three-node cluster (nats_lease.py): renewals that go
on when a node is lost, and a member count that follows the members."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import nats
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS

from feedback.clinic.nats_cluster import NatsCluster
from feedback.clinic.nats_lease import SETUP_TIMEOUT_S, Leases
from tests.clinic.nats_running import running_cluster

PARTITIONS = 8


class ListingLeases(Leases):
    """Counts the members as the leases did before: `kv.keys()`, an ephemeral consumer."""

    async def _count_members(self) -> int:
        assert self._kv is not None
        try:
            keys = await self._kv.keys()
        except nats.js.errors.NoKeysError:
            return 0
        return sum(1 for k in keys if k.startswith("m."))


class DeletingLeases(Leases):
    """Gives its member key back with a KV delete (a marker stays) instead of a purge."""

    async def release_all(self) -> None:
        for k in list(self.held):
            await self.release(k)
        assert self._kv is not None
        await self._kv.delete(f"m.{self.member}")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    async with running_cluster(tmp_path) as cluster:
        yield cluster


async def connect(cluster: NatsCluster) -> NATS:
    return await nats.connect(servers=cluster.urls, max_reconnect_attempts=-1)


@pytest.mark.parametrize("variant", ["correct", "listing"])
async def test_renewals_go_on_after_a_node_s_loss(cluster: NatsCluster, variant: str) -> None:
    """A node that neither leads the bucket nor carries the connection is killed -9; twenty
    renewals in a row then keep every partition, as the bucket's stream still has a quorum.
    Control: members counted by `kv.keys()`, whose ephemeral consumer nats-server 2.9 can
    place on the dead node: a renewal times out (5 s, more than a lease) within the twenty
    (each listing did so with a chance of one in five to one in two in trials)."""
    nc = await connect(cluster)
    try:
        js = nc.jetstream(timeout=5.0)
        kind = ListingLeases if variant == "listing" else Leases
        leases = kind(nc, PARTITIONS, "solo", lease_s=6.0, group="t")
        await leases.open()
        await leases.announce()
        held, _ = await leases.renew()
        assert held == set(range(PARTITIONS)) and leases.members == 1
        info = await js.stream_info(leases._stream)
        assert info.cluster is not None and info.config.num_replicas == 3
        assert nc.connected_url is not None
        port, leader = nc.connected_url.port, info.cluster.leader
        victim = next(n for n in cluster.nodes if n.name != leader and n.client_port != port)
        victim.kill9()

        async def twenty() -> None:
            for _ in range(20):
                held, _ = await leases.renew()
                assert held == set(range(PARTITIONS)) and leases.members == 1

        if variant == "listing":
            with pytest.raises(TimeoutError):
                await twenty()
            return
        await twenty()
    finally:
        await nc.close()


@pytest.mark.parametrize("variant", ["correct", "deleting"])
async def test_a_member_that_leaves_is_no_longer_counted(
    cluster: NatsCluster, variant: str
) -> None:
    """Two members share the partitions; one releases everything (a logger's clean stop) and
    the other's next renewal counts one member and takes all eight. Control: the member key
    deleted rather than purged leaves a marker that the count still sees."""
    nc = await connect(cluster)
    try:
        kind = DeletingLeases if variant == "deleting" else Leases
        a = kind(nc, PARTITIONS, "a", group="t")
        b = Leases(nc, PARTITIONS, "b", group="t")
        for x in (a, b):
            await x.open()
            await x.announce()
        held_a, _ = await a.renew()
        held_b, _ = await b.renew()
        assert a.members == b.members == 2 and len(held_a) == len(held_b) == PARTITIONS // 2
        await a.release_all()
        held_b, _ = await b.renew()
        if variant == "deleting":
            assert b.members == 2 and len(held_b) == PARTITIONS // 2
            return
        assert b.members == 1 and held_b == set(range(PARTITIONS))
    finally:
        await nc.close()


class RefusedMeansLost(Leases):
    """Takes every refused write as a lost lease, without looking whose the key is now."""

    async def _owned_revisions(self, keys: list[int]) -> list[int | BaseException | None]:
        return [None for _ in keys]


@pytest.mark.parametrize("variant", ["correct", "forgetful"])
async def test_a_renewal_whose_answer_was_lost_keeps_the_lease(
    cluster: NatsCluster, variant: str
) -> None:
    """A renewal stored by the bucket whose answer never came back (it timed out while the
    cluster elected a leader): the member still has the old revision, so its next update is
    refused. The key holds its name, so the lease is still its own, at the bucket's revision,
    and the renewal after that succeeds too. Control: a refused write taken as a lost lease
    gives up a partition nobody else holds."""
    nc = await connect(cluster)
    try:
        kind = RefusedMeansLost if variant == "forgetful" else Leases
        leases = kind(nc, PARTITIONS, "solo", group="t")
        await leases.open()
        await leases.announce()
        held, _ = await leases.renew()
        assert held == set(range(PARTITIONS))
        kv = await nc.jetstream(timeout=5.0).key_value(leases.bucket)
        await kv.update("p.3", b"solo", last=leases.held[3])  # the write whose answer was lost
        stale = set(leases.held.items())
        held, _ = await leases.renew()
        kept = held == set(range(PARTITIONS)) and not stale & set(leases.held.items())
        assert kept is (variant == "correct")
        if kept:
            held, _ = await leases.renew()
            assert held == set(range(PARTITIONS))
    finally:
        await nc.close()


@pytest.mark.parametrize("variant", ["correct", "no-wait"])
async def test_instances_started_together_split_the_partitions_at_once(
    cluster: NatsCluster, variant: str
) -> None:
    """Two instances started together, the second half a second later (a slower start): the
    first waits until two members are counted, and its first renewal takes its share, four.
    Control: one that does not wait finds itself alone and takes all eight, to give half back
    later (each a drain)."""
    nc = await connect(cluster)
    try:
        a = Leases(nc, PARTITIONS, "a", group="t")
        b = Leases(nc, PARTITIONS, "b", group="t")
        await a.open()
        await a.announce()

        async def b_starts() -> None:
            await asyncio.sleep(0.5)
            await b.open()
            await b.announce()

        starting = asyncio.create_task(b_starts())
        await a.wait_for_members(2 if variant == "correct" else 1, within_s=6.0)
        held, _ = await a.renew()
        await starting
        assert (len(held) == PARTITIONS // 2) is (variant == "correct")
    finally:
        await nc.close()


class LookedUpAgainLeases(Leases):
    """Looks the bucket up a second time through the renewals' context, as `open` did before."""

    async def open(self) -> None:
        await super().open()
        self._kv = await self.js.key_value(self.bucket)


class SetupBoundLeases(Leases):
    """Renews through a handle looked up through the setup context (5 s a request)."""

    async def open(self) -> None:
        await super().open()
        self._kv = await self.nc.jetstream(timeout=SETUP_TIMEOUT_S).key_value(self.bucket)


def _timeouts_asked(nc: NATS, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every JetStream request (API calls and KV writes alike) goes through the connection's
    `request` with its context's timeout: that timeout, for each request from now on."""
    asked: list[float] = []
    request = nc.request

    async def recording(subject: str, payload: bytes = b"", timeout: float = 0.5, **kw: Any) -> Any:
        asked.append(timeout)
        return await request(subject, payload, timeout, **kw)

    monkeypatch.setattr(nc, "request", recording)
    return asked


@pytest.mark.parametrize("variant", ["correct", "looked_up_again", "setup_bound"])
async def test_setup_requests_wait_the_setup_timeout_and_renewals_a_quarter_lease(
    cluster: NatsCluster, variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each request `open` makes (bucket lookup and creation, the partition count) waits
    SETUP_TIMEOUT_S; each a renewal makes, lease / 4. Controls: the bucket looked up again
    through the renewals' context (a setup request at lease / 4), or the renewals writing
    through a handle made for setup (their writes at 5 s)."""
    kind = {"looked_up_again": LookedUpAgainLeases, "setup_bound": SetupBoundLeases}
    nc = await connect(cluster)
    try:
        asked = _timeouts_asked(nc, monkeypatch)
        leases = kind.get(variant, Leases)(nc, PARTITIONS, "solo", lease_s=6.0, group="t")
        await leases.open()
        at_setup = set(asked)
        asked.clear()
        await leases.announce()
        held, _ = await leases.renew()
        assert held == set(range(PARTITIONS))
        ok = at_setup == {SETUP_TIMEOUT_S} and set(asked) == {6.0 / 4}
        assert ok is (variant == "correct")
    finally:
        await nc.close()


class RaiseFirstLeases(RefusedMeansLost):
    """Writes at once, but raises at the first failure before keeping what was written."""

    async def _write_at_once(self, writes: dict[int, Coroutine[Any, Any, int]]) -> set[int]:
        outcomes = await asyncio.gather(*writes.values(), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        self.held.update(zip(writes, cast(list[int], outcomes), strict=True))
        return set(writes)


async def _revision(revision: int) -> int:
    return revision


async def _raises(exc: BaseException) -> int:
    raise exc


@pytest.mark.parametrize("variant", ["correct", "raise-first"])
async def test_a_renewal_that_partly_fails_keeps_what_it_wrote(variant: str) -> None:
    """Three renewals at once: one written (revision 7), one whose key had moved (expired or
    taken), one timed out (the cluster busy). The timeout is raised for the caller to retry,
    and `held` already has the new revision and no longer the moved key: the retry renews
    with the revision the bucket has. Control: raising first leaves the old revision, which
    the retry's update would be refused as moved, losing a lease this member still had."""
    kind = RaiseFirstLeases if variant == "raise-first" else RefusedMeansLost  # (no bucket)
    leases = kind(NATS(), PARTITIONS, "m1")
    leases.held = {0: 1, 1: 2, 2: 3}
    writes = {
        0: _revision(7),
        1: _raises(nats.js.errors.KeyWrongLastSequenceError()),
        2: _raises(TimeoutError()),
    }
    with pytest.raises((TimeoutError, nats.js.errors.KeyWrongLastSequenceError)):
        await leases._write_at_once(writes)
    if variant == "raise-first":
        assert leases.held == {0: 1, 1: 2, 2: 3}
        return
    assert leases.held == {0: 7, 2: 3}


class TakesAny(Leases):
    """Wrong: takes a refused key as its own whoever's name it holds."""

    def _revision_if_ours(self, entry: Any) -> int | BaseException | None:
        if isinstance(entry, BaseException):
            return None
        return cast(int, entry.revision)


class Bucket:
    """The lease bucket's answers: p.0 moved on and now names another member."""

    async def get(self, key: str) -> Any:
        assert key == "p.0"
        return SimpleNamespace(key=key, value=b"m2", revision=9)


@pytest.mark.parametrize("variant", ["correct", "takes-any"])
async def test_a_refused_key_that_names_another_member_is_given_up(variant: str) -> None:
    """The renewal of partition 0 is refused, and the bucket shows the key at a newer revision
    with another member's name (it aged out and m2 took it): the lease is lost, and this
    member does not count it as held. Control: taking any refused key as one's own would
    leave two members both holding partition 0."""
    kind = TakesAny if variant == "takes-any" else Leases
    leases = kind(NATS(), PARTITIONS, "m1")
    leases._kv = cast(Any, Bucket())
    leases.held = {0: 3}
    written = await leases._write_at_once({0: _raises(nats.js.errors.KeyWrongLastSequenceError())})
    given_up = written == set() and 0 not in leases.held
    assert given_up is (variant == "correct")
