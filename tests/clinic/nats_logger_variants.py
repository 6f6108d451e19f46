"""The NATS clinic logger as a process the tests can kill -9 mid-batch, right or wrong.

  python tests/clinic/nats_logger_variants.py VARIANT SLOW_S <nats_logger arguments>

VARIANT: `correct` (the logger as shipped), `ack-first` (acknowledges a batch before storing
it: the negative control), `no-lease` (partitioned, but reads every partition whatever the
leases say: the negative control of the partitioned group) or `ack-last` (partitioned, acks
the last message of each batch on each AckPolicy.ALL consumer, held ones included: the
negative control of the ack floor). SLOW_S: a pause inside each
store call, announced on stdout with a line `ingest <stations of the batch>`, so that a kill
lands inside a batch and a test sees which instance stored which station.
`ready` is printed once the consumer is bound.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from feedback.clinic import nats_logger, nats_partitions
from feedback.clinic.nats_lease import Leases
from feedback.clinic.store import ClinicStore, Incoming, IngestResult


class SlowStore(ClinicStore):
    slow_s = 0.0

    def ingest(self, batch: list[Incoming]) -> IngestResult:
        stations = sorted({item.topic.split("/")[3] for item in batch})
        print("ingest", ",".join(stations), flush=True)
        time.sleep(self.slow_s)
        return super().ingest(batch)


class AckFirst(nats_logger.NatsLogger):
    async def store_then_ack(self, nc: NATS, msgs: list[Msg]) -> None:
        for m in msgs:
            await m.ack_sync()  # wrong: the broker forgets them before they are stored
        await super().store_then_ack(nc, msgs)

    async def acknowledge(self, msgs: list[Msg]) -> None:
        pass


class AckLast(nats_logger.NatsLogger):
    """After each batch, acks its last message on each consumer, held ones included: the
    naive use of AckPolicy.ALL (the negative control of nats_ackall.py's floor)."""

    async def handle(self, nc: NATS, msgs: list[Msg]) -> None:
        await super().handle(nc, msgs)
        last = {m.metadata.consumer: m for m in msgs}
        for m in last.values():
            if m.reply:
                await nc.publish(m.reply, b"+ACK")  # (nats-py refuses a second ack)


class EveryPartition(Leases):
    """Leases that always say this instance holds every partition."""

    async def renew(self) -> tuple[set[int], set[int]]:
        return set(range(self.partitions)), set()


class NoLease(nats_logger.NatsLogger):
    def _leases(self, nc: NATS) -> Leases:
        return EveryPartition(nc, self.partitions, self.member, group=self.durable)


VARIANTS: dict[str, type[nats_logger.NatsLogger]] = {
    "correct": nats_logger.NatsLogger,
    "ack-first": AckFirst,
    "no-lease": NoLease,
    "ack-last": AckLast,
}


async def run(variant: str, slow_s: float, argv: list[str]) -> None:
    args = nats_logger.build_parser().parse_args(argv)
    SlowStore.slow_s = slow_s
    kw: dict[str, Any] = {
        "stream": args.stream, "durable": args.durable, "clinic": args.clinic,
        "batch": args.batch, "ack_wait_s": args.ack_wait, "replicas": args.replicas,
        "partitions": args.partitions, "lease_s": args.lease, "name": args.name,
        "members": args.members, "ack_all": args.acks == "all",
    }  # fmt: skip
    if args.stream is None:
        kw["stream"] = nats_partitions.STREAM if args.partitions else nats_logger.STREAM
    logger = VARIANTS[variant](args.nats.split(","), SlowStore(args.db), **kw)
    task = asyncio.create_task(nats_logger.amain(args, logger))
    await logger.connected.wait()
    print("ready", flush=True)
    await task


if __name__ == "__main__":
    # Timed lines on stderr, which a failing test prints: what the instance did, and when.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(run(sys.argv[1], float(sys.argv[2]), sys.argv[3:]))
