"""The partitioned logger group against a real three-node cluster (nats_partitions.py): the
servers sort each station's messages into one of N partitions, and logger instances read the
partitions they hold a lease on (nats_lease.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nats.js.errors
import paho.mqtt.client as mqtt
import pytest
from nats.js.api import AckPolicy

from feedback.clinic import nats_connect, nats_lease, nats_partitions
from feedback.clinic.nats_cluster import NatsCluster
from feedback.clinic.nats_logger import topic_of
from tests.clinic.conftest import wait_until
from tests.clinic.nats_running import running_cluster
from tests.clinic.test_nats_cluster import (
    MqttFront,
    check_exactly_once_in_order,
    count,
    start_logger,
    stations,
)

PARTITIONS = 8
LEASE = ("--partitions", str(PARTITIONS), "--lease", "2")


async def stream_leader(cluster: NatsCluster) -> str:
    nc = await nats_connect.connect(cluster.logger_urls)
    try:
        info = await nc.jetstream().stream_info(nats_partitions.STREAM)
        assert info.cluster is not None and info.cluster.leader is not None
        assert info.config.num_replicas == 3
        return info.cluster.leader
    finally:
        await nc.close()


async def leases_split(cluster: NatsCluster, group: str, names: tuple[str, ...]) -> None:
    """Until the partitions' leases are shared evenly among the named instances (a member is
    its name and a random suffix): the first to start takes every partition and gives back
    what is beyond its share once drained, which on a loaded machine takes some seconds."""
    share = PARTITIONS // len(names)
    nc = await nats_connect.connect(cluster.logger_urls)
    try:
        kv = await nc.jetstream(timeout=5.0).key_value(nats_lease.BUCKET_PREFIX + group)
        for _ in range(300):
            holders: list[str] = []
            for k in range(PARTITIONS):
                with contextlib.suppress(nats.js.errors.KeyNotFoundError, TimeoutError):
                    member = (await kv.get(f"p.{k}")).value or b""
                    holders.append(member.decode().rsplit("-", 1)[0])
            if all(holders.count(n) == share for n in names):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the leases did not settle {share} each: {holders}")
    finally:
        await nc.close()


@pytest.fixture
async def partitioned(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    async with running_cluster(tmp_path, partitions=PARTITIONS) as cluster:
        yield cluster


def test_a_partitioned_subject_gives_back_its_topic() -> None:
    assert topic_of("vmfp.3.clinic-a.st_01.cmd.estop") == "vmf/v1/clinic-a/st_01/cmd/estop"
    assert nats_partitions.filter_subject(3) == "vmfp.3.>"
    subjects = nats_partitions.stream_subjects("clinic-a")
    assert subjects == ["vmfp.*.clinic-a.>"] and nats_partitions.stream_subjects() == ["vmfp.>"]
    assert nats_partitions.filter_subject(3, "clinic-a") == "vmfp.3.clinic-a.>"


async def test_the_gateway_s_messages_are_partitioned_by_station_for_loggers_only(
    partitioned: NatsCluster,
) -> None:
    """An MQTT publish reaches the loggers' account on `vmfp.<k>...`, k the same for every
    leaf of a station, and the stations' account (dashboards, the station itself) on the
    subject it was sent to. Control: the stations' account sees no partitioned subject."""
    loggers = await nats_connect.connect(partitioned.logger_urls)
    anyone = await nats.connect(servers=partitioned.urls)
    seen: dict[str, list[str]] = {"loggers": [], "stations": []}
    try:

        async def to(name: str) -> object:
            async def cb(m: nats.aio.msg.Msg) -> None:
                seen[name].append(m.subject)

            return cb

        await loggers.subscribe(">", cb=await to("loggers"))  # type: ignore[arg-type]
        await anyone.subscribe(">", cb=await to("stations"))  # type: ignore[arg-type]
        await loggers.flush()
        await anyone.flush()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="p-st",
                             protocol=mqtt.MQTTv311)  # fmt: skip
        client.connect("127.0.0.1", partitioned.nodes[1].mqtt_port)
        client.loop_start()
        try:
            for k in range(12):
                for leaf in ("cue", "rep", "cmd/estop"):
                    info = client.publish(f"vmf/v1/c/st-{k:02d}/{leaf}", b"{}", qos=1)
                    info.wait_for_publish(10)
            await wait_until(lambda: len(seen["loggers"]) >= 36, 10, "all 36 partitioned")
        finally:
            client.loop_stop()
            client.disconnect()
        mine = [s for s in seen["loggers"] if s.startswith("vmfp.")]
        part: dict[str, set[str]] = {}
        for s in mine:
            part.setdefault(s.split(".")[3], set()).add(s.split(".")[1])
        assert len(part) == 12 and all(len(v) == 1 for v in part.values())  # one per station
        assert len({next(iter(v)) for v in part.values()}) > 1  # spread over partitions
        assert {topic_of(s) for s in mine} == {
            f"vmf/v1/c/st-{k:02d}/{leaf}" for k in range(12) for leaf in ("cue", "rep", "cmd/estop")
        }
        ours = [s for s in seen["stations"] if s.startswith("vmf.v1.c.")]
        assert len(ours) == 36 and not any(s.startswith("vmfp.") for s in seen["stations"])
    finally:
        await loggers.close()
        await anyone.close()


@pytest.mark.parametrize("variant", ["correct", "no-lease"])
async def test_two_instances_read_disjoint_stations_and_one_killed_hands_its_partitions_over(
    partitioned: NatsCluster, tmp_path: Path, variant: str
) -> None:
    """Two instances, eight partitions: each stores its own stations (no station stored by
    both), both do work; one is killed -9 mid-batch, then the stream's leader node; the other
    instance takes the dead one's partitions once its leases age out and every message is
    stored exactly once, in order per session. Control:
    instances that ignore the leases (every one reads every partition) store the same
    stations side by side, and the disjointness check fails."""
    db_url = str(tmp_path / "clinic.db")
    n_stations, per_station = 12, 450  # 7.8 s of load before the tail waits for the kill
    a = await start_logger(partitioned, db_url, "a", variant, extra=LEASE)
    b = await start_logger(partitioned, db_url, "b", variant, extra=LEASE)
    killed = asyncio.Event()
    try:
        async with (
            MqttFront(partitioned) as front,
            stations(
                front.url, n_stations, per_station, receipts=True, tail_after=killed, tail=60
            ) as (pubs, feeding),
        ):
            await wait_until(lambda: all(p.connected for p in pubs), 20, "stations connected")
            if variant == "correct":
                await leases_split(partitioned, "clinic-loggers", ("a", "b"))
            else:
                await asyncio.sleep(2.5)  # (nothing to settle: each reads all)
            a.stations.clear()
            b.stations.clear()
            await asyncio.sleep(1.5)
            before = (set(a.stations), set(b.stations))
            await a.kill9_mid_batch()
            if variant == "correct":  # and a node: the one leading the stream
                leader = await stream_leader(partitioned)
                next(n for n in partitioned.nodes if n.name == leader).kill9()
            killed.set()
            assert not feeding.done(), "the load ended before the kill: make it longer"
            await asyncio.wait_for(feeding, 60)
            await wait_until(lambda: all(p.backlog == 0 for p in pubs), 90, "every receipt")
        total = n_stations * per_station
        await wait_until(lambda: count(db_url, "SELECT count(*) FROM messages") >= total,
                         30, "every message stored")  # fmt: skip
    finally:
        await a.stop()
        await b.stop()
    check_exactly_once_in_order(db_url, n_stations, per_station)
    a_before, b_before = before
    assert a_before and b_before, f"both doing work: {before}"
    if variant == "no-lease":
        assert a_before & b_before  # the control: the same stations on both
        return
    assert not a_before & b_before, f"stations stored by both: {a_before & b_before}"
    assert a_before <= b.stations  # a's stations went to b after the kill


@pytest.mark.parametrize("variant", ["correct", "ack-last"])
async def test_an_ack_all_partition_redelivers_the_tail_a_killed_logger_had_taken(
    partitioned: NatsCluster, tmp_path: Path, variant: str
) -> None:
    """The partitions' consumers made to ack with AckPolicy.ALL (one ack covers a batch). Stations
    without receipts, so only the consumers keep what a logger had taken: one is killed -9
    mid-batch and the next instance, started after, stores the unacked tail once it is
    redelivered (after ack_wait), every message once and in order. Control: a logger that
    acks the last message of each batch (held ones included, as the order gate holds the
    next messages of the killed batch's sessions) covers the killed batch, which is lost."""
    db_url = str(tmp_path / "clinic.db")
    n_stations, per_station = 6, 150
    args = (*LEASE, "--ack-wait", "8", "--acks", "all")
    a = await start_logger(partitioned, db_url, "a", variant, slow_s=0.3, extra=args)
    async with (
        MqttFront(partitioned) as front,
        stations(front.url, n_stations, per_station, receipts=False) as (pubs, feeding),
    ):
        await wait_until(lambda: all(p.connected for p in pubs), 20, "stations connected")
        await asyncio.sleep(1.0)
        await a.kill9_mid_batch()
        b = await start_logger(partitioned, db_url, "b", variant, extra=args)
        await asyncio.wait_for(feeding, 60)
        await wait_until(lambda: all(p.backlog == 0 for p in pubs), 30, "every PUBACK")
    try:
        nc = await nats_connect.connect(partitioned.logger_urls)
        try:
            info = await nc.jetstream().consumer_info(
                nats_partitions.STREAM, nats_partitions.durable_name("clinic-loggers", 0)
            )
        finally:
            await nc.close()
        assert info.config.ack_policy == AckPolicy.ALL
        total = n_stations * per_station
        if variant == "correct":
            await wait_until(lambda: count(db_url, "SELECT count(*) FROM messages") >= total,
                             45, "every message stored")  # fmt: skip
            check_exactly_once_in_order(db_url, n_stations, per_station)
            return
        await asyncio.sleep(20.0)  # ack_wait twice over: anything redelivered is in by now
        with pytest.raises(AssertionError, match=r"exactly once in order|never stored"):
            check_exactly_once_in_order(db_url, n_stations, per_station)
    finally:
        await a.stop()
        await b.stop()


def test_the_deployed_transforms_are_the_ones_the_tests_run() -> None:
    """deploy/nats/n*.conf import every logged leaf with the partition transform the test
    cluster uses, for the partition count the docs give the loggers (8)."""
    expected = nats_partitions.accounts_config(8, '"x"', anonymous_stations=False)
    transforms = sorted(line.split("to: ")[1] for line in expected.splitlines() if "to: " in line)
    root = Path(__file__).resolve().parents[2]
    for conf in sorted((root / "deploy" / "nats").glob("n*.conf")):
        text = conf.read_text()
        found = sorted(
            line.split("to: ")[1].strip() for line in text.splitlines() if "to: " in line
        )
        assert found == [t.strip() for t in transforms], conf.name
    assert "--partitions 8" in (root / "deploy" / "README.md").read_text()
