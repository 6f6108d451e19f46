"""A QoS 1 PUBLISH written to paho's socket at once: the cue's short way onto the wire.

paho's own send path (`publish`, then `loop_write`) builds the packet through checks, a log
call per packet, a byte to its wake-up socket pair and, under aiomqtt, a write watch added with
`call_soon_threadsafe` (a write to the event loop's self-pipe) that `MqttPublisher` then has to
take away again. Measured on this project's machine with Mosquitto on loopback: 190 µs at the
median against 70 µs for the same packet written here (bench/cue_stages.py, "appended ->
written").

What it keeps of paho: the message is entered in paho's table of outgoing messages under the
packet id paho hands out, so paho matches its PUBACK and calls `on_publish` exactly as for a
message of its own, and counts it in flight. What it does not overtake: when paho has bytes
waiting (a partial write, a PINGREQ, a live message), the packet goes into paho's queue behind
them. What the socket does not take at once goes into paho's queue too, and paho's write watch
writes it, as paho does with its own.

Bound to one paho version (PAHO): with any other, `publish_qos1` is paho's own `publish` and
its caller writes the socket as before. Under aiomqtt paho runs on the event loop's thread
only, so nothing else touches its tables meanwhile.
"""

from __future__ import annotations

import ssl
import struct
import time
from typing import Any

import paho.mqtt
from paho.mqtt.client import PUBLISH, MQTTMessage, mqtt_ms_wait_for_puback

PAHO = "2.2.0"  # the version whose internals this module was written and tested against
DIRECT = paho.mqtt.__version__ == PAHO

MQTT_ERR_NO_CONN = 4  # paho's MQTTErrorCode.MQTT_ERR_NO_CONN


def publish_packet(topic: bytes, payload: bytes, mid: int, retain: bool, mqtt5: bool) -> bytes:
    """The PUBLISH packet (QoS 1, not a duplicate), as paho's `_send_publish` lays it out."""
    remaining = 2 + len(topic) + 2 + len(payload) + (1 if mqtt5 else 0)
    header = bytearray((0x32 | retain,))  # PUBLISH, QoS 1
    while True:
        byte, remaining = remaining & 0x7F, remaining >> 7
        header.append(byte | 0x80 if remaining else byte)
        if not remaining:
            break
    header += struct.pack("!H", len(topic))
    properties = b"\x00" if mqtt5 else b""  # MQTT 5: an empty property list
    return b"".join((header, topic, struct.pack("!H", mid), properties, payload))


def publish_qos1(
    client: Any, topic: str, payload: bytes, retain: bool, *, mqtt5: bool
) -> tuple[int, int]:
    """Send a QoS 1 message on paho `client`'s connection: (paho's rc, packet id)."""
    if not DIRECT:
        info = client.publish(topic, payload, 1, retain)
        return info.rc, info.mid
    sock = client.socket()
    if sock is None:
        return MQTT_ERR_NO_CONN, 0
    topic_bytes = topic.encode()
    if len(topic_bytes) > 65535:  # as paho's publish: the length field has two bytes
        raise ValueError("a topic must be shorter than 65,536 bytes")
    mid = client._mid_generate()
    message = MQTTMessage(mid, topic_bytes)
    message.timestamp = time.monotonic()
    message.payload = payload
    message.qos = 1
    message.retain = retain
    message.state = mqtt_ms_wait_for_puback
    client._out_messages[mid] = message
    client._inflight_messages += 1
    packet = publish_packet(topic_bytes, payload, mid, retain, mqtt5)
    written = 0
    if not client.want_write():  # nothing of paho's waits to go first
        try:
            written = sock.send(packet)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass  # full: paho's queue takes it, and its write watch
        except OSError:
            pass  # paho's own write below meets the error and ends the connection its way
    if written < len(packet):
        client._out_packet.append(
            {
                "command": PUBLISH,
                "mid": mid,
                "qos": 1,
                "pos": written,
                "to_process": len(packet) - written,
                "packet": packet,
                "info": message.info,
            }
        )
        # paho's write watch writes it, as it would have written its own. Not `loop_write`
        # here: from within paho's PUBACK callback a write error would close the socket under
        # paho's callback lock, which it then waits for (a deadlock).
        client._call_socket_register_write()
    return 0, mid
