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

from feedback.clinic.db import connect
from feedback.control.gate import make_command
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
# Station accounts are "<clinic>/<station>" (deploy/mosquitto/acl); "clinic-x/st-a" is a station
# of another clinic that happens to have the same station id.
ST_A, ST_B, OTHER_CLINIC_ST_A = "clinic-demo/st-a", "clinic-demo/st-b", "clinic-x/st-a"
ACCOUNTS = ["logger", "therapist-1", ST_A, ST_B, OTHER_CLINIC_ST_A]


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
    password = secure_broker.passwords[ST_A]
    settings = station_settings(
        "st-a",
        **{
            "session.pain_before": 4,
            "mqtt.username": ST_A,
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
        client(secure_broker, ST_B) as station_b,
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
        async with client(secure_broker, ST_A) as station_a:
            await station_a.publish(b.event, gap, qos=1)  # into another station's tree
            await station_a.publish(a.cmd, make_command("stop", issuer="T", session="S"), qos=1)
            await station_a.publish(b.cmd, make_command("stop", issuer="T", session="S"), qos=1)
            await station_a.publish(a.event, gap, qos=1)  # its own tree: allowed
        async with client(secure_broker, "therapist-1") as therapist:
            await therapist.publish(a.cmd, b"for-a", qos=1)
            await therapist.publish(b.cmd, b"for-b", qos=1)
            await therapist.publish(a.event, b"sentinel", qos=1)  # therapists cannot do this
            await therapist.publish(a.status, b"sentinel", qos=1)  # nor this
        async with client(secure_broker, ST_A) as station_a:
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
            **secure_broker.access(ST_A, password="wrong").client_kwargs(), timeout=3
        ):
            pass
    with pytest.raises(aiomqtt.MqttError):  # TLS port, no TLS
        async with aiomqtt.Client("127.0.0.1", secure_broker.port, username=ST_A, timeout=3):
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
            "mqtt.username": ST_A,
            "mqtt.password": secure_broker.passwords[ST_A],
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
        access=secure_broker.access(ST_A),
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


async def publish_then_see(
    broker: SecureBroker, attempts: list[tuple[str, str, bytes]]
) -> list[tuple[str, bytes]]:
    """Each (account, topic, payload) published in turn; returns what a reader of the whole
    tree saw, up to a sentinel that an allowed station publishes last."""
    seen: list[tuple[str, bytes]] = []
    done = asyncio.Event()
    sentinel = Topics("clinic-demo", "st-a").live
    async with client(broker, "logger") as watcher:
        await watcher.subscribe("vmf/v1/#", qos=1)

        async def watch() -> None:
            async for msg in watcher.messages:
                seen.append((str(msg.topic), bytes(msg.payload)))  # type: ignore[arg-type]
                if msg.payload == b"sentinel":
                    done.set()

        task = asyncio.create_task(watch())
        for account, topic, payload in [*attempts, (ST_A, sentinel, b"sentinel")]:
            kwargs = broker.access(account).client_kwargs()
            async with aiomqtt.Client(**kwargs, identifier=f"{account}-try") as c:
                await c.publish(topic, payload, qos=1)
        await asyncio.wait_for(done.wait(), 5)
        task.cancel()
    return seen[:-1]


async def test_issue_11_a_station_id_cannot_be_used_in_another_clinic(
    secure_broker: SecureBroker,
) -> None:
    """Before: the pattern `vmf/v1/+/%u/...` let station st-a write into any clinic's tree
    under its own id. Now the account is "<clinic>/<station>", and only its own tree is open."""
    other_clinic = Topics("clinic-x", "st-a")
    ours = Topics("clinic-demo", "st-a")
    seen = await publish_then_see(secure_broker, [
        (ST_A, other_clinic.event, b"a into clinic-x"),  # refused
        (OTHER_CLINIC_ST_A, ours.session, b"clinic-x's st-a into clinic-demo"),  # refused
        (OTHER_CLINIC_ST_A, other_clinic.event, b"clinic-x's st-a at home"),  # allowed
        (ST_A, ours.event, b"a at home"),  # allowed
    ])  # fmt: skip
    assert seen == [(other_clinic.event, b"clinic-x's st-a at home"), (ours.event, b"a at home")]


async def test_issue_11_station_patterns_give_other_accounts_nothing(
    secure_broker: SecureBroker,
) -> None:
    """Before: the station patterns applied to every account, so `therapist-1` (or `logger`)
    could publish as a station named like its account: vmf/v1/<clinic>/therapist-1/event."""
    seen = await publish_then_see(secure_broker, [
        ("therapist-1", Topics("clinic-demo", "therapist-1").event, b"therapist as station"),
        ("therapist-1", Topics("clinic-demo", "therapist-1").session, b"therapist as station"),
        ("logger", Topics("clinic-demo", "logger").status, b"logger as station"),
        ("logger", Topics("clinic-demo", "st-a").cmd, b"logger commands"),
    ])  # fmt: skip
    assert seen == []


async def test_emergency_stop_topic_and_answers_follow_the_acl(
    secure_broker: SecureBroker,
) -> None:
    a, b = Topics("clinic-demo", "st-a"), Topics("clinic-demo", "st-b")
    got_a: list[tuple[str, bytes]] = []
    got_b: list[tuple[str, bytes]] = []
    async with client(secure_broker, ST_A) as station_a, client(secure_broker, ST_B) as station_b:
        await station_a.subscribe(a.estop, qos=1)
        await station_b.subscribe(a.estop, qos=1)  # another station's stops: not readable
        await station_b.subscribe(b.estop, qos=1)

        async def read(c: aiomqtt.Client, into: list[tuple[str, bytes]]) -> None:
            async for msg in c.messages:
                into.append((str(msg.topic), bytes(msg.payload)))  # type: ignore[arg-type]

        tasks = [asyncio.create_task(read(station_a, got_a)),
                 asyncio.create_task(read(station_b, got_b))]  # fmt: skip
        kwargs = secure_broker.access(ST_B).client_kwargs()
        async with aiomqtt.Client(**kwargs, identifier="st-b-writer") as writer:
            await writer.publish(a.estop, b"from a station", qos=1)  # stations cannot send it
        async with client(secure_broker, "therapist-1") as therapist:
            await therapist.publish(a.estop, b"stop a", qos=1)
            await therapist.publish(b.estop, b"stop b", qos=1)
        await asyncio.sleep(0.5)
        for task in tasks:
            task.cancel()
    assert got_a == [(a.estop, b"stop a")] and got_b == [(b.estop, b"stop b")]
    seen = await publish_then_see(secure_broker, [
        (ST_A, a.ack, b"a answers"),  # its own answer topic
        (ST_A, b.ack, b"a answers for b"),  # refused
    ])  # fmt: skip
    assert seen == [(a.ack, b"a answers")]
