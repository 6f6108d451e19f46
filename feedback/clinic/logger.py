"""The clinic logger: every station's messages from the broker into the clinic database.

Example:
  python -m feedback.clinic.logger --broker mqtts://broker:8883 --db postgresql://host/clinic

- MQTT 5 shared subscriptions `$share/<group>/vmf/v1/<clinic>/+/<leaf>`, one per topic leaf of the
  contract (status, session, cue, rep, event, live, cmd): several instances with the same group
  split the messages between them (Mosquitto hands each message to one member). Not `#`: the
  binary `stream` leaf (remote dashboards, about 3 kB/s per station) is neither JSON nor worth
  keeping, and would otherwise land in the quarantine ten times a second per station.
- Nothing lost when the logger dies: the session is persistent (clean start off, long session
  expiry, a client id fixed by --group and --instance), and every message is acknowledged only
  after the batch holding it has been committed. A killed logger's unacknowledged messages are
  redelivered when it comes back; copies it had already stored are dropped and counted.
- Nothing lost when the broker dies either: after each commit the logger publishes a receipt
  to each station concerned (`vmf/v1/<clinic>/<station>/receipt`: every msg_id up to
  `through` is stored, and `stored` ranges above a hole), and the station deletes a session
  message from its outbox only then; for a hole it sees in a session's msg_ids it asks the
  station to `resend` (at most once a second per session, backing off to 30 s).
- A session belongs to the station that sent its first message; anything else claiming its id
  is quarantined.
- Credentials and TLS come from the config file or VMF_MQTT__USERNAME / VMF_MQTT__PASSWORD /
  VMF_MQTT__TLS_CA (never from argv).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import sys
import time
from dataclasses import dataclass

from config.loader import ConfigError, load_settings
from feedback.clinic.intake import PahoIntake, Received
from feedback.clinic.metrics import LoggerMetrics
from feedback.clinic.migrations import MigrationError
from feedback.clinic.partitions import RETENTION_DEFAULT_DAYS, RETENTION_RANGE_DAYS
from feedback.clinic.receipt_link import Outgoing, ReceiptLink
from feedback.clinic.service import ingest_until_stored, run_until_signalled, service_main
from feedback.clinic.store import (
    ClinicStore,
    Delivery,
    Incoming,
    IngestResult,
)
from feedback.clinic.validation import LOGGED_LEAVES as LOGGED
from feedback.clinic.validation import MAX_PAYLOAD_BYTES
from feedback.outputs.broker_access import BrokerAccess, broker_access, describe
from feedback.outputs.receipts import Receipt, Resend, encode_receipt, encode_resend
from feedback.outputs.topics import TOPIC_ROOT

log = logging.getLogger("feedback.clinic.logger")

SESSION_EXPIRY_S = 7 * 24 * 3600  # how long the broker keeps queueing for a logger that is down
# Unacknowledged messages the broker may have in flight to one logger: a batch being stored,
# the next being checked (`run`) and those awaiting their receipts' PUBACK fit.
RECEIVE_MAXIMUM = 8000
# One transaction per batch: larger batches amortise the commit (an fsync on PostgreSQL) and
# the per-session work (watermark, receipt, live seconds' rows), but every message of a batch
# waits for the whole batch; 2,000 is about 80 ms of store work on a loaded 2-core machine. A
# batch is what is waiting, so only a backlog makes it large. 500 -> 1,000 cut the store's CPU
# per message by a quarter (PostgreSQL); 1,000 -> 2,000 by 5-15 % (noisy, loaded machine).
MAX_BATCH = 2000
# The broker holds QoS 1 to RECEIVE_MAXIMUM unacknowledged messages; QoS 0 (live snapshots,
# latest wins) has no such limit, and piled up while the database lagged (20k seen). Past this
# many queued, QoS 0 messages are dropped and counted; QoS 1 ones are always kept.
MAX_QUEUED = 2 * RECEIVE_MAXIMUM
# Mosquitto 2.0.11 ignores the receive maximum and sends a reconnected logger its whole backlog:
# past this many waiting, the intake stops reading the socket (161 MB with a 136k backlog
# before). Two batches: the writer always finds a full one while it resumes reading.
MAX_WAITING = 2 * MAX_BATCH
LOGGED_LEAVES = tuple(sorted(LOGGED))  # every leaf with a schema, cmd/estop too
RESEND_FIRST_S, RESEND_MAX_S = 1.0, 30.0  # spacing of resend requests for a session's hole
RECEIPT_WAIT_S = 10.0  # for the broker's PUBACK of the receipts, before publishing them again
ACKS_IN_FLIGHT = 4  # committed batches whose receipts may still await the broker's PUBACK


@dataclass(slots=True)
class LoggerStats:
    received: int = 0
    batches: int = 0
    connects: int = 0
    db_errors: int = 0  # connection faults of the database, retried
    ingest_failures: int = 0  # batches lost to an unforeseen error (logged with a traceback)
    receipts_sent: int = 0
    resend_requests: int = 0  # holes in a session's msg_ids the logger asked a station to fill
    dropped_qos0: int = 0  # live snapshots dropped while MAX_QUEUED were waiting
    queue_peak: int = 0  # the most messages ever waiting for the database
    totals: IngestResult | None = None


class ClinicLogger:
    def __init__(
        self,
        access: BrokerAccess,
        store: ClinicStore,
        *,
        clinic: str = "+",
        group: str = "vmf-loggers",
        instance: str = "1",
        metrics: LoggerMetrics | None = None,
    ) -> None:
        self.access = access
        self.store = store
        root = f"$share/{group}/{TOPIC_ROOT}/{clinic}"
        self.topics = [f"{root}/+/{leaf}" for leaf in LOGGED_LEAVES]
        self.topic = f"{root}/+/{{{','.join(LOGGED_LEAVES)}}}"  # as shown to people
        self._legacy_topic = f"{root}/#"  # what loggers before the stream subscribed to
        self.client_id = f"vmf-logger-{group}-{instance}"
        self.stats = LoggerStats(totals=IngestResult())
        self.metrics = metrics
        if metrics is not None:
            metrics.attach(self)
        self._asked: dict[str, tuple[float, float]] = {}  # session → (next request, spacing)
        self.connected = asyncio.Event()
        self.intake: PahoIntake | None = None
        self.receipts: ReceiptLink | None = None

    def queued(self) -> int:
        """Messages waiting for the database (for the soak test and the metrics)."""
        return self.intake.queued() if self.intake is not None else 0

    def new_intake(self) -> PahoIntake:
        loop = asyncio.get_running_loop()

        def ready() -> None:
            loop.call_soon_threadsafe(self._ready)

        def lost() -> None:
            loop.call_soon_threadsafe(self.connected.clear)

        return PahoIntake(
            self.access,
            self.client_id,
            self.topics,
            unsubscribe=[self._legacy_topic],
            receive_maximum=RECEIVE_MAXIMUM,
            session_expiry_s=SESSION_EXPIRY_S,
            max_queued=MAX_QUEUED,
            max_waiting=MAX_WAITING,
            on_ready=ready,
            on_lost=lost,
        )

    def _ready(self) -> None:
        self.stats.connects += 1
        self.connected.set()
        log.info("subscribed to %s on %s", self.topic, describe(self.access))

    async def run(self) -> None:
        """Subscribe, store, acknowledge; paho reconnects on its own; runs until cancelled.
        A batch is acknowledged once committed and its receipts confirmed by the broker; that
        wait (a round trip through a busy broker) overlaps the next batches' transactions, up
        to ACKS_IN_FLIGHT batches. The receipts have a connection of their own (ReceiptLink)."""
        receipts = self.receipts = ReceiptLink(self.access, f"{self.client_id}-receipts")
        receipts.start()
        intake = self.intake = self.new_intake()
        intake.start()
        acking: collections.deque[asyncio.Task[None]] = collections.deque()
        storing: tuple[asyncio.Task[list[Outgoing]], list[Received]] | None = None

        def ack_when_confirmed(sends: list[Outgoing], batch: list[Received]) -> None:
            acking.append(asyncio.create_task(
                asyncio.to_thread(self._confirm_and_ack, intake, receipts, sends, batch)
            ))  # fmt: skip

        try:
            while True:
                # While a batch is being stored, take only what is waiting (its ack should
                # not wait for the next message).
                batch = await asyncio.to_thread(intake.take, MAX_BATCH,
                                                0.5 if storing is None else 0.0)  # fmt: skip
                items: list[Incoming] = []
                if batch:
                    now = time.time()
                    items = [Incoming(m.topic, m.payload, now) for m in batch]
                    # Meanwhile the previous batch's statements and commit go on.
                    await asyncio.to_thread(self.store.check_ahead, items)
                if storing is not None:
                    task, stored = storing
                    # shielded: a stop meanwhile lets it commit, and `finally` acks it
                    ack_when_confirmed(await asyncio.shield(task), stored)
                    storing = None
                if batch:
                    storing = (asyncio.create_task(self._handle(intake, items)), batch)
                while acking and (len(acking) > ACKS_IN_FLIGHT or acking[0].done()):
                    await acking.popleft()
                self.stats.dropped_qos0 = intake.stats.dropped_qos0
                self.stats.queue_peak = intake.stats.queue_peak
        finally:
            # Stopping (not killed): what is stored gets its ack, or it would come again.
            if storing is not None:
                task, stored = storing
                await asyncio.wait([task], timeout=RECEIPT_WAIT_S)
                if task.done() and not task.cancelled() and task.exception() is None:
                    ack_when_confirmed(task.result(), stored)
            if acking:
                await asyncio.wait(acking, timeout=RECEIPT_WAIT_S)
            await asyncio.to_thread(receipts.stop)  # ends the waits that are left
            await asyncio.to_thread(intake.stop)

    async def _handle(self, intake: PahoIntake, items: list[Incoming]) -> list[Outgoing]:
        result = await self._ingest(items)
        sends = self._answer(result.deliveries)
        self.stats.received += len(items)
        self.stats.batches += 1
        assert self.stats.totals is not None
        self.stats.totals.add(result)
        for reason in result.reasons:
            log.warning("quarantined: %s", reason)
        if self.metrics is not None:
            self.metrics.batch(items, result, time.time(), intake.queued())
        return sends

    def _answer(self, deliveries: list[Delivery]) -> list[Outgoing]:
        """Receipts for what is now stored, and requests for the holes; confirmed by the broker
        before the batch is acknowledged, so that a broker lost meanwhile redelivers the batch
        and they go out again."""
        sends: list[Outgoing] = []
        now = time.monotonic()
        for d in deliveries:
            topic = f"{TOPIC_ROOT}/{d.clinic}/{d.station}/receipt"
            receipt = encode_receipt(Receipt(d.session, d.through, d.stored))
            sends.append((topic, receipt))
            self.stats.receipts_sent += 1
            if not d.missing:
                self._asked.pop(d.session, None)
                continue
            due, spacing = self._asked.get(d.session, (0.0, RESEND_FIRST_S / 2))
            if now < due:
                continue
            if len(self._asked) > 10_000:
                self._asked.clear()  # bounded; at worst a request goes out early
            spacing = min(RESEND_MAX_S, spacing * 2)
            self._asked[d.session] = (now + spacing, spacing)
            sends.append((topic, encode_resend(Resend(d.session, d.missing))))
            self.stats.resend_requests += 1
            log.info("session %s misses msg_ids %s; asked %s/%s", d.session, d.missing,
                     d.clinic, d.station)  # fmt: skip
        return sends

    @staticmethod
    def _confirm_and_ack(
        intake: PahoIntake, receipts: ReceiptLink, sends: list[Outgoing], batch: list[Received]
    ) -> None:
        generation = batch[-1].generation

        def ackable() -> bool:  # after a reconnect the broker redelivers the batch instead
            return intake.generation == generation

        if receipts.deliver(sends, ackable, RECEIPT_WAIT_S):
            intake.ack(batch)
        else:
            log.warning("receipts unconfirmed: the batch stays unacknowledged")

    async def _ingest(self, items: list[Incoming]) -> IngestResult:
        return await ingest_until_stored(self.store, items, self.stats)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m feedback.clinic.logger",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keep the bullets apart
    )
    p.add_argument("--broker", required=True, metavar="URL", help="mqtt://host:port or mqtts://")
    p.add_argument(
        "--db",
        default="clinic.sqlite3",
        metavar="URL",
        help="postgresql://user@host/db, sqlite:///PATH or a file path (default clinic.sqlite3)",
    )
    p.add_argument("--clinic", default="+", help="clinic id to log (default: all)")
    p.add_argument("--group", default="vmf-loggers", help="shared subscription group")
    p.add_argument("--instance", default="1", help="this instance's stable name in the group")
    p.add_argument("--config", metavar="FILE.toml", help="settings file ([mqtt] credentials, TLS)")
    p.add_argument("--max-payload", type=int, default=MAX_PAYLOAD_BYTES, metavar="BYTES")
    p.add_argument(
        "--retention-days", type=int, default=RETENTION_DEFAULT_DAYS, metavar="DAYS",
        help=f"live metrics, events and quarantine older than this are dropped (default "
        f"{RETENTION_DEFAULT_DAYS}, {RETENTION_RANGE_DAYS[0]}–{RETENTION_RANGE_DAYS[1]}; "
        "docs/storage.md)",
    )  # fmt: skip
    p.add_argument(
        "--metrics-port", type=int, metavar="PORT",
        help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics (docs/operations.md)",
    )  # fmt: skip
    p.add_argument("--metrics-addr", default="127.0.0.1", metavar="ADDR",
                   help="address for --metrics-port (0.0.0.0: every interface)")  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true")
    return p


async def amain(args: argparse.Namespace) -> None:
    settings = load_settings(args.config)
    access = broker_access(settings, args.broker)
    store = ClinicStore(
        args.db, max_payload_bytes=args.max_payload, retention_days=args.retention_days
    )
    metrics = None
    if args.metrics_port is not None:
        metrics = LoggerMetrics()
        metrics.serve(args.metrics_port, args.metrics_addr)
    logger = ClinicLogger(
        access, store, clinic=args.clinic, group=args.group, instance=args.instance,
        metrics=metrics,
    )  # fmt: skip
    print(f"logging {logger.topic} from {describe(access)} into {args.db}", file=sys.stderr)
    await run_until_signalled(logger.run())
    logger.store.close()
    t = logger.stats.totals
    assert t is not None
    print(
        f"received {logger.stats.received}: stored {t.stored}, duplicates dropped "
        f"{t.duplicates}, quarantined {t.invalid}, receipts {logger.stats.receipts_sent}, "
        f"resend requests {logger.stats.resend_requests}",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return service_main("clinic logger", amain, args, (ConfigError, ValueError, MigrationError))


if __name__ == "__main__":
    sys.exit(main())
