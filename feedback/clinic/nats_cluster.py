"""A three-node NATS cluster with JetStream and the MQTT gateway, on loopback: for the tests, the
benchmark and a first look (deploy/nats/ holds the configuration a network would run).

Each node is a `nats-server` process with its own configuration file and store directory under
`workdir`, on free loopback ports (client, route, MQTT). NATS speaks MQTT 3.1.1 (QoS 0 and 1),
needs a `server_name` per node and JetStream for it, and keeps MQTT sessions and QoS 1 state in
streams of its own, replicated over the cluster like ours.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from feedback.broker import free_port
from feedback.clinic.nats_partitions import accounts_config

CLUSTER_NAME = "vmf"
READY_PROBE = "vmf-ready-probe"  # a stream placed on every node and deleted, by `ready`
LOGGER_USER, LOGGER_PASSWORD = "logger", "logger-test-only"


def nats_server_binary() -> str | None:
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )


def node_config(
    name: str,
    store: Path,
    client: int,
    route: int,
    mqtt: int,
    routes: list[int],
    partitions: int = 0,
) -> str:
    """`partitions` > 0: the two-account layout of nats_partitions.py (the loggers' account
    reached as LOGGER_USER); 0: one account for everyone, the stream unpartitioned."""
    peers = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes)
    accounts = (
        accounts_config(partitions, f'"{LOGGER_PASSWORD}"', anonymous_stations=True)
        if partitions
        else ""
    )
    return (
        f"server_name: {name}\n"
        f"listen: 127.0.0.1:{client}\n"
        # A slow consumer on a 2-core test machine is not a reason to cut a route.
        "write_deadline: 10s\n"
        f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 2GB }}\n'
        f"cluster {{ name: {CLUSTER_NAME}, listen: 127.0.0.1:{route}, routes: [{peers}] }}\n"
        # The gateway's own streams (sessions, QoS 1 deliveries, retained messages) would take
        # the replica count from the routes up when they are first used, 2 of 3 in practice:
        # then one node's loss leaves them without quorum and stalls every MQTT client.
        f"mqtt {{ listen: 127.0.0.1:{mqtt}, stream_replicas: 3, ack_wait: 10s }}\n"
        f"{accounts}"
    )


@dataclass
class NatsNode:
    name: str
    binary: str
    conf: Path
    client_port: int
    mqtt_port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )

    def kill9(self) -> None:
        """SIGKILL: no chance to flush or to say goodbye to the cluster."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class NatsCluster:
    nodes: list[NatsNode] = field(default_factory=list)
    partitions: int = 0

    @classmethod
    def create(cls, binary: str, workdir: Path, size: int = 3, partitions: int = 0) -> NatsCluster:
        routes = [free_port() for _ in range(size)]
        nodes = []
        for i in range(size):
            name = f"n{i + 1}"
            client, mqtt = free_port(), free_port()
            conf = workdir / f"{name}.conf"
            others = [p for j, p in enumerate(routes) if j != i]
            store = workdir / f"{name}-store"
            conf.write_text(node_config(name, store, client, routes[i], mqtt, others, partitions))
            nodes.append(NatsNode(name, binary, conf, client, mqtt, workdir / f"{name}.log"))
        return cls(nodes, partitions)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def logger_urls(self) -> list[str]:
        """The loggers' account when partitioned, credentials written in the URLs as the
        logger's --nats option takes them; connect through `nats_connect.connect`, which makes
        them connection options (nats-py would keep them for the written URLs only, and a
        reconnect to an announced node would land in the stations' account). The one account
        otherwise."""
        if not self.partitions:
            return self.urls
        auth = f"{LOGGER_USER}:{LOGGER_PASSWORD}@"
        return [n.url.replace("nats://", f"nats://{auth}") for n in self.nodes]

    def start(self, timeout_s: float = 20.0) -> None:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            wait_port(node.mqtt_port, timeout_s)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    async def ready(self, timeout_s: float = 60.0) -> None:
        """Wait until JetStream answers (the cluster has elected its metadata leader: before
        that, the MQTT gateway accepts connections it cannot serve) and a stream with a
        replica on every node can be placed: for a moment after the election the leader may
        not know every peer yet and refuses a three-replica stream ("no suitable peers for
        placement", err_code 10005), which a test or a logger starting then would meet."""
        from nats.js.api import StorageType, StreamConfig

        from feedback.clinic.nats_connect import connect

        deadline = time.monotonic() + timeout_s
        nc = await connect(self.logger_urls, max_reconnect_attempts=-1)
        probe = StreamConfig(name=READY_PROBE, subjects=[READY_PROBE],
                             num_replicas=len(self.nodes), storage=StorageType.MEMORY)  # fmt: skip
        try:
            while True:
                try:
                    js = nc.jetstream(timeout=2.0)
                    await js.account_info()
                    await js.add_stream(probe)
                    await js.delete_stream(READY_PROBE)
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await nc.close()


def wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout_s} s")
