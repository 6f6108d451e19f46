"""Prometheus metrics, scraped over HTTP as Prometheus would: the logger's (ingest, batches, lag,
quarantine by reason) and the station's (published, outbox backlog, reconnects) move with what
happens. Negative controls: before anything happens they read zero; an unknown quarantine
reason is `other`, not silently one of the named ones."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import urllib.request
from pathlib import Path
from typing import Any

import aiomqtt
from rich.console import Console

from feedback import app
from feedback.broker import free_port
from feedback.clinic.logger import ClinicLogger
from feedback.clinic.metrics import CountingHistogram, LoggerMetrics, reason_kind
from feedback.clinic.store import ClinicStore
from feedback.metrics import StationMetrics
from feedback.outputs.broker_access import BrokerAccess
from feedback.outputs.topics import MessageNumberer, Topics, encode
from tests.clinic.conftest import ClinicBroker, station_settings, wait_until


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def test_logger_metrics_move_with_the_messages(
    clinic_broker: ClinicBroker, tmp_path: Path
) -> None:
    port = free_port()
    metrics = LoggerMetrics()
    metrics.serve(port)
    access = BrokerAccess.from_url(clinic_broker.url)
    logger = ClinicLogger(
        access, ClinicStore(str(tmp_path / "c.db")), group="m", instance="1", metrics=metrics
    )
    task = asyncio.create_task(logger.run())
    try:
        await asyncio.wait_for(logger.connected.wait(), 10)
        before = scrape(port)
        assert before["vmf_logger_received_total"] == 0
        assert before['vmf_logger_quarantined_total{reason="schema"}'] == 0
        assert before["vmf_logger_connects_total"] == 1
        topics, n = Topics("clinic-demo", "st-m"), MessageNumberer("S-metrics")
        async with aiomqtt.Client("127.0.0.1", clinic_broker.port) as pub:
            for i in range(20):
                body = n.envelope("gap", {"from_index": i, "missing": 1})
                await pub.publish(topics.event, encode(body), qos=1)
            bad = n.envelope("gap", {"from_index": -5, "missing": 1})  # schema: minimum 0
            await pub.publish(topics.event, encode(bad), qos=1)
            await pub.publish(topics.event, b"not json", qos=1)
        await wait_until(lambda: logger.stats.received == 22, 10, "22 messages")
        after = scrape(port)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        logger.store.close()
    assert after["vmf_logger_received_total"] == 22
    assert after['vmf_logger_messages_total{outcome="stored"}'] == 20
    assert after['vmf_logger_quarantined_total{reason="schema"}'] == 1
    assert after['vmf_logger_quarantined_total{reason="json"}'] == 1
    assert after["vmf_logger_batch_size_count"] >= 1
    assert after["vmf_logger_batch_size_sum"] == 22
    assert after["vmf_logger_lag_seconds_count"] == 21  # every message with an envelope `t`
    assert 0 <= after["vmf_logger_last_lag_seconds"] < 10
    assert after["vmf_logger_receipts_total"] >= 1
    assert after["vmf_logger_read_pauses_total"] == 0  # 22 messages never fill the queue


def test_every_quarantine_reason_has_its_label() -> None:
    assert reason_kind("schema gap: from_index: -5 is less than the minimum of 0") == "schema"
    assert reason_kind("not JSON: Expecting value") == "json"
    assert reason_kind("payload of 70000 bytes exceeds the limit of 65536") == "size"
    assert reason_kind("session owned by another station (c/s)") == "owner"
    assert reason_kind("duplicate (S-1, 3): different content (replay or forgery)") == "replay"
    assert reason_kind("station st-1 belongs to clinic c1") == "clinic"
    assert reason_kind("database refused it: DataError") == "database"
    assert reason_kind("something nobody foresaw") == "other"  # the negative control


async def test_station_metrics_over_http_during_a_session(
    clinic_broker: ClinicBroker, tmp_path: Path
) -> None:
    """run_feedback.py --metrics-port: a simulated session's publisher, scraped while it runs."""
    port = free_port()
    settings = station_settings("st-metrics", **{"mqtt.receipts": False})
    options = app.RunOptions(
        device="sim", duration_s=None, db=str(tmp_path / "st.db"), broker=clinic_broker.url,
        report=None, live_view=False, metrics_port=port,
    )  # fmt: skip
    seen: list[dict[str, float]] = []

    async def watch() -> None:
        while True:
            with contextlib.suppress(OSError):
                seen.append(await asyncio.to_thread(scrape, port))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    # A subscriber, so that the station's messages go out (it holds them while nobody listens).
    async with aiomqtt.Client("127.0.0.1", clinic_broker.port) as sub:
        await sub.subscribe("vmf/#", qos=1)
        with open(os.devnull, "w") as devnull:
            await app.run(settings, options, console=Console(file=devnull))
    watcher.cancel()
    assert seen, "the endpoint never answered"
    first, last = seen[0], seen[-1]
    assert last["vmf_station_published_total"] > first["vmf_station_published_total"]
    assert last["vmf_station_sent_total"] >= last["vmf_station_published_total"]
    assert last["vmf_station_live_published_total"] > 0
    assert last["vmf_station_connects_total"] >= 1
    assert last["vmf_station_reconnects_total"] == 0
    assert "vmf_station_outbox_backlog" in last and "vmf_station_live_dropped_total" in last
    assert max(s["vmf_station_connected"] for s in seen) == 1
    # the server stops with the session
    with contextlib.suppress(OSError):
        scrape(port)
        raise AssertionError("metrics still served after the session")


def test_an_offline_station_serves_metrics_without_a_publisher() -> None:
    """A headless replay builds no publisher: the endpoint says nothing owed, not connected."""
    offline = {m.name: m.samples[0].value for m in StationMetrics(None).collect()}
    assert offline == {"vmf_station_outbox_backlog": 0, "vmf_station_connected": 0}


def histogram_lines(values: list[float], counting: type[CountingHistogram]) -> dict[str, float]:
    """The text Prometheus reads of `values` observed one at a time by prometheus_client and in
    one batch by `counting`: (theirs, ours)."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    buckets = (0.01, 0.1, 1.0)
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("lag", "doc", buckets=buckets, registry=theirs)
    for v in values:
        reference.observe(max(0.0, v))
    batched = counting("lag", "doc", buckets)

    class Family:
        def collect(self) -> Any:
            yield batched.family()

    ours.register(Family())  # type: ignore[arg-type]
    batched.observe_many(values)

    def lines(registry: CollectorRegistry) -> dict[str, float]:
        text = generate_latest(registry).decode()
        return {
            name: float(value)
            for name, _, value in (line.rpartition(" ") for line in text.splitlines())
            if name.startswith("lag_") and "_created" not in name
        }

    return lines(theirs) | {f"ours {k}": v for k, v in lines(ours).items()}


LAG_VALUES = [-0.5, 0.0, 0.005, 0.01, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 30.0]  # on bounds too


def test_the_batched_lag_histogram_counts_as_prometheus_client_does() -> None:
    got = histogram_lines(LAG_VALUES, CountingHistogram)
    theirs = {k: v for k, v in got.items() if not k.startswith("ours ")}
    ours = {k.removeprefix("ours "): v for k, v in got.items() if k.startswith("ours ")}
    assert ours == theirs
    assert theirs['lag_bucket{le="0.01"}'] == 5  # a value on a bound counts in its bucket


def test_negative_control_a_histogram_that_puts_bound_values_above() -> None:
    """bisect_right puts a value equal to a bound in the next bucket: the comparison sees it."""

    class Above(CountingHistogram):
        def observe_many(self, values: list[float]) -> None:
            for v in values:
                self._counts[bisect.bisect_right(self.bounds, max(0.0, v))] += 1
            self._sum += sum(max(0.0, v) for v in values)

    got = histogram_lines(LAG_VALUES, Above)
    theirs = {k: v for k, v in got.items() if not k.startswith("ours ")}
    ours = {k.removeprefix("ours "): v for k, v in got.items() if k.startswith("ours ")}
    assert ours != theirs


def test_the_batch_size_histogram_reaches_the_largest_batch() -> None:
    # Batches above the last bucket land only in +Inf: the largest batch must have a bucket.
    from feedback.clinic.logger import MAX_BATCH
    from feedback.clinic.metrics import BATCH_BUCKETS

    assert BATCH_BUCKETS[-1] >= MAX_BATCH
