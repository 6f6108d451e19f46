"""The paho intake acknowledges a message only on the connection it came on: after a reconnect
its packet id names nothing (or another message) at the broker, which redelivers it anyway.
Messages waiting at a disconnect are dropped (the broker still holds them)."""

from __future__ import annotations

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from feedback.clinic.intake import PahoIntake
from feedback.outputs.broker_access import BrokerAccess

OK = ReasonCode(PacketTypes.CONNACK, "Success")


def intake_with_recorded_acks() -> tuple[PahoIntake, list[int]]:
    intake = PahoIntake(BrokerAccess.from_url("mqtt://127.0.0.1:1"), "t", ["vmf/#"])
    acked: list[int] = []
    intake.client.ack_many = acked.extend  # type: ignore[method-assign]
    return intake, acked


def arrive(intake: PahoIntake, mid: int, qos: int = 1) -> None:
    intake._on_publish_packet(b"vmf/v1/c1/s1/event", b"{}", qos, mid)


def test_acks_go_only_on_the_connection_the_message_came_on() -> None:
    intake, acked = intake_with_recorded_acks()
    intake._on_connect(intake.client, None, None, OK)
    arrive(intake, 1)
    arrive(intake, 2, qos=0)  # QoS 0: nothing to acknowledge
    old = intake.take(10, 0)
    intake._on_connect(intake.client, None, None, OK)  # reconnected meanwhile
    arrive(intake, 1)  # the broker's redelivery, same packet id on the new connection
    new = intake.take(10, 0)
    intake.ack(old)
    assert acked == [] and intake.stats.stale_acks == 1  # would ack the wrong message
    intake.ack(new)
    assert acked == [1]


def test_negative_control_without_generations_the_stale_ack_would_go_out() -> None:
    intake, acked = intake_with_recorded_acks()
    arrive(intake, 7)
    old = intake.take(10, 0)
    intake.ack(old)  # same connection: acked, as the test above relies on
    assert acked == [7]


def test_waiting_messages_are_dropped_at_a_disconnect() -> None:
    intake, _ = intake_with_recorded_acks()
    arrive(intake, 1)
    arrive(intake, 2)
    intake._on_disconnect(intake.client, None, None, OK)
    assert intake.queued() == 0 and intake.stats.dropped_on_disconnect == 2


def test_shared_property_tables_decode_as_pahos_own() -> None:
    """The intake makes paho decode MQTT 5 properties with tables shared between packets (not
    rebuilt for each message): what a packet carries reads the same, and a packet without
    properties after one with them shows none (the attributes of the previous are cleared)."""
    import struct

    from paho.mqtt import _packet
    from paho.mqtt.enums import MQTTProtocolVersion
    from paho.mqtt.properties import Properties

    from feedback.clinic.intake import SharedTablesProperties

    PahoIntake(BrokerAccess.from_url("mqtt://127.0.0.1:1"), "t", ["vmf/#"])
    assert _packet.Properties is SharedTablesProperties  # type: ignore[attr-defined]
    sent = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    sent.UserProperty = [("a", "1"), ("b", "2")]
    sent.MessageExpiryInterval = 30
    sent.ContentType = "application/json"
    sent.SubscriptionIdentifier = [7]
    raw = sent.pack()  # type: ignore[no-untyped-call]
    expected = sent.json()  # type: ignore[no-untyped-call]
    for cls in (Properties, SharedTablesProperties):
        got = cls(PacketTypes.PUBLISH)
        got.unpack(raw)
        assert got.json() == expected, cls
        got.unpack(b"\x00")
        assert got.json() == {} and got.isEmpty(), cls
    topic = b"vmf/v1/c1/s1/event"
    packet = struct.pack("!H", len(topic)) + topic + struct.pack("!H", 9) + raw + b"{}"
    decoded = _packet.decode_publish(0x32, packet, MQTTProtocolVersion.MQTTv5)
    assert isinstance(decoded.properties, SharedTablesProperties)
    assert decoded.properties.json() == expected
    assert (decoded.topic, decoded.mid, decoded.qos, bytes(decoded.payload)) == (topic, 9, 1, b"{}")
