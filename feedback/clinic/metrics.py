"""Prometheus metrics of the clinic logger (`--metrics-port`), documented in docs/operations.md.

Counters that the logger and its intake already keep (received, connects, dropped...) are read
when scraped (a collector), so the hot path pays nothing for them; what needs a distribution
(batch size, lag) is observed once per batch. Each logger has its own registry: two in one
process (the tests) do not mix.
"""

from __future__ import annotations

import bisect
import collections
import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from feedback.clinic.logger import ClinicLogger
    from feedback.clinic.nats_logger import NatsLogger
    from feedback.clinic.store import Incoming, IngestResult

# Quarantine reasons (free text, quoting the message) → a small fixed set of labels.
_REASONS = (
    ("size", re.compile(r"^payload of \d+ bytes exceeds")),
    ("depth", re.compile(r"^JSON nested deeper")),
    ("json", re.compile(r"^not JSON|^payload is ")),
    ("type", re.compile(r"^not a JSON object|^unknown message type")),
    ("topic", re.compile(r"^topic |^a '.*' message belongs on|^\.\.\./")),
    ("schema", re.compile(r"^schema ")),
    ("clinic", re.compile(r"^station .* belongs to clinic")),
    ("owner", re.compile(r"^session owned by another station")),
    ("replay", re.compile(r"^duplicate ")),
    ("database", re.compile(r"^database refused it")),
    ("internal", re.compile(r"^could not be checked")),
)
# `"t": <seconds>` of the envelope (it comes before any nested object in every v1 message).
_T = re.compile(rb'"t":\s*([0-9]+(?:\.[0-9]+)?)')
LAG_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000)  # to logger.MAX_BATCH


def reason_kind(reason: str) -> str:
    for kind, pattern in _REASONS:
        if pattern.search(reason):
            return kind
    return "other"


class LoggerMetrics(Collector):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.logger: ClinicLogger | None = None
        self.quarantined: collections.Counter[str] = collections.Counter()
        self.batch_size = Histogram(
            "vmf_logger_batch_size", "Messages per committed batch (one transaction)",
            buckets=BATCH_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.lag = CountingHistogram(
            "vmf_logger_lag_seconds",
            "From a message's envelope time `t` (the station's clock) to its commit",
            LAG_BUCKETS,
        )
        self.last_lag = Gauge(
            "vmf_logger_last_lag_seconds", "Lag of the newest message of the last batch",
            registry=self.registry,
        )  # fmt: skip
        self.registry.register(self)

    def attach(self, logger: ClinicLogger) -> None:
        self.logger = logger

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    # called by the logger

    def batch(self, items: list[Incoming], result: IngestResult, committed: float,
              queued: int) -> None:  # fmt: skip
        self.batch_size.observe(len(items))
        for reason in result.reasons:
            self.quarantined[reason_kind(reason)] += 1
        lags = [committed - float(m.group(1)) for item in items
                if (m := _T.search(item.payload, 0, 200)) is not None]  # fmt: skip
        if lags:
            self.lag.observe_many(lags)
            self.last_lag.set(lags[-1])

    # scraped

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        lg = self.logger
        if lg is None:
            return
        s, t = lg.stats, lg.stats.totals
        intake = lg.intake.stats if lg.intake is not None else None

        yield from self._common(s.received, s.batches, s, t)
        if intake is not None:
            yield _counter("vmf_logger_dropped_qos0", "Live snapshots dropped (queue full)",
                          intake.dropped_qos0)  # fmt: skip
            yield _counter("vmf_logger_stale_acks", "Stored after a reconnect, left unacked",
                          intake.stale_acks)  # fmt: skip
            yield _counter("vmf_logger_read_pauses", "Times reading stopped: the queue was full",
                          intake.read_pauses)  # fmt: skip
        yield GaugeMetricFamily("vmf_logger_queue", "Messages waiting for the database",
                                value=lg.queued())  # fmt: skip
        yield GaugeMetricFamily("vmf_logger_queue_peak", "Most messages ever waiting",
                                value=s.queue_peak)  # fmt: skip

    def _common(
        self, received: int, batches: int, s: _LoggerCounts, t: IngestResult | None
    ) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        """The families both loggers have, under the same names (one dashboard for both)."""
        yield self.lag.family()
        yield _counter("vmf_logger_received", "Messages received and handled", received)
        yield _counter("vmf_logger_batches", "Batches committed", batches)
        yield _outcomes(t)
        yield self._quarantined()
        yield _counter("vmf_logger_connects", "Connections to the broker or cluster", s.connects)
        yield _counter("vmf_logger_reconnects", "Connections after the first",
                       max(0, s.connects - 1))  # fmt: skip
        yield _counter("vmf_logger_db_errors", "Database connection faults (retried)",
                       s.db_errors)  # fmt: skip
        yield _counter("vmf_logger_ingest_failures", "Batches lost to an unforeseen error",
                       s.ingest_failures)  # fmt: skip
        yield _counter("vmf_logger_receipts", "Receipts sent to stations", s.receipts_sent)
        yield _counter("vmf_logger_resend_requests", "Holes a station was asked to fill",
                       s.resend_requests)  # fmt: skip

    def _quarantined(self) -> CounterMetricFamily:
        q = CounterMetricFamily(
            "vmf_logger_quarantined", "Quarantined messages by reason", labels=["reason"]
        )
        for kind, _ in (*_REASONS, ("other", None)):
            q.add_metric([kind], self.quarantined.get(kind, 0))
        return q


class CountingHistogram:
    """A histogram observed a batch at a time: prometheus_client's `observe` takes a lock and
    walks the buckets for each value (~1.2 us, every message the logger stores), here a bisect
    and an addition. Negative values count as 0."""

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...]) -> None:
        self.name, self.doc, self.bounds = name, doc, buckets
        self._counts = [0] * (len(buckets) + 1)  # the last: above every bound (+Inf)
        self._sum = 0.0
        self._lock = threading.Lock()  # observed by the logger, read by the scrape's thread

    def observe_many(self, values: list[float]) -> None:
        where = bisect.bisect_left
        bounds, counts = self.bounds, self._counts
        clipped = [v if v > 0.0 else 0.0 for v in values]
        with self._lock:
            for v in clipped:
                counts[where(bounds, v)] += 1  # le: a value on a bound counts in its bucket
            self._sum += sum(clipped)

    def family(self) -> HistogramMetricFamily:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, n in zip((*map(str, self.bounds), "+Inf"), counts, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        return HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=total)


class _LoggerCounts(Protocol):
    connects: int
    db_errors: int
    ingest_failures: int
    receipts_sent: int
    resend_requests: int


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _outcomes(t: IngestResult | None) -> CounterMetricFamily:
    outcome = CounterMetricFamily(
        "vmf_logger_messages", "Handled messages by outcome", labels=["outcome"]
    )
    if t is not None:
        outcome.add_metric(["stored"], t.stored)
        outcome.add_metric(["duplicate"], t.duplicates)
        outcome.add_metric(["quarantined"], t.invalid)
        outcome.add_metric(["unstorable"], t.unstorable)
    return outcome


class NatsLoggerMetrics(LoggerMetrics):
    """The NATS logger's page: the same names where the meaning is the same (so one dashboard
    serves both tiers), plus what only a JetStream consumer has (held, fetch errors, rebinds)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.nats: NatsLogger | None = None
        super().__init__(registry)

    def attach_nats(self, logger: NatsLogger) -> None:
        self.nats = logger

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        lg = self.nats
        if lg is None:
            return
        s = lg.stats

        yield from self._common(s.received, s.stored_batches, s, s.totals)
        yield _counter("vmf_logger_held", "Given back by the order gate to wait for a predecessor",
                      s.held)  # fmt: skip
        yield _counter("vmf_logger_fetch_errors", "Fetches the cluster did not answer",
                      s.fetch_errors)  # fmt: skip
        yield _counter("vmf_logger_rebinds", "Times the durable consumer was bound again",
                      s.rebinds)  # fmt: skip
