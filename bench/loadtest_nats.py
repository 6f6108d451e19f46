"""`make loadtest --broker nats`: the drain through the three-node NATS JetStream cluster of
bench/bench_nats.py into the NATS logger, reported as the Mosquitto path reports it (rate,
peer_rate, ratio_to_peer, lost, duplicated, per_logger_stored, idle_loggers, peak RSS).

The stations (bench_nats's cue/rep mix over MQTT 3.1.1) publish everything before any reader
starts; a bare nats-py pull consumer drains its own copy (the peer), then the loggers drain the
stream, each with a Prometheus port of its own, scraped before they stop: how many messages
each instance stored comes from the same counter as on the Mosquitto path. `partitions` > 0:
the servers split the stream by station (nats_partitions.py), the instances share the
partitions by lease, and a second peer reads every partition through the logger's pull feeds
(an ack per message, as the logger's partition consumers ack): the ceiling for that layout.

Counts are of distinct (session, msg_id) (bench_nats.ledger_outcome): published = acknowledged
by the broker, lost = published and not in the ledger, duplicated = ledger rows beyond one per
key + quarantined. A station resends what had no PUBACK within PUBACK_TIMEOUT_S, so the stream
may hold copies (`stream.copies`, the broker's at-least-once); the peers read them all, and the
logger drops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

from bench import bench_nats
from bench.loadtest import free_port, parse_metrics, per_logger
from feedback.clinic.nats_cluster import NatsCluster, nats_server_binary

DURABLE = "lt"


def start_loggers(
    cluster: NatsCluster, db_url: str, instances: int
) -> list[tuple[subprocess.Popen[bytes], int]]:
    out = []
    for i in range(instances):
        port = free_port()
        # (--members: started together, they split the partitions at once; a drain of a few
        # hundred messages is over before a late one could be given its share)
        extra = ("--metrics-port", str(port), "--members", str(instances))
        proc = bench_nats.spawn_logger(cluster, db_url, DURABLE, f"{DURABLE}-{i + 1}", extra)
        out.append((proc, port))
    return out


def scrape(port: int) -> dict[str, float]:
    """The instance's metrics; empty if it does not answer (dead, or not serving yet): its
    count then shows as 0, which `idle_loggers` flags."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return parse_metrics(r.read().decode())
    except OSError:
        return {}


async def drain(
    cluster: NatsCluster,
    db_url: str,
    instances: int,
    published: AbstractSet[bench_nats.Key],
    timeout_s: float,
) -> dict[str, Any]:
    """The loggers until every published message is in the ledger (or timeout), then what the
    database and each instance's counters say."""
    expected = len(published)
    loggers = start_loggers(cluster, db_url, instances)
    start = time.perf_counter()
    servers0 = bench_nats.servers_cpu_s(cluster)
    done = 0.0
    cpu_samples: list[tuple[float, float]] = []  # (stored so far, the loggers' CPU so far)
    try:
        while done < expected and time.perf_counter() - start < timeout_s:
            await asyncio.sleep(0.3)
            done = bench_nats._count(db_url, "SELECT count(*) FROM messages")
            cpu_samples.append((done, sum(bench_nats._cpu_s(p.pid) for p, _ in loggers)))
        await asyncio.sleep(0.5)  # the last batch's counters
        samples = [scrape(port) for _, port in loggers]
        peaks = [bench_nats._peak_rss_mb(p.pid) for p, _ in loggers]
        cpu = bench_nats.drain_cpu_s(cpu_samples, expected)
        servers = bench_nats.servers_cpu_s(cluster) - servers0
    finally:
        for p, _ in loggers:
            p.terminate()
        for p, _ in loggers:
            p.wait(20)
    per, idle = per_logger(samples)
    ledger = bench_nats.ledger_counts(db_url, published)
    stored = ledger["stored"]
    return {
        **ledger,
        "per_logger_stored": per,
        "idle_loggers": idle,
        "peak_rss_mb": peaks,
        # Per message: what a process costs however busy the machine is; the loggers' share
        # over the drain only (bench_nats.drain_cpu_s), the servers' over the whole run.
        "cpu_us_per_msg": {
            "loggers": round(cpu / max(stored, 1) * 1e6, 1),
            "nats_servers": round(servers / max(stored, 1) * 1e6, 1),
        },
    }


async def run_async(
    stations: int,
    per_station: int,
    store: str,
    instances: int,
    partitions: int,
    timeout_s: float,
) -> dict[str, Any]:
    binary = nats_server_binary()
    if binary is None:
        raise RuntimeError("nats-server is not installed: apt-get install -y nats-server")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        async with bench_nats.cluster_with_stream(binary, work, partitions) as cluster:
            out["publish"], keys = await bench_nats.publish_all(cluster, per_station, stations)
            out["stream"] = await bench_nats.stream_report(cluster, len(keys))
            n = out["stream"]["messages"]  # the peers read every copy
            out["peer"] = await bench_nats.bare_peer(cluster, n)
            if partitions:
                out["partitions_peer"] = await bench_nats.bare_partitions(
                    cluster, n, "ltpeer", ack_all=False
                )
            with contextlib.ExitStack() as stack:
                url = str(work / "clinic.db")
                if store != "sqlite":
                    pg, skipped = stack.enter_context(bench_nats.pg_schema())
                    if pg is None:
                        raise RuntimeError(skipped)
                    url = pg
                out["logger"] = await drain(cluster, url, instances, keys, timeout_s)
    return out


def run(
    stations: int,
    per_station: int,
    store: str,
    loggers: int,
    partitions: int,
    timeout_s: float,
) -> dict[str, Any]:
    r = asyncio.run(run_async(stations, per_station, store, loggers, partitions, timeout_s))
    lg, published = r["logger"], r["publish"]["published"]
    peer_rate = r["peer"]["msgs_per_s"]
    result: dict[str, Any] = {
        "broker": "nats", "mode": "drain", "stations": stations,
        "messages_per_station": per_station, "store": store, "loggers": loggers,
        "partitions": partitions, "published": published, "logged_published": published,
        "sends": r["publish"]["sends"], "reconnects": r["publish"]["reconnects"],
        "stream": r["stream"],
        "offered_rate": r["publish"]["publish_msgs_per_s"], **lg,
        "peer": r["peer"], "peer_rate": peer_rate,
    }  # fmt: skip
    if peer_rate and lg["rate"] is not None:  # no rate for a drain stored in one batch
        result["ratio_to_peer"] = round(lg["rate"] / peer_rate, 3)
    if partitions:
        result["partitions_peer"] = r["partitions_peer"]
        rate = r["partitions_peer"]["msgs_per_s"]
        result["partitions_peer_rate"] = rate
        if rate and lg["rate"] is not None:
            result["ratio_to_partitions_peer"] = round(lg["rate"] / rate, 3)
    return result
