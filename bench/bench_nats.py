"""Clinic logging through the NATS cluster: logger ingest rate (one instance and two in one
durable consumer group) against a bare nats-py pull consumer in the same run.

A three-node cluster (JetStream, MQTT gateway) on loopback; STATIONS simulated stations (aiomqtt
clients spread over the nodes' MQTT ports, MQTT 3.1.1) publish N session messages each at QoS 1
into the replicated stream (R3) before any reader starts. Then each reader drains the whole
stream through a consumer of its own: the bare peer (fetch 500, ack each, nothing else; with
--partitions also one reader of every partition through the logger's pull feeds, its
consumers acking each message or, AckPolicy.ALL, the last of each batch, each twice in turn),
the logger (`python -m feedback.clinic.nats_logger`, own process) into a fresh SQLite file, and
into a fresh PostgreSQL schema with one and with two instances; with --partitions N the servers
split the stream by station (nats_partitions.py) and the instances share the partitions by
lease (nats_lease.py), one reader per partition, acking each message (SQLite with one instance
also with `--acks all`, AckPolicy.ALL: nats_ackall.py). The logger's rate counts stored
messages over the span of their batch times, leaving interpreter start-up out. Counts are of
distinct (session, msg_id): published = acknowledged by the broker, lost = published and not in
the ledger, duplicated = ledger rows beyond one per key + quarantined; a station resends after
PUBACK_TIMEOUT_S without a PUBACK, so the stream may hold copies, reported apart (stream.copies).

  python -m bench.bench_nats [--per-station N] [--partitions N]
      (JSON on stdout and bench/results/nats.json, or nats_partitioned.json)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import aiomqtt
import nats.errors

from bench.bench_clinic import _station_message
from feedback.clinic import nats_connect, nats_partitions
from feedback.clinic.db import connect
from feedback.clinic.nats_cluster import NatsCluster, nats_server_binary
from feedback.clinic.nats_logger import STREAM, consumer_config, ensure_stream
from feedback.clinic.nats_pull import PullFeed
from feedback.outputs.mqtt_publisher import PUBACK_TIMEOUT_S
from feedback.outputs.topics import MessageNumberer, Topics, encode

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("VMF_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
STATIONS = 50


Key = tuple[str, int]  # (session, msg_id): what the ledger keeps once
ATTEMPTS = 20  # connections per station (each retry waits a second): a busy cluster refuses some


async def publish_all(
    cluster: NatsCluster, per_station: int, stations: int = STATIONS
) -> tuple[dict[str, Any], frozenset[Key]]:
    """Every station's messages, each until its PUBACK came: the summary (distinct messages
    published, publishes sent including resends, connections lost or refused, rate) and the
    published keys. A resend whose first copy was stored leaves two in the stream (the
    broker's at-least-once); the keys, not the stream, are what the ledger must hold once
    each."""
    keys: set[Key] = set()
    sends = 0
    reconnects: Counter[str] = Counter()  # why a connection was lost or refused

    async def station(k: int) -> None:
        nonlocal sends
        node = cluster.nodes[k % len(cluster.nodes)]
        topics = Topics("bench", f"st-{k:03d}")
        numberer = MessageNumberer(f"S-nbench-{k:03d}-{secrets.token_hex(2)}")
        messages = [_station_message(numberer, i) for i in range(per_station)]
        sent = 0
        for attempt in range(ATTEMPTS):
            try:
                # nats-server 2.9 closes an MQTT connection whose JetStream store failed or
                # timed out, or that came while the gateway was not ready; aiomqtt's waits for
                # a PUBACK and for a CONNACK are not ended by a disconnection (its on_disconnect
                # ignores one before the CONNACK), only by `timeout`: 60 s stalled the publish
                # phase of most loaded runs (the timeouts seen were CONNACK waits: no resend).
                # The station's publisher gives a PUBACK PUBACK_TIMEOUT_S before it reconnects
                # and sends again; so does the bench, for both waits.
                async with aiomqtt.Client(
                    "127.0.0.1", node.mqtt_port, identifier=f"nb-{k}", timeout=PUBACK_TIMEOUT_S
                ) as c:
                    while sent < per_station:
                        leaf, body = messages[sent]
                        sends += 1
                        await c.publish(f"{topics.base}/{leaf}", encode(body), qos=1)
                        keys.add((body["session"], body["msg_id"]))
                        sent += 1
                return
            except aiomqtt.MqttError as exc:
                # The gateway refuses connections while it creates its own streams (the first
                # clients after a cluster's start, on a loaded machine): connect again. A
                # message whose PUBACK was lost is sent again; the logger drops the copy.
                if attempt == ATTEMPTS - 1:
                    raise
                reconnects[str(exc)] += 1
                await asyncio.sleep(1.0)

    t0 = time.perf_counter()
    await asyncio.gather(*(station(k) for k in range(stations)))
    elapsed = time.perf_counter() - t0
    summary = {
        "published": len(keys),
        "sends": sends,
        "reconnects": dict(reconnects),
        "publish_msgs_per_s": round(len(keys) / elapsed),
    }
    return summary, frozenset(keys)


async def stream_report(cluster: NatsCluster, published: int) -> dict[str, int]:
    """Messages in the stream, copies from resends included (what a reader of it receives),
    and the copies: the broker's at-least-once, reported apart from the ledger's counts."""
    nc = await nats_connect.connect(cluster.logger_urls)
    try:
        info = await nc.jetstream(timeout=10.0).stream_info(stream_of(cluster))
    finally:
        await nc.close()
    messages = int(info.state.messages)
    return {"messages": messages, "copies": messages - published}


def stream_of(cluster: NatsCluster) -> str:
    return nats_partitions.STREAM if cluster.partitions else STREAM


@contextlib.asynccontextmanager
async def cluster_with_stream(
    binary: str, work: Path, partitions: int
) -> AsyncIterator[NatsCluster]:
    """A started three-node cluster with the (partitioned) stream, stopped on exit."""
    cluster = NatsCluster.create(binary, work, partitions=partitions)
    cluster.start()
    try:
        await cluster.ready()
        nc = await nats_connect.connect(cluster.logger_urls)
        await ensure_stream(nc.jetstream(timeout=10.0), stream_of(cluster),
                            partitioned=bool(partitions))  # fmt: skip
        await nc.close()
        yield cluster
    finally:
        cluster.stop()


async def bare_peer(cluster: NatsCluster, expected: int) -> dict[str, Any]:
    """A pull consumer of its own (the whole stream) that only acknowledges: the ceiling for
    any reader."""
    nc = await nats_connect.connect(cluster.logger_urls)
    try:
        js = nc.jetstream()
        await js.add_consumer(stream_of(cluster), consumer_config("bench-peer", 30.0))
        sub = await js.pull_subscribe_bind("bench-peer", stream_of(cluster))
        got, t0 = 0, time.perf_counter()
        while got < expected:
            try:
                msgs = await sub.fetch(500, timeout=2.0)
            except nats.errors.TimeoutError:
                break
            for m in msgs:
                await m.ack()
            got += len(msgs)
        elapsed = time.perf_counter() - t0
    finally:
        await nc.close()
    return {"received": got, "msgs_per_s": round(got / elapsed)}


async def bare_partitions(
    cluster: NatsCluster, expected: int, group: str, ack_all: bool
) -> dict[str, Any]:
    """One reader of every partition through the logger's own pull feeds (nats_pull.py,
    batch 500, 2 ahead), storing nothing: the ceiling for the partitioned logger, with the
    partitions' consumers acking each message (EXPLICIT) or the last of each batch (ALL)."""
    nc = await nats_connect.connect(cluster.logger_urls)
    try:
        js = nc.jetstream(timeout=10.0)
        feeds = []
        for k in range(cluster.partitions):
            durable = nats_partitions.durable_name(group, k)
            config = consumer_config(durable, 30.0, nats_partitions.filter_subject(k),
                                     ack_all=ack_all)  # fmt: skip
            await js.add_consumer(nats_partitions.STREAM, config)
            feed = PullFeed(nc, nats_partitions.STREAM, durable, batch=500, ahead=2)
            await feed.start()
            feeds.append(feed)
        got, idle, t0 = 0, 0, time.perf_counter()
        cpu0, servers0 = time.process_time(), servers_cpu_s(cluster)
        while got < expected and idle < 40:
            before = got
            for feed in feeds:
                msgs = await feed.take(0.0)
                got += len(msgs)
                if msgs and ack_all:
                    await msgs[-1].ack()
                else:
                    for m in msgs:
                        await m.ack()
            if got == before:
                idle += 1
                await asyncio.sleep(0.05)
            else:
                idle = 0
        elapsed = time.perf_counter() - t0 - (0.05 * idle)
        await nc.flush()
        cpu, servers = time.process_time() - cpu0, servers_cpu_s(cluster) - servers0
    finally:
        await nc.close()
    return {
        "received": got,
        "msgs_per_s": round(got / elapsed),
        "reader_cpu_us_per_msg": round(cpu / max(got, 1) * 1e6, 1),
        "servers_cpu_us_per_msg": round(servers / max(got, 1) * 1e6, 1),
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_s() -> float:
    """CPU of every PostgreSQL process on the machine (the loggers' backends among them; the
    other users of the server too, so read it next to a peer of the same run)."""
    total = 0.0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if (d / "comm").read_text().strip() in ("postgres", "postmaster"):
                    total += _cpu_s(int(d.name))
    return total


def servers_cpu_s(cluster: NatsCluster) -> float:
    """CPU the three nodes have used: per message, the servers' cost of a reader, which
    the other helpers' load on the machine changes much less than a rate."""
    return sum(_cpu_s(n.proc.pid) for n in cluster.nodes if n.proc is not None)


def drain_cpu_s(samples: list[tuple[float, float]], expected: int) -> float:
    """The loggers' CPU seconds over the drain only, from (stored so far, CPU so far) samples
    taken every poll: from the last sample with nothing stored to the first with everything
    (or the last one). Imports, connects and the wait for leases (about 1 s of CPU per
    instance) come before the first store, and would weigh more the shorter the drain."""
    if not samples:
        return 0.0
    before = [cpu for stored, cpu in samples if stored == 0]
    cpu0 = before[-1] if before else 0.0
    after = [cpu for stored, cpu in samples if stored >= expected]
    cpu1 = after[0] if after else samples[-1][1]
    return max(cpu1 - cpu0, 0.0)


def ledger_counts(db_url: str, published: AbstractSet[Key]) -> dict[str, Any]:
    """What the ledger holds after a drain, against the published keys (ledger_outcome), and
    the rate over the span of the batches' commit times (interpreter start-up and lease
    settling left out)."""
    rows = _keys(db_url)
    quarantined = int(_count(db_url, "SELECT count(*) FROM quarantine"))
    span = _count(db_url, "SELECT max(received_at) - min(received_at) FROM messages")
    return {
        **ledger_outcome(published, rows, quarantined),
        # One batch has no span to divide by: no rate rather than a made-up million.
        "rate": round(len(rows) / span) if span > 0 else None,
        "ingest_span_s": round(span, 2),
    }


def ledger_outcome(
    published: AbstractSet[Key], rows: list[Key], quarantined: int
) -> dict[str, int]:
    """stored: distinct keys in the ledger; lost: published keys not among them; duplicated:
    ledger rows beyond one per key, plus quarantined messages (a replay of a key with other
    content); unexpected: stored keys nobody published. Copies in the stream are not
    duplicates: the logger drops them, and a row stored twice shows here."""
    stored = set(rows)
    return {
        "stored": len(stored),
        "lost": len(published - stored),
        "duplicated": len(rows) - len(stored) + quarantined,
        "unexpected": len(stored - published),
    }


def _keys(db_url: str) -> list[Key]:
    return [(str(s), int(m)) for s, m in _rows(db_url, "SELECT session_id, msg_id FROM messages")]


def _count(db_url: str, sql: str) -> float:
    rows = _rows(db_url, sql)
    return float(rows[0][0] or 0) if rows else 0.0


def _rows(db_url: str, sql: str) -> list[tuple[Any, ...]]:
    """The query's rows; none while the database or its tables are not there yet (the
    loggers make them as they start, and the drain loop asks before)."""
    try:
        db = connect(db_url)
    except Exception:
        return []
    try:
        return [tuple(r) for r in db.query(sql)]
    except Exception:
        return []
    finally:
        db.close()


def _peak_rss_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def spawn_logger(
    cluster: NatsCluster,
    db_url: str,
    durable: str,
    name: str,
    extra: tuple[str, ...] = (),
    root: Path = ROOT,
) -> subprocess.Popen[bytes]:
    """One logger instance (`python -m feedback.clinic.nats_logger`, own process) on the
    cluster's logger account, run from the checkout `root`; the bench and the load test both
    start theirs here."""
    # BENCH_NATS_PROFILE=DIR:MODE: each logger under bench/profiled_logger.py (threads' CPU,
    # cProfile or stage counters, written to DIR at exit).
    profile = os.environ.get("BENCH_NATS_PROFILE", "")
    program = ["feedback.clinic.nats_logger"]
    if profile:
        out, _, mode = profile.rpartition(":")
        program = ["bench.profiled_logger", str(Path(out) / name), mode, "--"]
    command = [
        sys.executable, "-m", *program,
        "--nats", ",".join(cluster.logger_urls), "--partitions", str(cluster.partitions),
        "--db", db_url, "--durable", durable, "--name", name, *extra,
    ]  # fmt: skip
    return subprocess.Popen(
        command,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def logger_run(
    cluster: NatsCluster,
    db_url: str,
    durable: str,
    instances: int,
    published: AbstractSet[Key],
    extra: tuple[str, ...] = (),
    timeout_s: float = 120.0,
    root: Path = ROOT,
) -> dict[str, Any]:
    """`root`: the checkout whose logger runs (an A/B of two on the same cluster)."""
    expected = len(published)
    procs = [
        spawn_logger(cluster, db_url, durable, f"{durable}-{i}", extra, root)
        for i in range(instances)
    ]
    start = time.perf_counter()
    servers0 = servers_cpu_s(cluster)
    done = 0.0
    samples: list[tuple[float, float]] = []
    pg = db_url.startswith("postgresql")
    pg0 = postgres_cpu_s() if pg else 0.0
    try:
        while done < expected and time.perf_counter() - start < timeout_s:
            await asyncio.sleep(0.3)
            done = _count(db_url, "SELECT count(*) FROM messages")
            samples.append((done, sum(_cpu_s(p.pid) for p in procs)))
        wall_s = time.perf_counter() - start
        await asyncio.sleep(0.5)
        peaks = [_peak_rss_mb(p.pid) for p in procs]
        servers = servers_cpu_s(cluster) - servers0
        postgres = postgres_cpu_s() - pg0 if pg else 0.0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)
    ledger = ledger_counts(db_url, published)
    stored, rate = ledger["stored"], ledger.pop("rate")
    return {
        "instances": instances,
        **ledger,
        "ingest_msgs_per_s": rate,
        "wall_s_including_start": round(wall_s, 2),
        "peak_rss_mb": peaks,
        "loggers_cpu_us_per_msg": round(drain_cpu_s(samples, expected) / max(stored, 1) * 1e6, 1),
        "servers_cpu_us_per_msg": round(servers / max(stored, 1) * 1e6, 1),
        # Start-up included (a few backends' connects), and whatever else used the server.
        **({"postgres_cpu_us_per_msg": round(postgres / max(stored, 1) * 1e6, 1)} if pg else {}),
    }


@contextlib.contextmanager
def pg_schema() -> Any:
    try:
        admin = connect(PG_URL)
    except Exception as exc:
        yield None, f"PostgreSQL not reachable at {PG_URL}: {exc}"
        return
    schema = "bench_" + secrets.token_hex(4)
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}", None
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


RUNS = ("sqlite_1", "sqlite_1_ack_all", "sqlite_2", "postgresql_1", "postgresql_2")


async def run_async(
    per_station: int,
    partitions: int = 0,
    only: tuple[str, ...] = RUNS,
    roots: tuple[Path, ...] = (ROOT,),
) -> dict[str, Any]:
    """`only`: the logger runs to make (the bare readers run once each then); `roots`: with
    more than one, each run is made with each checkout's logger in turn (keys `<run>@<i>`)."""
    binary = nats_server_binary()
    if binary is None:
        return {"skipped": "nats-server is not installed"}
    out: dict[str, Any] = {
        "stations": STATIONS,
        "messages_per_station": per_station,
        "partitions": partitions,
    }
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        async with cluster_with_stream(binary, work, partitions) as cluster:
            out["publish"], keys = await publish_all(cluster, per_station)
            out["stream"] = await stream_report(cluster, len(keys))
            n = out["stream"]["messages"]  # the peers read every copy
            out["bare_nats_py_peer"] = await bare_peer(cluster, n)
            bare: dict[str, list[int]] = {}
            bare_runs: dict[str, list[dict[str, Any]]] = {}
            if partitions:  # each twice, in turn: the later readers find the stream cached
                order = (False, True, True, False) if only == RUNS else (False, True)
                for i, ack_all in enumerate(order):
                    key = "ack_all" if ack_all else "explicit"
                    r = await bare_partitions(cluster, n, f"bare{i}", ack_all)
                    bare.setdefault(key, []).append(r["msgs_per_s"])
                    bare_runs.setdefault(key, []).append(r)
                out["bare_partitions"] = bare_runs
            runs: dict[str, Any] = {}
            for key in RUNS:
                if key not in only or (key == "sqlite_1_ack_all" and not partitions):
                    continue
                instances = 2 if key.endswith("_2") else 1
                extra = ("--acks", "all") if "ack_all" in key else ()
                for i, root in enumerate(roots):
                    name = key if len(roots) == 1 else f"{key}@{i}"
                    durable = name.replace("_", "").replace("@", "v")
                    if key.startswith("sqlite"):
                        db = str(work / f"{durable}.db")
                        runs[name] = await logger_run(
                            cluster, db, durable, instances, keys, extra, root=root
                        )
                        continue
                    with pg_schema() as (url, skipped):
                        runs[name] = {"skipped": skipped} if url is None else await logger_run(
                            cluster, url, durable, instances, keys, extra, root=root
                        )  # fmt: skip
            peer = out["bare_nats_py_peer"]["msgs_per_s"]
            for key, r in runs.items():
                if r.get("ingest_msgs_per_s") is not None:
                    r["ratio_to_bare_peer"] = round(r["ingest_msgs_per_s"] / max(peer, 1), 3)
                    same = "ack_all" if "ack_all" in key else "explicit"
                    if bare.get(same):
                        best = max(bare[same])
                        r["ratio_to_bare_partitions_same_acks"] = round(
                            r["ingest_msgs_per_s"] / max(best, 1), 3
                        )
            out["logger"] = runs
    return out


def run(
    per_station: int = 200,
    partitions: int = 0,
    only: tuple[str, ...] = RUNS,
    roots: tuple[Path, ...] = (ROOT,),
) -> dict[str, Any]:
    return {
        "what": __doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else "",
        **asyncio.run(run_async(per_station, partitions, only, roots)),
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_nats")
    p.add_argument("--per-station", type=int, default=200)
    p.add_argument("--partitions", type=int, default=0, help="0: one shared consumer")
    p.add_argument("--only", default=",".join(RUNS), metavar="RUNS",
                   help="logger runs, comma-separated (default: all of RUNS)")  # fmt: skip
    p.add_argument("--roots", default=str(ROOT), metavar="DIRS",
                   help="checkouts whose loggers run, comma-separated: an A/B on one cluster, "
                   "each run made with each in turn")  # fmt: skip
    args = p.parse_args()
    only = tuple(k for k in args.only.split(",") if k)
    unknown = set(only) - set(RUNS)
    if unknown:
        p.error(f"unknown runs {sorted(unknown)}; known: {', '.join(RUNS)}")
    roots = tuple(Path(r).resolve() for r in args.roots.split(",") if r)
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "roots": [str(r) for r in roots],
        **run(args.per_station, args.partitions, only, roots),
    }
    results = Path(__file__).with_name("results")
    results.mkdir(exist_ok=True)
    name = "nats_partitioned.json" if args.partitions else "nats.json"
    if only != RUNS or len(roots) > 1:
        name = name.replace(".json", "_ab.json")  # not the full bench: kept apart
    (results / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
