"""The station's command lane against a real Mosquitto: nothing a peer sends ends the listener,
the emergency stop has its own topic, a failing lane is restarted and reported, and the end line
says why messages wait (issue 11)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from feedback.broker import free_port
from feedback.control.gate import CommandBus, CommandGate, Verdict, make_command
from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.outputs.outbox import MemoryOutbox, Pending
from feedback.outputs.topics import MessageNumberer, Topics
from tests.conftest import MosquittoProcess

T = Topics("clinic-a", "st-1")
NESTED = b'{"a":' * 1000 + b"1" + b"}" * 1000


async def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)
    assert predicate(), what


@contextlib.asynccontextmanager
async def running(publisher: MqttPublisher) -> AsyncIterator[MqttPublisher]:
    task = asyncio.create_task(publisher.run())
    try:
        await wait_for(lambda: publisher.connected, "never connected")
        if publisher.on_estop is not None:
            await wait_for(lambda: publisher.estop_connected, "estop lane never connected")
        await asyncio.sleep(0.1)  # subscriptions made
        yield publisher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def station(url: str, **kwargs: Any) -> tuple[MqttPublisher, CommandGate, list[Verdict]]:
    verdicts: list[Verdict] = []
    gate = CommandGate(T, ["T-01"], CommandBus(), current_session=lambda: "S1",
                       on_verdict=verdicts.append)  # fmt: skip
    kwargs.setdefault("on_command", gate.handle)
    publisher = MqttPublisher(url, T, client_id="st-1", on_estop=gate.answer_estop, **kwargs)
    return publisher, gate, verdicts


async def test_issue_11_nested_command_does_not_kill_the_mqtt_task(
    mosquitto: MosquittoProcess,
) -> None:
    """Before: the nested payload on `cmd` raised RecursionError in the listener, the MQTT task
    died silently and the emergency stop sent 2 s later got no response."""
    publisher, gate, verdicts = station(mosquitto.url)
    numberer = MessageNumberer("S1")
    async with running(publisher), aiomqtt.Client("127.0.0.1", mosquitto.port) as therapist:
        await therapist.publish(T.cmd, NESTED, qos=1)
        await wait_for(lambda: gate.refused == 1, "nested payload not refused")
        await therapist.publish(T.cmd, make_command("emergency_stop", issuer="T-01",
                                                    session=None), qos=1)  # fmt: skip
        await wait_for(lambda: gate.bus.emergency_stop.is_set(), "emergency stop not obeyed")
        publisher.publish(T.event, numberer.envelope("gap", {"from_index": 0, "missing": 1}))
        await wait_for(lambda: publisher.stats.published == 1, "nothing published after it")
    assert "nested deeper" in verdicts[0].reason and verdicts[1].accepted


async def test_a_handler_that_raises_is_counted_and_the_listener_goes_on(
    mosquitto: MosquittoProcess,
) -> None:
    def broken(payload: bytes) -> None:
        raise RuntimeError("bug in a handler")

    publisher, gate, _ = station(mosquitto.url, on_command=broken)
    async with running(publisher), aiomqtt.Client("127.0.0.1", mosquitto.port) as therapist:
        for _ in range(5):
            await therapist.publish(T.cmd, b"anything", qos=1)
        await wait_for(lambda: publisher.stats.handler_errors == 5, "errors not counted")
        estop = make_command("emergency_stop", issuer="T-01", session=None)
        await therapist.publish(T.estop, estop, qos=1)
        await wait_for(lambda: gate.bus.emergency_stop.is_set(), "estop lane not obeyed")
    assert publisher.stats.estops_received == 1 and publisher.stats.commands_received == 5
    assert publisher.connected is False and publisher.stats.connects == 1  # never reconnected


class FailingOnce(MemoryOutbox):
    """An outbox whose first read fails, as a bug in the drain lane would."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def _fail_once(self) -> None:
        if not self.failed and len(self):
            self.failed = True
            raise ValueError("corrupt row")

    def head(self) -> Pending | None:
        self._fail_once()
        return super().head()

    def after(self, item_id: int) -> Pending | None:  # the drain's read since receipts
        self._fail_once()
        return super().after(item_id)


async def test_a_failing_lane_is_restarted_and_reported(mosquitto: MosquittoProcess) -> None:
    faults: list[tuple[str, str, int]] = []
    publisher, gate, _ = station(mosquitto.url, outbox=FailingOnce(),
                                 on_fault=lambda *f: faults.append(f))  # fmt: skip
    numberer = MessageNumberer("S1")
    async with running(publisher), aiomqtt.Client("127.0.0.1", mosquitto.port) as therapist:
        publisher.publish(T.event, numberer.envelope("gap", {"from_index": 0, "missing": 1}))
        await wait_for(lambda: publisher.stats.published == 1, "not published after restart")
        await therapist.publish(T.estop, make_command("emergency_stop", issuer="T-01",
                                                      session=None), qos=1)  # fmt: skip
        await wait_for(lambda: gate.bus.emergency_stop.is_set(), "commands dead after restart")
    assert faults == [("mqtt publisher", "ValueError: corrupt row", 1)]
    assert publisher.stats.lane_failures == 1 and publisher.stats.connects == 2


async def test_the_end_line_blames_the_broker_only_when_it_was_unreachable(
    mosquitto: MosquittoProcess,
) -> None:
    dead = MqttPublisher("mqtt://127.0.0.1:9", T, client_id="x", max_backoff_s=0.2)
    task = asyncio.create_task(dead.run())
    await wait_for(lambda: dead.stats.connect_failures > 0, "no attempt")
    task.cancel()
    assert dead.undelivered_reason().startswith("broker unreachable")
    publisher, _, _ = station(mosquitto.url)
    async with running(publisher):
        assert "unreachable" not in publisher.undelivered_reason()
        assert publisher.undelivered_reason().startswith("connected")


async def test_an_emergency_stop_on_its_topic_is_answered_on_the_ack_topic(
    mosquitto: MosquittoProcess,
) -> None:
    import json

    publisher, _, _ = station(mosquitto.url)
    answers: list[dict[str, Any]] = []
    async with running(publisher), aiomqtt.Client("127.0.0.1", mosquitto.port) as therapist:
        await therapist.subscribe(T.ack, qos=1)

        async def read() -> None:
            async for msg in therapist.messages:
                answers.append(json.loads(msg.payload))  # type: ignore[arg-type]

        reader = asyncio.create_task(read())
        estop = make_command("emergency_stop", issuer="T-01", session=None, msg_id=77)
        await therapist.publish(T.estop, estop, qos=1)
        await therapist.publish(T.estop, make_command("stop", issuer="T-01", session="S1"), qos=1)
        await wait_for(lambda: len(answers) == 2, "no answers")
        reader.cancel()
    from feedback.clinic.validation import check
    from feedback.outputs.topics import encode

    for answer in answers:
        check(T.ack, encode(answer))  # the contract holds
    assert [(a["command_msg_id"], a["accepted"], a["latched"]) for a in answers] == [
        (77, True, True), (None, False, True)]  # fmt: skip
    assert "takes only emergency_stop" in answers[1]["reason"]


def test_a_socket_closed_before_the_loop_watches_it_is_not_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The race behind the `Bad file descriptor` traceback: aiomqtt schedules `add_writer(fd)`
    from paho's thread, and the broker drops the connection before the loop runs it."""
    import socket

    from feedback.outputs import socket_race

    def race(install: bool) -> None:
        loop = asyncio.new_event_loop()
        try:
            if install:
                socket_race.ignore_closed_socket_races(loop)
            a, b = socket.socketpair()
            loop.call_soon(loop.add_writer, a.fileno(), lambda: None)
            a.close(), b.close()  # closed before the loop gets to it
            loop.run_until_complete(asyncio.sleep(0.01))
        finally:
            loop.close()

    def race_on_reused_fd(install: bool) -> None:
        """The loop still watches the fd number of a closed socket that a new one now holds."""
        loop = asyncio.new_event_loop()
        try:
            if install:
                socket_race.ignore_closed_socket_races(loop)
            a, b = socket.socketpair()
            loop.add_reader(a.fileno(), lambda: None)
            a.close(), b.close()
            c, d = socket.socketpair()  # the lowest free numbers: a's and b's
            loop.call_soon(loop.add_writer, c.fileno(), lambda: None)
            loop.run_until_complete(asyncio.sleep(0.01))
            c.close(), d.close()
        finally:
            loop.close()

    before = socket_race.closed_socket_races
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        race(install=True)
        race_on_reused_fd(install=True)
    assert socket_race.closed_socket_races == before + 2
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        race(install=False)  # the negative control: asyncio's handler prints the traceback
    assert any("Bad file descriptor" in str(r.exc_info) for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        race_on_reused_fd(install=False)
    assert any("No such file or directory" in str(r.exc_info) for r in caplog.records)


BROKER_DROPS = """
import asyncio, random, subprocess, sys, time
from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.outputs.topics import MessageNumberer, Topics
binary, conf, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
async def main():
    start = lambda: subprocess.Popen([binary, "-c", conf], stderr=subprocess.DEVNULL)
    broker = start(); await asyncio.sleep(0.3)
    t, n = Topics("c", "s"), MessageNumberer("S1")
    pubs = [MqttPublisher(f"mqtt://127.0.0.1:{port}", t, client_id=f"s{i}", max_backoff_s=0.3,
                          on_command=lambda p: None, on_estop=lambda p: None) for i in range(4)]
    tasks = [asyncio.create_task(p.run()) for p in pubs]
    async def feed():
        while True:
            for p in pubs:
                p.publish(t.event, n.envelope("gap", {"from_index": 0, "missing": 1}))
                p.publish_live_bytes(t.stream, b"x" * 300)
            await asyncio.sleep(0.005)
    f = asyncio.create_task(feed())
    rng = random.Random(int(sys.argv[4]))
    end = time.monotonic() + float(sys.argv[5])
    while time.monotonic() < end:
        await asyncio.sleep(rng.uniform(0.05, 0.5))
        broker.kill(); broker.wait()  # kill -9, mid-session
        await asyncio.sleep(rng.uniform(0.0, 0.2))
        broker = start()
    broker.kill(); broker.wait()
    f.cancel()
    for x in tasks: x.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
asyncio.run(main())
"""


def test_no_traceback_on_stderr_when_the_broker_is_killed(tmp_path: Path) -> None:
    """Four stations publishing (outbox, live, stream) and listening (commands, stop) while
    Mosquitto is killed with SIGKILL again and again: nothing reaches stderr but warnings."""
    import subprocess
    import sys

    from tests.conftest import missing_service, mosquitto_binary

    binary = mosquitto_binary()
    if binary is None:
        missing_service("mosquitto is not installed")
    assert binary is not None
    port = free_port()
    conf = tmp_path / "m.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    run = subprocess.run(
        [sys.executable, "-c", BROKER_DROPS, binary, str(conf), str(port), "1", "8"],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "Bad file descriptor" not in run.stderr, run.stderr


async def test_a_supervised_task_that_dies_is_restarted_and_reported() -> None:
    from feedback.supervision import Supervisor

    runs: list[int] = []
    events: list[tuple[str, dict[str, object]]] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("lost its mind")
        if len(runs) == 2:
            return  # ending by itself is a failure too for a task that runs until cancelled
        await asyncio.Event().wait()

    children = Supervisor(event=lambda kind, detail: events.append((kind, detail)))
    children.task("session_log", flaky, restart=True)
    await wait_for(lambda: len(runs) == 3, "not restarted")
    await children.close()
    kinds = [kind for kind, _ in events]
    assert kinds == ["child_died", "child_restarted", "child_died", "child_restarted"], kinds
    assert "lost its mind" in str(events[0][1]["exit"])
    assert children.report()["session_log"]["restarts"] == 2
