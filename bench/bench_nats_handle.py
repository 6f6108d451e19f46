"""The NATS logger's CPU per message without the servers: the bench's message mix (50 stations,
cues and reps) as a partition's deliveries, through `NatsLogger.handle` (check, order gate,
store, receipts, the AckPolicy.ALL floor's ack) into a fresh SQLite file or PostgreSQL schema.

The process's CPU time (every thread: the event loop and the store's executor) per message
stored, which the load of other processes on the machine changes far less than the rate or
the cluster bench's sampled figure. The publishes and acks go to a client that only counts.
For an A/B, run it with another checkout's logger first on PYTHONPATH (the deliveries are
plain nats-py Msgs there if that checkout has no `nats_ackall.Delivered`):

  PYTHONPATH=<checkout>:. python bench/bench_nats_handle.py [--db sqlite|postgresql]
      [--per-station N] [--batch N]    (one JSON line on stdout)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from nats.aio.msg import Msg

from bench.bench_clinic import _station_message
from feedback.clinic import nats_ackall, nats_logger
from feedback.clinic.nats_group import FeedSet
from feedback.clinic.store import ClinicStore
from feedback.outputs.topics import MessageNumberer, encode

STATIONS = 50
PARTITIONS = 8
PG_URL = os.environ.get("VMF_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


class CountingClient:
    """Where receipts and acks go: counted, not sent."""

    def __init__(self) -> None:
        self.published = 0

    async def publish(self, subject: str, payload: bytes = b"", **_: Any) -> None:
        self.published += 1


def deliveries(client: CountingClient, per_station: int, durable: str) -> list[list[Msg]]:
    """Each partition's deliveries in order, as its consumer hands them out."""
    make = getattr(nats_ackall, "Delivered", Msg)
    per_partition: list[list[Msg]] = [[] for _ in range(PARTITIONS)]
    for k in range(STATIONS):
        p = k % PARTITIONS
        numberer = MessageNumberer(f"S-hbench-{k:03d}-{secrets.token_hex(2)}")
        for i in range(per_station):
            leaf, body = _station_message(numberer, i)
            out = per_partition[p]
            seq = len(out) + 1
            reply = f"$JS.ACK.VMFP.{durable}-p{p}.1.{seq}.{seq}.{time.time_ns()}.0"
            subject = f"vmfp.{p}.bench.st-{k:03d}.{leaf.replace('/', '.')}"
            out.append(
                make(_client=cast(Any, client), subject=subject, reply=reply, data=encode(body))
            )
    return per_partition


def floor_info(durable: str) -> Any:
    from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, SequenceInfo

    return ConsumerInfo(
        name=durable, stream_name="VMFP", config=ConsumerConfig(ack_policy=AckPolicy.ALL),
        delivered=SequenceInfo(consumer_seq=0, stream_seq=0), num_ack_pending=0,
        created=datetime.now(UTC),
    )  # fmt: skip


async def drain(db_url: str, per_station: int, batch: int) -> dict[str, Any]:
    client = CountingClient()
    durable = "hb"
    parts = deliveries(client, per_station, durable)
    store = ClinicStore(db_url)
    logger = nats_logger.NatsLogger(["nats://unused"], store, partitions=PARTITIONS)
    feeds = FeedSet(client, "VMFP", durable, batch=batch, ahead=1)  # type: ignore[arg-type]
    for p in range(PARTITIONS):
        floor = nats_ackall.AckFloor(floor_info(f"{durable}-p{p}"))
        feeds.floors[f"{durable}-p{p}"] = floor
        for m in parts[p]:
            floor.arrived(m)
    logger._feed = feeds  # the bench stands in for the feed (as test_nats_ackall.py does)
    if hasattr(nats_logger, "collect_less"):
        nats_logger.collect_less()
    # Batches as a FeedSet deals them: a share of each partition in turn.
    share = batch // PARTITIONS
    batches = []
    for start in range(0, max(len(p) for p in parts), share):
        msgs = [m for p in parts for m in p[start : start + share]]
        for i in range(0, len(msgs), batch):
            batches.append(msgs[i : i + batch])
    total = sum(len(b) for b in batches)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for msgs in batches:
        await logger.handle(client, msgs)  # type: ignore[arg-type]
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    stored = logger.stats.totals.stored
    store.close()
    return {
        "messages": total,
        "stored": stored,
        "quarantined": logger.stats.totals.invalid,
        "acks_and_receipts": client.published,
        "cpu_us_per_msg": round(cpu / max(stored, 1) * 1e6, 1),
        "wall_msgs_per_s": round(stored / max(wall, 1e-9)),
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python bench/bench_nats_handle.py")
    p.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--per-station", type=int, default=1000)
    p.add_argument("--batch", type=int, default=nats_logger.MAX_BATCH)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        if args.db == "sqlite":
            result = asyncio.run(drain(str(Path(d) / "h.db"), args.per_station, args.batch))
        else:
            from bench.bench_nats import pg_schema

            with pg_schema() as (url, skipped):
                if url is None:
                    sys.exit(skipped)
                result = asyncio.run(drain(url, args.per_station, args.batch))
    print(json.dumps({"logger": nats_logger.__file__, "db": args.db, **result}))


if __name__ == "__main__":
    main()
