"""Prometheus metrics of a station (`run_feedback.py --metrics-port N`), docs/operations.md.

Read from the MQTT publisher when scraped (a collector): its counters (`PublisherStats`, one
`vmf_station_<name>_total` each), the outbox backlog and whether it is connected. Nothing is
added to the publishing path; the publisher need not know it is watched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class Watched(Protocol):
    """What is read of feedback.outputs.mqtt_publisher.MqttPublisher."""

    @property
    def stats(self) -> Any: ...  # a dataclass of int counters
    @property
    def backlog(self) -> int: ...
    @property
    def connected(self) -> bool: ...


class StationMetrics(Collector):
    def __init__(
        self, publisher: Watched | None, registry: CollectorRegistry | None = None
    ) -> None:
        self.publisher = publisher
        self.registry = registry or CollectorRegistry()
        self.registry.register(self)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        p = self.publisher  # None: a station that publishes nothing (an offline replay)
        if p is not None:
            yield from _counters(p.stats)
        yield GaugeMetricFamily(
            "vmf_station_outbox_backlog",
            "Session messages in the outbox not yet confirmed (receipt or PUBACK)",
            value=0 if p is None else p.backlog,
        )
        yield GaugeMetricFamily(
            "vmf_station_connected",
            "1 while connected to the broker",
            value=0 if p is None else int(p.connected),
        )


def _counters(stats: Any) -> Iterator[CounterMetricFamily]:
    for f in dataclasses.fields(stats):
        value = getattr(stats, f.name)
        if isinstance(value, int):
            yield CounterMetricFamily(
                f"vmf_station_{f.name}", f"MQTT publisher: {f.name.replace('_', ' ')}",
                value=value,
            )  # fmt: skip
    yield CounterMetricFamily(
        "vmf_station_reconnects", "Connections to the broker after the first",
        value=max(0, int(getattr(stats, "connects", 0)) - 1),
    )  # fmt: skip


def serve(publisher: Watched | None, port: int, addr: str = "127.0.0.1") -> Callable[[], None]:
    """Serves http://addr:port/metrics in a daemon thread; returns what stops it."""
    metrics = StationMetrics(publisher)
    server, thread = start_http_server(port, addr=addr, registry=metrics.registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
