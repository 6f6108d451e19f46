"""Composes a station's session: which outputs it feeds, in which order.

The order is the order each item reaches them: the MQTT messages first (a cue's latency is the
product), then the local log, the view, the stream, the recorder and LSL; the dashboard and its
audio are added by whoever starts them (feedback.app).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from config.settings import Settings
from devices.base import Device
from feedback.control.bus import CommandBus
from feedback.outputs.base import Output
from feedback.outputs.mqtt_session import MqttSessionOutput
from feedback.outputs.session_log import SessionLogOutput
from feedback.outputs.session_store import SessionStore
from feedback.outputs.terminal import ViewState
from feedback.outputs.topics import Topics
from feedback.outputs.view import ViewOutput
from feedback.session import Session

if TYPE_CHECKING:
    # Annotations only: aiomqtt and paho are imported where a publisher is built (app).
    from feedback.outputs.mqtt_publisher import MqttPublisher


def station_outputs(
    settings: Settings,
    publisher: MqttPublisher | None,
    store: SessionStore,
    *,
    view: ViewState | None = None,
    record: Path | None = None,
) -> list[Output]:
    """The standard outputs; without a publisher (offline) nothing goes to MQTT."""
    s = settings.session
    topics = Topics(s.clinic, s.station)
    outputs: list[Output] = []
    if publisher is not None:
        outputs.append(MqttSessionOutput(publisher, topics, settings.mqtt.live_hz))
    outputs.append(SessionLogOutput(store))
    if view is not None:
        outputs.append(ViewOutput(view))
    if publisher is not None and settings.mqtt.stream_hz > 0:
        from feedback.outputs.stream_source import StreamOutput

        outputs.append(StreamOutput(publisher, topics.stream, settings.mqtt.stream_hz))
    if record is not None:
        from feedback.outputs.recorder import RecorderOutput

        outputs.append(RecorderOutput(record))
    if settings.lsl.publish:
        from feedback.outputs.lsl_outlet import LslOutput

        outputs.append(LslOutput(settings.lsl.prefix))
    return outputs


def compose(
    settings: Settings,
    device: Device,
    publisher: MqttPublisher,
    store: SessionStore,
    *,
    duration_s: float | None,
    view: ViewState | None = None,
    record: Path | None = None,
    commands: CommandBus | None = None,
    extra: Iterable[Output] = (),
) -> Session:
    """A session runner with the station's standard outputs (and `extra` after them)."""
    outputs = station_outputs(settings, publisher, store, view=view or ViewState(), record=record)
    return Session(
        settings,
        device,
        [*outputs, *extra],
        duration_s=duration_s,
        commands=commands,
        mqtt=publisher,
    )
