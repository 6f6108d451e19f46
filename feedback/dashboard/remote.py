"""The remote therapist dashboard: watch one or several stations of a clinic through the broker.

    python -m feedback.dashboard.remote --broker mqtts://broker:8883 --clinic C \\
        [--station S ...] [--config FILE.toml] [--screenshot PATH.png] [--seconds N]

Subscribes to each station's binary `stream` and its `status`, `session`, `rep` and `event`
messages (all stations of the clinic without --station) and draws them with the same therapist
widgets as the local dashboard, one page per station behind a station picker. Controls become
therapist commands (docs/mqtt.md): EMERGENCY STOP, Set band, Stop session, signed with
`mqtt.therapist_id`; the station checks them like any other command. Broker credentials and TLS
come from the config file or VMF_MQTT__* variables, never from argv.

The MQTT client runs its own asyncio loop in a thread; the Qt side only reads the model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import threading
from collections.abc import Sequence

import aiomqtt

from devices.backoff import Backoff
from feedback.control.gate import make_command
from feedback.dashboard.controls import Control, EmergencyStopRequest, SetBand, StartStop
from feedback.dashboard.remote_model import RemoteModel
from feedback.outputs.broker_access import BrokerAccess, describe
from feedback.outputs.socket_race import ignore_closed_socket_races
from feedback.outputs.topics import TOPIC_ROOT, Topics

log = logging.getLogger(__name__)
LEAVES_QOS = (("stream", 0), ("status", 1), ("session", 1), ("rep", 1), ("event", 1), ("ack", 1))


def command_for(control: Control, issuer: str, session: str | None) -> bytes | str:
    """The command a dashboard control becomes, or why it cannot be sent from afar."""
    if isinstance(control, EmergencyStopRequest):  # acts whatever the session: never wait
        return make_command("emergency_stop", issuer=issuer, session=session,
                            reason=f"remote {control.source}")  # fmt: skip
    if session is None:
        return "no session seen on this station yet"
    if isinstance(control, SetBand):
        return make_command("change_band", issuer=issuer, session=session,
                            low_pct=control.low_pct, high_pct=control.high_pct)  # fmt: skip
    if isinstance(control, StartStop) and not control.start:
        return make_command("stop", issuer=issuer, session=session)
    return f"{type(control).__name__} is done at the station, not remotely"


class RemoteClient:
    def __init__(
        self,
        access: BrokerAccess,
        model: RemoteModel,
        *,
        stations: Sequence[str] = (),
        therapist_id: str,
        client_id: str = "",
    ) -> None:
        self.access = access
        self.model = model
        self.stations = tuple(stations)
        self.therapist_id = therapist_id
        self.client_id = client_id
        self.connected = asyncio.Event()
        self.sent: list[tuple[str, str]] = []  # (station, action) of every command sent
        self.failures = 0  # the client failed for another reason than the connection
        self.backoff = Backoff(initial_s=0.2, max_s=5.0)
        self._outgoing: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None

    def filters(self) -> list[tuple[str, int]]:
        names = self.stations or ("+",)
        base = f"{TOPIC_ROOT}/{self.model.clinic}"
        return [(f"{base}/{s}/{leaf}", qos) for s in names for leaf, qos in LEAVES_QOS]

    def submit(self, station: str, control: Control) -> str:
        """From any thread (the Qt side): send the control's command; returns what happened."""
        if not self.therapist_id:
            return "no mqtt.therapist_id configured: commands cannot be signed"
        cmd = command_for(control, self.therapist_id, self.model.session_of(station))
        if isinstance(cmd, str):
            return cmd
        loop = self._loop
        if loop is None:
            return "not connected yet"
        topics = Topics(self.model.clinic, station)
        # The emergency stop goes on its own topic, which the station reads before anything else.
        topic = topics.estop if isinstance(control, EmergencyStopRequest) else topics.cmd
        loop.call_soon_threadsafe(self._outgoing.put_nowait, (topic, cmd))
        return f"sent {type(control).__name__} to {station}"

    async def run(self) -> None:
        """Subscribe, feed the model, send commands; reconnect with backoff until cancelled."""
        self._loop = asyncio.get_running_loop()
        ignore_closed_socket_races()
        while True:
            try:
                async with aiomqtt.Client(
                    **self.access.client_kwargs(), identifier=self.client_id or None,
                    keepalive=10, timeout=5.0,
                ) as client:  # fmt: skip
                    await client.subscribe(self.filters())
                    self.connected.set()
                    self.backoff.reset()
                    async with asyncio.TaskGroup() as tasks:
                        tasks.create_task(self._read(client))
                        tasks.create_task(self._send(client))
            except* aiomqtt.MqttError as group:
                log.warning("broker connection lost or refused: %s", group.exceptions[0])
            except* Exception as group:  # a bug, not the network: log it, connect again
                self.failures += 1
                log.error("remote dashboard client failed; reconnecting",
                          exc_info=group.exceptions[0])  # fmt: skip
            self.connected.clear()
            await asyncio.sleep(self.backoff.next())

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if isinstance(payload, bytes | bytearray):
                self.model.on_message(str(message.topic), bytes(payload))

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            topic, cmd = await self._outgoing.get()
            await client.publish(topic, cmd, qos=1)  # a command is never latest-wins
            self.sent.append((topic.split("/")[3], str(json.loads(cmd)["action"])))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m feedback.dashboard.remote", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--broker", required=True, metavar="URL", help="mqtt://host:port or mqtts://")
    p.add_argument("--clinic", required=True, help="clinic id")
    p.add_argument("--station", action="append", default=[], help="station id (repeatable)")
    p.add_argument("--config", metavar="FILE.toml", help="settings ([mqtt] credentials, TLS, "
                   "therapist_id)")  # fmt: skip
    p.add_argument("--screenshot", metavar="PATH.png", help="save the window when closing")
    p.add_argument("--seconds", type=float, help="close by itself after this long")
    return p


def main(argv: list[str] | None = None) -> int:
    from config.loader import ConfigError, load_settings
    from feedback.outputs.broker_access import broker_access

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args.config)
        access = broker_access(settings, args.broker)
    except (ConfigError, ValueError) as exc:
        print(f"remote dashboard: {exc}", file=sys.stderr)
        return 2
    model = RemoteModel(args.clinic)
    client = RemoteClient(access, model, stations=args.station,
                          therapist_id=settings.mqtt.therapist_id)  # fmt: skip
    thread = threading.Thread(target=_run_client, args=(client,), daemon=True, name="vmf-mqtt")
    thread.start()
    print(f"watching {args.clinic}/{','.join(args.station) or '+'} on {describe(access)}",
          file=sys.stderr)  # fmt: skip
    from feedback.dashboard.remote_window import run_window

    return run_window(model, client, args.station, args.screenshot, args.seconds)


def _run_client(client: RemoteClient) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(client.run())


if __name__ == "__main__":
    sys.exit(main())
