"""Load test of the clinic logger (`make loadtest`): N simulated stations → Mosquitto → 1 or 2
loggers → SQLite or PostgreSQL. Loopback only; bounded in time (--seconds, --timeout) and count
(--max-messages).

Each station publishes the real message mix with the real schemas (templates: a captured
simulated session, tests/fixtures/clinic/session_messages.jsonl): status and session_start,
`live` (QoS 0) and the binary `stream` (QoS 0, not logged) at --hz each, a cue every second and
a rep every 3 s (QoS 1), session_end. Two modes:


- `live` (default): stations publish in real time for --seconds while the loggers run; the rate
  is what was offered, the point is lag p99 (envelope `t` → commit, from the loggers'
  Prometheus histogram, so a bucket's upper bound) and nothing lost.
- `drain`: the loggers' persistent sessions exist but they are stopped while the stations
  publish as fast as they can (the broker queues; `live` goes at QoS 1 here, as Mosquitto
  queues no QoS 0 for an offline client); then the loggers start and drain: the rate
  is the logger's capacity. Before them a bare paho subscriber (its own process, auto acks,
  nothing stored) drains its own copy of the same queue: the ratio logger/peer says how much
  of the intake the logger keeps.

Lost = logged messages published - stored - live snapshots the logger dropped on purpose
(counted); duplicated = copies dropped by the store plus quarantined replays, and a check of
the ledger (one row per (session, msg_id)). Prints and writes JSON (--out).

--broker nats (drain only, bench/loadtest_nats.py): the same stations and per-station count
through the three-node NATS JetStream cluster of bench/bench_nats.py (its cue/rep mix over MQTT
3.1.1) into the NATS logger; rate, peer_rate (bare nats-py pull consumer), ratio_to_peer, lost,
duplicated (both of distinct (session, msg_id)), per_logger_stored, RSS, and apart from them the
copies that stations' resends left in the stream (stream.copies: the broker's at-least-once).
--partitions N: the stream split by station into N partitions that the loggers share by lease,
with a second peer reading every partition (partitions_peer_rate, ratio_to_partitions_peer).

Both brokers: per_logger_stored lists what each instance stored, idle_loggers the instances
that stored nothing (a logger left out of the sharing).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "clinic" / "session_messages.jsonl"
PG_URL = os.environ.get("VMF_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
LOGGED = "{status,session,cue,rep,event,live,cmd}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


# ---------------------------------------------------------------- the stations' messages


def templates() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for line in FIXTURE.read_text().splitlines():
        body = json.loads(json.loads(line)["payload"])
        out.setdefault(body["type"], body)
    return out


@dataclass
class Station:
    clinic: str
    name: str
    session: str
    tpl: dict[str, dict[str, Any]]
    msg_id: int = 0
    live_id: int = 0
    tick: int = 0
    logged: int = 0  # messages the logger must store
    session_msgs: int = 0  # of them QoS 1 (in the ledger)

    @property
    def base(self) -> str:
        return f"vmf/v1/{self.clinic}/{self.name}"

    def _msg(self, kind: str, **changes: Any) -> bytes:
        self.msg_id += 1
        body = {**self.tpl[kind], "session": self.session, "msg_id": self.msg_id, "t": time.time()}
        body.update(changes)
        self.logged += 1
        self.session_msgs += 1
        return json.dumps(body, separators=(",", ":")).encode()

    def start(self) -> list[tuple[str, bytes, int]]:
        return [(f"{self.base}/status", self._msg("status"), 1),
                (f"{self.base}/session", self._msg("session_start"), 1)]  # fmt: skip

    def step(self, hz: int, stream: bytes, live_qos: int = 0) -> list[tuple[str, bytes, int]]:
        self.tick += 1
        self.live_id += 1
        live = {**self.tpl["live"], "session": self.session, "msg_id": self.live_id,
                "t": time.time(), "index": self.tick * 100}  # fmt: skip
        self.logged += 1
        out = [(f"{self.base}/live", json.dumps(live, separators=(",", ":")).encode(), live_qos),
               (f"{self.base}/stream", stream, 0)]  # fmt: skip
        if self.tick % hz == 0:
            out.append((f"{self.base}/cue", self._msg("cue", index=self.tick * 100), 1))
        if self.tick % (3 * hz) == 0:
            out.append((f"{self.base}/rep", self._msg("rep", period=self.tick // (3 * hz)), 1))
        return out

    def end(self) -> list[tuple[str, bytes, int]]:
        return [(f"{self.base}/session", self._msg("session_end"), 1)]


def make_stations(n: int) -> list[Station]:
    tpl = templates()
    run = secrets.token_hex(3)
    return [Station(f"c{k % 10}", f"st{k:04d}", f"S-lt-{run}-{k:04d}", tpl) for k in range(n)]


class Publishers:
    """One paho client per station, all driven from the calling thread through one epoll
    selector: a network thread each made 1,000 stations crawl (1,000 threads fighting for the
    GIL), and paho's own `loop()` uses select(), which fails past file descriptor 1024."""

    def __init__(self, port: int, stations: list[Station]) -> None:
        self.clients: list[mqtt.Client] = []
        self.selector = selectors.DefaultSelector()
        for st in stations:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"lt-{st.name}",
                            protocol=mqtt.MQTTv311)  # fmt: skip
            c.max_inflight_messages_set(1000)
            c.max_queued_messages_set(0)
            c.connect("127.0.0.1", port, keepalive=60)
            self.selector.register(c.socket(), selectors.EVENT_READ, c)  # type: ignore[arg-type]
            self.clients.append(c)
        self._misc_at = 0.0
        deadline = time.monotonic() + 60
        while not all(c.is_connected() for c in self.clients):
            if time.monotonic() > deadline:
                raise TimeoutError("stations did not connect")
            self.pump(0.01)
        self.infos: list[mqtt.MQTTMessageInfo] = []

    def pump(self, timeout_s: float = 0.0) -> None:
        for key, _ in self.selector.select(timeout_s):
            key.data.loop_read()
        for c in self.clients:
            if c.want_write():
                c.loop_write()
        now = time.monotonic()
        if now > self._misc_at:  # keepalive pings, once a second is plenty
            self._misc_at = now + 1.0
            for c in self.clients:
                c.loop_misc()

    def publish(self, k: int, msgs: list[tuple[str, bytes, int]]) -> int:
        c = self.clients[k]
        for topic, payload, qos in msgs:
            info = c.publish(topic, payload, qos=qos)  # written at once: no network thread
            if qos:
                self.infos.append(info)
        return len(msgs)

    def flush(self, timeout_s: float) -> int:
        """Pumps until every QoS 1 PUBACK came; returns how many never did."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not all(i.is_published() for i in self.infos):
            self.pump(0.01)
        return sum(not i.is_published() for i in self.infos)

    def close(self) -> None:
        for c in self.clients:
            c.disconnect()
        self.selector.close()


# ---------------------------------------------------------------- processes


class Broker:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = free_port()
        conf = workdir / "mosquitto.conf"
        # Deep queues: the drain mode fills the loggers' queue while they are stopped.
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 10000000\n"
            f"max_connections -1\nuser {getpass.getuser()}\n"
        )
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        wait_port(self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


class Logger:
    def __init__(
        self, broker_port: int, db_url: str, instance: str, log: Path, profile: str = ""
    ) -> None:
        self.metrics_port = free_port()
        # --profile: the logger under bench.profiled_logger (CPU per thread, cProfile)
        wrap = ["bench.profiled_logger", *profile.split(","), "--"] if profile else []
        module = wrap or ["feedback.clinic.logger"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *module, "--broker",
             f"mqtt://127.0.0.1:{broker_port}", "--db", db_url, "--group", "lt", "--instance",
             instance, "--metrics-port", str(self.metrics_port)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL, stderr=log.open("ab"),
        )  # fmt: skip

    def scrape(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as r:
            return parse_metrics(r.read().decode())

    def wait_subscribed(self, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.scrape().get("vmf_logger_connects_total", 0) >= 1:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError("logger did not subscribe")

    def peak_rss_mb(self) -> float:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        m = re.search(r"VmHWM:\s+(\d+) kB", text)
        return round(int(m.group(1)) / 1024, 1) if m else float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def proc_cpu_s(pid: int | str) -> float:
    """User + system CPU seconds of a process (all its threads); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(broker: Broker, loggers: list[Logger]) -> dict[str, float]:
    """CPU seconds so far of the broker, every PostgreSQL process and the loggers: the
    difference over the drain says where the cores went."""
    postgres = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    postgres += proc_cpu_s(entry.name)
            except OSError:
                continue
    busy = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return {
        # everything but idle and iowait: the other helpers and this bench are in it too
        "machine": sum(int(v) for i, v in enumerate(busy) if i not in (3, 4))
        / os.sysconf("SC_CLK_TCK"),
        "mosquitto": proc_cpu_s(broker.proc.pid),
        "postgres": postgres,
        "loggers": sum(proc_cpu_s(lg.proc.pid) for lg in loggers),
    }


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def lag_p99(samples: list[dict[str, float]]) -> float | None:
    """The upper bound of the bucket holding the 99th percentile, summed over the loggers."""
    buckets: dict[float, float] = {}
    for s in samples:
        for k, v in s.items():
            m = re.fullmatch(r'vmf_logger_lag_seconds_bucket\{le="([^"]+)"\}', k)
            if m:
                le = float(m.group(1))
                buckets[le] = buckets.get(le, 0) + v
    if not buckets or buckets[max(buckets)] == 0:
        return None
    total = buckets[max(buckets)]
    for le in sorted(buckets):
        if buckets[le] >= 0.99 * total:
            return le
    return None


def peer_main(port: int, expected: int, idle_s: float, persist: bool) -> None:
    """A bare paho subscriber: counts the logged topics, auto acks, stores nothing."""
    got = 0
    first = last = 0.0
    done = threading.Event()

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        nonlocal got, first, last
        now = time.monotonic()
        if got == 0:
            first = now
        got += 1
        last = now
        if got >= expected:
            done.set()

    def on_connect(c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        c.subscribe([(f"vmf/v1/+/+/{leaf}", 1) for leaf in LOGGED.strip("{}").split(",")])

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="lt-peer", protocol=mqtt.MQTTv5)
    c.on_message, c.on_connect = on_message, on_connect
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", port, clean_start=not persist, properties=props)
    c.loop_start()
    print("ready", flush=True)
    while not done.wait(0.2):
        if got and time.monotonic() - last > idle_s:
            break
        if expected == 0:
            break
    c.disconnect()
    c.loop_stop()
    rate = (got - 1) / (last - first) if got > 1 and last > first else 0.0
    print(json.dumps({"received": got, "rate": rate}), flush=True)


def start_peer(
    port: int, expected: int, persist: bool, idle_s: float = 3.0
) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-m", "bench.loadtest", "--peer", str(port), str(expected), str(idle_s),
         str(int(persist))],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert p.stdout is not None
    p.stdout.readline()  # ready: connected (and subscribed soon after)
    time.sleep(0.5)
    return p


def finish_peer(p: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
    out, _ = p.communicate(timeout=timeout_s)
    return dict(json.loads(out.strip().splitlines()[-1]))


# ---------------------------------------------------------------- the run


@dataclass
class Run:
    args: argparse.Namespace
    workdir: Path
    db_url: str = ""
    pg_schema: str | None = None
    notes: list[str] = field(default_factory=list)


def database(args: argparse.Namespace, workdir: Path) -> tuple[str, str | None]:
    if args.store == "sqlite":
        return str(workdir / "clinic.sqlite3"), None
    import psycopg

    schema = "vmf_loadtest_" + secrets.token_hex(4)
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}", schema


def drop_schema(schema: str | None) -> None:
    if schema is None:
        return
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")


def ledger_copies(db_url: str) -> tuple[int, int]:
    """(rows, distinct (session, msg_id)) in the de-duplication ledger."""
    sys.path.insert(0, str(ROOT))
    from feedback.clinic.db import connect

    db = connect(db_url)
    try:
        rows = int(db.query("SELECT count(*) FROM messages")[0][0])
        distinct = int(db.query(
            "SELECT count(*) FROM (SELECT session_id, msg_id FROM messages GROUP BY 1, 2) k"
        )[0][0])  # fmt: skip
        return rows, distinct
    finally:
        db.close()


def publish_all(
    args: argparse.Namespace,
    publishers: Publishers,
    stations: list[Station],
    stream: bytes,
    live_qos: int,
    ticks: int,
) -> tuple[int, int, float]:
    """Every station's session, `ticks` long (in real time in live mode): messages sent,
    publishes left unacknowledged, and the seconds it took."""
    t0 = time.monotonic()
    sent = sum(publishers.publish(k, st.start()) for k, st in enumerate(stations))
    for tick in range(ticks):
        for k, st in enumerate(stations):
            sent += publishers.publish(k, st.step(args.hz, stream, live_qos))
        if args.mode == "live":
            behind = t0 + (tick + 1) / args.hz - time.monotonic()
            while behind > 0:  # answer the broker while waiting for the next tick
                publishers.pump(min(behind, 0.01))
                behind = t0 + (tick + 1) / args.hz - time.monotonic()
    sent += sum(publishers.publish(k, st.end()) for k, st in enumerate(stations))
    unacked = publishers.flush(args.timeout)
    return sent, unacked, time.monotonic() - t0


def outcomes_of(
    samples: list[dict[str, float]],
    logged: int,
    publish_s: float,
    live: bool,
    seen: tuple[float, float, float, float],
    ledger: tuple[int, int, int],
) -> tuple[float, dict[str, Any]]:
    """The loggers' rate and what became of the messages, from their last metrics scrape.
    `seen`: (time, handled) of the first and the last change the scrapes saw; `ledger`: the
    rows stored, the distinct (session, msg_id) among them, and the session messages sent."""
    stored = sum(s.get('vmf_logger_messages_total{outcome="stored"}', 0) for s in samples)
    dups = sum(s.get('vmf_logger_messages_total{outcome="duplicate"}', 0) for s in samples)
    replays = sum(s.get('vmf_logger_quarantined_total{reason="replay"}', 0) for s in samples)
    quarantined = sum(s.get('vmf_logger_messages_total{outcome="quarantined"}', 0) for s in samples)
    dropped = sum(s.get("vmf_logger_dropped_qos0_total", 0) for s in samples)
    first_t, first_n, last_t, last_n = seen
    rows, distinct, session_msgs = ledger
    per, idle = per_logger(samples)
    if live:  # what was offered, if all of it was stored
        rate = stored / publish_s
    else:  # from the first batch seen to the last: interpreter start-up left out
        rate = (last_n - first_n) / (last_t - first_t) if last_t > first_t else 0.0
    return rate, {
        "stored": int(stored), "dropped_live_on_purpose": int(dropped),
        "lost": int(logged - stored - dropped), "duplicated": int(dups + replays),
        "quarantined": int(quarantined), "ledger_rows": rows,
        "ledger_duplicates": rows - distinct, "ledger_lost": session_msgs - distinct,
        "per_logger_stored": per, "idle_loggers": idle,
        "rate": round(rate), "lag_p99_s_le": lag_p99(samples),
    }  # fmt: skip


def per_logger(samples: list[dict[str, float]]) -> tuple[list[int], list[int]]:
    """Messages each logger instance stored (its last scrape), and the instances (1-based)
    that stored none: an instance left out of the shared subscription or without a partition
    is visible here rather than hidden in the total."""
    per = [int(s.get('vmf_logger_messages_total{outcome="stored"}', 0)) for s in samples]
    return per, [i + 1 for i, n in enumerate(per) if n == 0]


def ticks_of(args: argparse.Namespace) -> int:
    return int(min(args.seconds * args.hz, args.max_messages // max(1, 2 * args.stations)))


def run_nats(args: argparse.Namespace) -> dict[str, Any]:
    """The drain through the NATS cluster (bench/loadtest_nats.py); as many messages per
    station as a Mosquitto drain with the same options logs."""
    if args.mode != "drain":
        raise ValueError("--broker nats measures a drain only: add --mode drain")
    from bench import loadtest_nats

    ticks = ticks_of(args)
    per_station = ticks + 3 + ticks // args.hz + ticks // (3 * args.hz)
    return loadtest_nats.run(args.stations, per_station, args.store, args.loggers,
                             getattr(args, "partitions", 0), args.timeout)  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "broker", "mosquitto") == "nats":
        return run_nats(args)
    workdir = Path(tempfile.mkdtemp(prefix="vmf-loadtest-"))
    logs = Path(args.out).parent  # the loggers' own reports, next to the result
    logs.mkdir(parents=True, exist_ok=True)
    db_url, schema = database(args, workdir)
    broker = Broker(workdir)
    stations = make_stations(args.stations)
    stream = os.urandom(300)  # the binary frame's size at 10 Hz (about 3 kB/s a station)
    loggers = [
        Logger(broker.port, db_url, str(i + 1), logs / f"logger-{i + 1}.log")
        for i in range(args.loggers)
    ]
    publishers: Publishers | None = None
    result: dict[str, Any] = {
        "mode": args.mode, "stations": args.stations, "hz": args.hz, "seconds": args.seconds,
        "store": args.store, "loggers": args.loggers,
    }  # fmt: skip
    try:
        for lg in loggers:
            lg.wait_subscribed()
        ticks = ticks_of(args)
        expected = args.stations * (ticks + 3 + ticks // args.hz + ticks // (3 * args.hz))
        if args.mode == "drain":
            for lg in loggers:  # persistent sessions stay; the broker queues for them
                lg.stop()
            peer = start_peer(broker.port, expected, persist=True)
            peer.terminate()  # its session stays too: it will drain its own copy
            peer.wait()
        else:
            peer = start_peer(broker.port, expected, persist=False)
        publishers = Publishers(broker.port, stations)
        # Drain: live at QoS 1, or the broker would not queue it for the stopped loggers (QoS 0
        # queued for them, queue_qos0_messages, lost QoS 1 session messages in Mosquitto 2.0.11).
        live_qos = 1 if args.mode == "drain" else 0
        sent, unacked, publish_s = publish_all(args, publishers, stations, stream, live_qos, ticks)
        logged = sum(st.logged for st in stations)
        assert logged == expected, (logged, expected)
        result.update(
            published=sent, logged_published=logged, publish_s=round(publish_s, 2),
            offered_rate=round(logged / publish_s), unacked_publishes=unacked,
        )  # fmt: skip
        if args.mode == "drain":
            peer = start_peer(broker.port, expected, persist=True)
            result["peer"] = finish_peer(peer, args.timeout)
            loggers = [
                Logger(
                    broker.port,
                    db_url,
                    str(i + 1),
                    logs / f"logger-{i + 1}.log",
                    getattr(args, "profile", ""),
                )
                for i in range(args.loggers)
            ]
        snap = lambda: cpu_snapshot(broker, loggers)  # noqa: E731
        samples, first_t, first_n, last_t, last_n, cpu = track(loggers, logged, args.timeout,
                                                               snap)  # fmt: skip
        wall = last_t - first_t
        if wall > 0:  # share of the machine's cores over the drain (1.0: all of them)
            cores = os.cpu_count() or 1
            cpu["other"] = cpu["machine"] - cpu["mosquitto"] - cpu["postgres"] - cpu["loggers"]
            result["cpu_share"] = {k: round(v / wall / cores, 3) for k, v in cpu.items()}
            # per message handled: what a process costs, however busy the machine is
            handled = max(1.0, last_n - first_n)
            result["cpu_us_per_msg"] = {k: round(v / handled * 1e6, 1) for k, v in cpu.items()}
        if args.mode == "live":
            result["peer"] = finish_peer(peer, args.timeout)
        result["peak_rss_mb"] = [lg.peak_rss_mb() for lg in loggers]
        result["logger_metrics"] = [
            {k: v for k, v in s.items() if k.startswith("vmf_logger_") and "_bucket" not in k}
            for s in samples
        ]
        ledger = (*ledger_copies(db_url), sum(st.session_msgs for st in stations))
        rate, outcomes = outcomes_of(samples, logged, publish_s, args.mode == "live",
                                     (first_t, first_n, last_t, last_n), ledger)  # fmt: skip
        result.update(outcomes, peer_rate=round(result["peer"]["rate"]))
        if result["peer_rate"]:
            result["ratio_to_peer"] = round(rate / result["peer_rate"], 3)
    finally:
        if publishers is not None:
            publishers.close()
        for lg in loggers:
            lg.stop()
        broker.stop()
        drop_schema(schema)
        if not os.environ.get("VMF_LOADTEST_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
    return result


def track(
    loggers: list[Logger], expected: int, timeout_s: float, snapshot: Any = dict
) -> tuple[list[dict[str, float]], float, float, float, float, dict[str, float]]:
    """Scrapes the loggers until all `expected` messages are handled (or nothing moves for
    5 s, or timeout): the last samples, the (time, handled) of the first and last change, and
    the CPU seconds `snapshot()` counted between them."""
    deadline = time.monotonic() + timeout_s
    first_t = last_t = 0.0
    first_n = last_n = 0.0
    cpu0: dict[str, float] = {}
    cpu1: dict[str, float] = {}
    samples: list[dict[str, float]] = []
    while time.monotonic() < deadline:
        try:
            samples = [lg.scrape() for lg in loggers]
        except OSError:
            time.sleep(0.05)
            continue
        n = sum(s.get("vmf_logger_received_total", 0) + s.get("vmf_logger_dropped_qos0_total", 0)
                for s in samples)  # fmt: skip
        now = time.monotonic()
        if n > last_n:
            if first_t == 0.0:
                first_t, first_n = now, n
                cpu0 = snapshot()
            last_t, last_n = now, n
            cpu1 = snapshot()
        if n >= expected or (last_t and now - last_t > 5):
            break
        time.sleep(0.05)
    return samples, first_t, first_n, last_t, last_n, {k: v - cpu0[k] for k, v in cpu1.items()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--peer":
        peer_main(int(argv[1]), int(argv[2]), float(argv[3]), bool(int(argv[4])))
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.loadtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--stations", type=int, default=100)
    p.add_argument("--seconds", type=int, default=10, help="session length (ticks = s × hz)")
    p.add_argument("--hz", type=int, default=10, help="live and stream rate of each station")
    p.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--loggers", type=int, choices=[1, 2], default=1)
    p.add_argument("--mode", choices=["live", "drain"], default="live")
    p.add_argument("--broker", choices=["mosquitto", "nats"], default="mosquitto",
                   help="nats: three-node JetStream cluster, NATS logger (drain only)")  # fmt: skip
    p.add_argument("--partitions", type=int, default=0, metavar="N",
                   help="nats: the servers split the stream into N partitions, which the "
                   "loggers share by lease (0: one consumer shared by every instance)")  # fmt: skip
    p.add_argument("--max-messages", type=int, default=2_000_000, help="bound on ticks × N")
    p.add_argument("--timeout", type=float, default=120.0, help="bound on each wait, seconds")
    p.add_argument(
        "--profile",
        default="",
        metavar="DIR[,cprofile]",
        help="loggers under bench.profiled_logger: CPU per thread (and cProfile)",
    )
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "loadtest.json"))
    args = p.parse_args(argv)
    if args.broker == "nats" and args.mode != "drain":
        p.error("--broker nats measures a drain only: add --mode drain")
    if args.partitions and args.broker != "nats":
        p.error("--partitions is for --broker nats (Mosquitto shares by $share subscription)")
    result = run(args)
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
