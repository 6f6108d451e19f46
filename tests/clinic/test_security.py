"""The deploy/ broker configuration for real: TLS with a test CA, passwords, the topic ACL.

Mosquitto runs deploy/mosquitto/mosquitto.conf and deploy/mosquitto/acl as shipped; only the
paths and the port are substituted.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import secrets
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from feedback.clinic.commands import make_command
from feedback.clinic.db import connect
from feedback.outputs.broker_access import BrokerAccess
from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.outputs.topics import MessageNumberer, Topics, encode
from tests.clinic.conftest import (
    ClinicBroker,
    run_station,
    running_logger,
    station_settings,
    wait_until,
)
from tests.clinic.test_logger import check_logged, session_ended
from tests.clinic.tls import make_ca_and_server
from tests.conftest import missing_service, mosquitto_binary

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
ACCOUNTS = ["logger", "therapist-1", "st-a", "st-b"]


class SecureBroker(ClinicBroker):
    def __init__(self, binary: str, workdir: Path) -> None:
        super().__init__(binary, workdir)
        self.ca, _, _ = make_ca_and_server(workdir / "certs")
        self.passwords = {name: secrets.token_urlsafe(12) for name in ACCOUNTS}
        passwd = workdir / "passwd"
        for name, password in self.passwords.items():
            create = ["-c"] if not passwd.exists() else []
            subprocess.run(
                ["mosquitto_passwd", *create, "-b", str(passwd), name, password], check=True
            )
        passwd.chmod(0o644)
        shutil.copy(DEPLOY / "acl", workdir / "acl")
        conf = (DEPLOY / "mosquitto.conf").read_text()
        conf = conf.replace("/etc/mosquitto/vmf/", f"{workdir}/")
        conf = conf.replace("/var/lib/mosquitto/", f"{self.store}/")
        conf = conf.replace("listener 8883", f"listener {self.port} 127.0.0.1")
        self.conf.write_text(conf + f"user {getpass.getuser()}\n")  # see ClinicBroker

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    def access(self, user: str, password: str | None = None) -> BrokerAccess:
        return BrokerAccess.from_url(
            self.url,
            username=user,
            password=password or self.passwords[user],
            ca_file=str(self.ca),
        )


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    binary = mosquitto_binary()
    if binary is None or shutil.which("mosquitto_passwd") is None:
        missing_service("mosquitto and mosquitto_passwd are needed: apt-get install -y mosquitto")
    assert binary is not None
    (tmp_path / "certs").mkdir()
    broker = SecureBroker(binary, tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def client(broker: SecureBroker, user: str, **kwargs: Any) -> aiomqtt.Client:
    return aiomqtt.Client(**broker.access(user).client_kwargs(), identifier=user, **kwargs)


async def test_station_to_logger_over_tls_with_accounts(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    db_url = str(tmp_path / "clinic.db")
    password = secure_broker.passwords["st-a"]
    settings = station_settings(
        "st-a",
        **{
            "session.pain_before": 4,
            "mqtt.username": "st-a",
            "mqtt.password": password,
            "mqtt.tls_ca": str(secure_broker.ca),
        },
    )
    assert password not in json.dumps(settings.model_dump(mode="json"))  # not in the snapshot
    async with running_logger(secure_broker.access("logger"), db_url):
        report = await run_station(settings, secure_broker.url, tmp_path, "sim?speed=max")
        await wait_until(lambda: session_ended(db_url, report["session_id"]), 10, "session_end")
        await asyncio.sleep(0.3)
    assert report["broker"] == secure_broker.url
    check_logged(db_url, report, tmp_path / "st-a.db")


async def test_acl_keeps_stations_in_their_own_topics(secure_broker: SecureBroker) -> None:
    a, b = Topics("clinic-demo", "st-a"), Topics("clinic-demo", "st-b")
    seen: list[tuple[str, bytes]] = []
    station_b_cmds: list[bytes] = []
    done = asyncio.Event()

    async with (
        client(secure_broker, "logger", protocol=aiomqtt.ProtocolVersion.V5) as watcher,
        client(secure_broker, "st-b") as station_b,
    ):
        await watcher.subscribe("vmf/v1/#", qos=1)
        await station_b.subscribe(a.cmd, qos=1)  # someone else's commands: not readable
        await station_b.subscribe(b.cmd, qos=1)

        async def watch() -> None:
            async for msg in watcher.messages:
                seen.append((str(msg.topic), bytes(msg.payload)))  # type: ignore[arg-type]
                if msg.payload == b"sentinel":
                    done.set()

        async def read_b() -> None:
            async for msg in station_b.messages:
                station_b_cmds.append(bytes(msg.payload))  # type: ignore[arg-type]

        tasks = [asyncio.create_task(watch()), asyncio.create_task(read_b())]
        gap = encode(MessageNumberer("S-x").envelope("gap", {"from_index": 0, "missing": 1}))
        async with client(secure_broker, "st-a") as station_a:
            await station_a.publish(b.event, gap, qos=1)  # into another station's tree
            await station_a.publish(a.cmd, make_command("stop", issuer="T", session="S"), qos=1)
            await station_a.publish(b.cmd, make_command("stop", issuer="T", session="S"), qos=1)
            await station_a.publish(a.event, gap, qos=1)  # its own tree: allowed
        async with client(secure_broker, "therapist-1") as therapist:
            await therapist.publish(a.cmd, b"for-a", qos=1)
            await therapist.publish(b.cmd, b"for-b", qos=1)
            await therapist.publish(a.event, b"sentinel", qos=1)  # therapists cannot do this
            await therapist.publish(a.status, b"sentinel", qos=1)  # nor this
        async with client(secure_broker, "st-a") as station_a:
            await station_a.publish(a.live, b"sentinel", qos=1)
        await asyncio.wait_for(done.wait(), 5)
        await asyncio.sleep(0.3)
        for task in tasks:
            task.cancel()
    topics = [t for t, _ in seen]
    assert topics == [a.event, a.cmd, b.cmd, a.live], seen
    assert [p for t, p in seen if t.endswith("/cmd")] == [b"for-a", b"for-b"]
    assert station_b_cmds == [b"for-b"]  # its own command only


async def test_wrong_password_and_plain_text_are_refused(secure_broker: SecureBroker) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            **secure_broker.access("st-a", password="wrong").client_kwargs(), timeout=3
        ):
            pass
    with pytest.raises(aiomqtt.MqttError):  # TLS port, no TLS
        async with aiomqtt.Client("127.0.0.1", secure_broker.port, username="st-a", timeout=3):
            pass
    untrusted = ssl.create_default_context()  # system CAs: the test CA is unknown
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            "127.0.0.1", secure_broker.port, tls_context=untrusted, timeout=3
        ):
            pass


@pytest.mark.parametrize("ending", ["stop", "emergency_stop"])
async def test_therapist_commands_act_and_refusals_are_logged(
    ending: str, secure_broker: SecureBroker, tmp_path: Path
) -> None:
    db_url = str(tmp_path / "clinic.db")
    settings = station_settings(
        "st-a",
        **{
            "protocol.reps": 30,  # long: the therapist ends it
            "mqtt.username": "st-a",
            "mqtt.password": secure_broker.passwords["st-a"],
            "mqtt.tls_ca": str(secure_broker.ca),
            "mqtt.therapists": ["therapist-1"],
        },
    )
    a = Topics("clinic-demo", "st-a")
    async with running_logger(secure_broker.access("logger"), db_url):
        session = asyncio.create_task(run_station(settings, secure_broker.url, tmp_path))
        db_has = lambda sql: bool(connect(db_url).query(sql))  # noqa: E731
        await wait_until(lambda: db_has("SELECT 1 FROM sessions"), 10, "session_start")
        sid = connect(db_url).query("SELECT session_id FROM sessions")[0][0]
        async with client(secure_broker, "therapist-1") as therapist:
            for cmd in (
                make_command("stop", issuer="T-99", session=sid),  # not on the list
                b'{"action": "stop"}',  # malformed
                make_command("change_band", issuer="therapist-1", session=sid,
                             low_pct=20, high_pct=50),
                make_command("pain", issuer="therapist-1", session=sid, pain_after=2),
                make_command(ending, issuer="therapist-1", session=None if ending != "stop"
                             else sid),
                # an emergency stop latches stimulation but leaves the session running
                *([make_command("stop", issuer="therapist-1", session=sid)]
                  if ending == "emergency_stop" else []),
            ):  # fmt: skip
                await therapist.publish(a.cmd, cmd, qos=1)
                await asyncio.sleep(0.05)
        report = await asyncio.wait_for(session, 10)
        await wait_until(lambda: session_ended(db_url, sid), 10, "session_end")
    assert report["stopped_by"] == "therapist_stop"
    db = connect(db_url)
    assert db.query("SELECT pain_after FROM sessions") == [(2,)]
    results = [
        json.loads(d) for (d,) in db.query(
            "SELECT detail_json FROM events WHERE type = 'command_result' ORDER BY msg_id"
        )
    ]  # fmt: skip
    extra = ending == "emergency_stop"
    assert [r["accepted"] for r in results] == [False, False, True, True, True] + [True] * extra
    assert results[4]["action"] == ending
    assert "therapist list" in results[0]["reason"] and "invalid" in results[1]["reason"]
    assert len(db.query("SELECT 1 FROM commands")) == 4 + extra  # the logger audits them


async def test_clients_turn_nagle_off_plain_and_over_tls(
    secure_broker: SecureBroker, mosquitto: Any
) -> None:
    """paho leaves Nagle on: a second small packet would wait ~40 ms for the broker's delayed
    ACK (bench: live snapshots p99 45 ms before, 4.5 ms after). Every client we open through
    `BrokerAccess` sets TCP_NODELAY on its connected socket."""
    for access in (BrokerAccess.from_url(mosquitto.url), secure_broker.access("logger")):
        async with aiomqtt.Client(**access.client_kwargs()) as c:
            sock = c._client.socket()
            assert isinstance(sock, socket.socket)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


async def test_a_message_the_broker_refuses_stays_in_the_outbox(
    secure_broker: SecureBroker,
) -> None:
    """A station account writing outside its own topics (a wrong `mqtt.username`): Mosquitto
    answers the MQTT 5 PUBACK with 0x87 "not authorized". That is not a delivery: the message
    stays at the head of the outbox (retried, logged) instead of being deleted as sent."""
    wrong = Topics("clinic-demo", "st-b")  # st-a's account may not write here
    numberer = MessageNumberer("S-wrong")
    publisher = MqttPublisher(
        secure_broker.url,
        wrong,
        client_id="st-a",
        access=secure_broker.access("st-a"),
        mqtt5=True,
    )
    runner = asyncio.create_task(publisher.run())
    try:
        publisher.publish(wrong.event, numberer.envelope("gap", {"from_index": 0, "missing": 1}))
        async with asyncio.timeout(10):
            while publisher.stats.refused_by_broker == 0:
                await asyncio.sleep(0.02)
        assert publisher.backlog == 1 and publisher.stats.published == 0
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
