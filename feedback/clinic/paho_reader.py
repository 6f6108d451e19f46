"""paho's MQTT client with a reading path for a flood of PUBLISH packets (the logger's intake).

paho reads each packet with three or four `recv` calls (the first byte, the length a byte at a
time, then the rest) and makes every PUBLISH an MQTTMessage with decoded MQTT 5 properties, a
debug log line and a topic match: ~35 us of the logger's CPU a message in a drain, as much as
its whole store (bench/profiled_logger.py; two loggers on two cores share them with PostgreSQL
and the broker, so every microsecond of it is throughput lost). Here `loop_read` takes what the
socket holds in one `recv`, cuts it into packets, hands each QoS 0/1 PUBLISH's topic, payload,
QoS and packet id straight to `on_publish_packet`, and gives paho every other packet (CONNACK,
SUBACK, PUBACK of the receipts, PINGRESP, DISCONNECT, QoS 2) as its own `_packet_read` would.

What the PUBLISH path leaves out, and why that is safe for the logger: its properties (it
reads none; it sets no Topic Alias Maximum, so the broker sends no alias, and paho does not
resolve them either), retain and dup (a redelivery is recognised by the store), and the
automatic PUBACK (the logger acknowledges by hand after the commit: `ack_many`, one write for
a batch instead of a packet, a syscall and a wake-up of paho's thread for each message).
It relies on paho 2.x's internals (`_in_packet`, `_packet_handle`, `_loop_rc_handle`):
tests/clinic/test_paho_reader.py decodes the same packets both ways, cut at every byte.
"""

from __future__ import annotations

import contextlib
import select
import struct
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.exception import MalformedPacket

PUBLISH, PUBACK = 0x30, 0x40
READ_BYTES = 256 * 1024  # one recv: about 800 logger messages
_PUBACK = struct.Struct("!BBH")

# (topic bytes, payload, qos, packet id); called in paho's network thread
OnPublishPacket = Callable[[bytes, bytes, int, int], None]


class MalformedPublish(ValueError):
    pass


def split_publish(header: int, body: bytes) -> tuple[bytes, bytes, int, int]:
    """An MQTT 5 PUBLISH's topic, payload, QoS and packet id (0 at QoS 0), its properties
    skipped; MalformedPublish if its lengths do not add up."""
    qos = (header >> 1) & 3
    end = len(body)
    if end < 2:
        raise MalformedPublish("no topic length")
    p = 2 + (body[0] << 8 | body[1])
    topic = body[2:p]
    mid = 0
    if qos:
        if p + 2 > end:
            raise MalformedPublish("no packet id")
        mid = body[p] << 8 | body[p + 1]
        p += 2
    props, p = _varint(body, p, end)
    p += props
    if p > end:
        raise MalformedPublish("properties past the end")
    return topic, body[p:], qos, mid


def _varint(buf: bytes | bytearray, p: int, end: int) -> tuple[int, int]:
    """An MQTT variable byte integer at p: (value, position after it); MalformedPublish if it
    is longer than 4 bytes, or cut off at `end` (for a packet's length in a read buffer: not
    all of it has arrived yet, which the caller tells apart)."""
    value, shift = 0, 0
    for i in range(p, min(end, p + 4)):
        b = buf[i]
        value |= (b & 127) << shift
        if not b & 128:
            return value, i + 1
        shift += 7
    if end - p >= 4:
        raise MalformedPublish("length longer than 4 bytes")
    raise MalformedPublish("length cut off")


class BatchReadingClient(mqtt.Client):
    def __init__(self, client_id: str, on_publish_packet: OnPublishPacket) -> None:
        super().__init__(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self._on_publish_packet = on_publish_packet
        self._read_buffer = bytearray()
        # Set by the reader's owner from the callback (paho's thread) and cleared from any
        # thread with resume_reading(); the only transitions, both under the owner's lock.
        self._reading_paused = False
        self._held = False  # whole packets left in the read buffer at a pause

    def pause_reading(self) -> None:
        """Read no more from the socket (call it from on_publish_packet): what follows stays in
        the kernel's buffer and then the broker's, so TCP holds the broker back. Writes (acks,
        receipts, pings) go on."""
        self._reading_paused = True

    def resume_reading(self) -> None:
        self._reading_paused = False
        if self._sockpairW is not None:  # wake paho's select, which does not watch the socket
            with contextlib.suppress(BlockingIOError):
                self._sockpairW.send(b"0")

    @property
    def reading_paused(self) -> bool:
        return self._reading_paused

    # what was buffered belongs to the connection that ended
    def _sock_close(self) -> None:
        self._read_buffer.clear()
        self._held = False
        super()._sock_close()

    def reconnect(self) -> MQTTErrorCode:
        self._read_buffer.clear()
        self._held = False
        return super().reconnect()

    def ack_many(self, mids: Iterable[int]) -> None:
        """PUBACK (success, MQTT 5's short form) for each packet id, in one write."""
        packet = b"".join([_PUBACK.pack(PUBACK, 2, mid) for mid in mids])
        if packet:
            self._packet_queue(PUBACK, packet, 0, 0)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        sock = self._sock
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        try:
            data = self._sock_recv(READ_BYTES)
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        except OSError:
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        if not data:
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        self._read_buffer += data
        return self._take_buffered(sock)

    def _take_buffered(self, sock: Any) -> MQTTErrorCode:
        """Hand on the whole packets in the read buffer, up to a pause; keep the rest."""
        buf = self._read_buffer
        self._held = False
        try:
            used, rc = self._handle_packets(buf, sock)
        except MalformedPublish:
            buf.clear()
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_PROTOCOL)
        if self._sock is sock:
            del buf[:used]
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return self._loop_rc_handle(rc)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_packets(self, buf: bytearray, sock: Any) -> tuple[int, MQTTErrorCode]:
        """Every whole packet in buf: (bytes used, paho's code for the first failure)."""
        pos, end = 0, len(buf)
        on_publish = self._on_publish_packet
        while end - pos >= 2:
            header = buf[pos]
            try:
                length, start = _varint(buf, pos + 1, end)
            except MalformedPublish:
                if end - pos - 1 >= 4:
                    raise
                break  # the length is not all here yet
            stop = start + length
            if stop > end:
                break
            body = bytes(buf[start:stop])
            pos = stop
            if header & 0xF0 == PUBLISH and (header >> 1) & 3 < 2:
                on_publish(*split_publish(header, body))
                if self._reading_paused:
                    self._held = pos < end
                    break
                continue
            rc = self._paho_packet(header, length, body)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._sock is not sock:
                return pos, rc
        return pos, MQTTErrorCode.MQTT_ERR_SUCCESS

    def _loop(self, timeout: float = 1.0) -> MQTTErrorCode:
        """paho's loop, but while reading is paused: wait for writes and the resume only."""
        sock = self._sock
        if sock is None:
            return super()._loop(timeout)
        if self._held and not self._reading_paused:
            rc = self._take_buffered(sock)  # what a pause left in the buffer comes first
            if rc or self._sock is None:
                return rc
        if not self._reading_paused:
            return super()._loop(timeout)
        wake = [] if self._sockpairR is None else [self._sockpairR]
        try:
            readable, writable, _ = select.select(wake, [sock] if self.want_write() else [],
                                                  [], timeout)  # fmt: skip
            # Bytes waiting unread are the broker heard from: no keepalive timeout while the
            # pause (not the broker) keeps its PINGRESP unread.
            heard = bool(select.select([sock], [], [], 0)[0])
        except (TypeError, ValueError, OSError):  # the socket closed meanwhile
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if readable:
            with contextlib.suppress(BlockingIOError):
                self._sockpairR.recv(10000)  # type: ignore[union-attr]
        if heard:
            with self._msgtime_mutex:
                self._last_bytes_received = mqtt.time_func()
            self._ping_t = 0
        if writable:
            rc = self.loop_write()
            if rc or self._sock is None:
                return rc
        return self.loop_misc()

    def _paho_packet(self, header: int, length: int, body: bytes) -> MQTTErrorCode:
        """One whole packet through paho's own handler, set up as its `_packet_read` leaves
        it."""
        self._in_packet = {
            "command": header,
            "have_remaining": 1,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": length,
            "packet": bytearray(body),
            "to_process": 0,
            "pos": 0,
        }
        try:
            rc = self._packet_handle()
        except MalformedPacket:
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet = {
            "command": 0,
            "have_remaining": 0,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": 0,
            "packet": bytearray(b""),
            "to_process": 0,
            "pos": 0,
        }
        return rc
