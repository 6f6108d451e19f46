"""Turns the firmware's byte stream into `SampleBlock`s: one place for every byte transport.

Serial, BLE and the in-process simulator all carry the same framed protocol; each hands the
bytes it receives to `FramedSampleStream.feed` and gets blocks back. Frames are decoded by the
sans-I/O `firmware_bridge.Connection`; here they are scaled to millivolts and time-stamped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from devices.base import HostCommand, LinkStats, SampleBlock, StreamEvent
from firmware_bridge import (
    Connection,
    DeviceInfo,
    Heartbeat,
    InfoRequest,
    ProtocolErrorEvent,
    Role,
    SampleFrame,
    SampleGap,
    Status,
)
from firmware_bridge.clock import ClockMapper
from firmware_bridge.connection import NEED_DATA

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StreamIdentity:
    """What a decoder learned (or was told) about the stream: enough to build `DeviceInfo`."""

    rate_hz: float
    channels: tuple[str, ...]
    firmware_version: str = ""
    serial: str = ""


class FramedSampleStream:
    def __init__(self, stats: LinkStats) -> None:
        self.connection = Connection(Role.HOST)
        self.clock = ClockMapper()
        self.device_info: DeviceInfo | None = None
        self.last_status: Status | None = None
        self.stats = stats
        self.events: list[StreamEvent] = []
        self._pending: list[SampleFrame] = []
        # The wire counter is u32 (wraps after ~24 days at 2 kHz); blocks carry an unwrapped one.
        self._epoch = 0
        self._last_raw: int | None = None
        self._heartbeats = 0

    # -- the `devices.link.SampleDecoder` side: what a transport needs besides `feed` ------------

    def identity(self) -> StreamIdentity | None:
        info = self.device_info
        if info is None:
            return None
        return StreamIdentity(
            info.sample_rate_hz, info.channel_roles, info.firmware_version, info.serial
        )

    def hello(self) -> bytes:
        # The device sends DeviceInfo at power-on, but a host that opens the port later (or
        # reconnects) has missed it: ask again.
        return self.connection.send(InfoRequest())

    def heartbeat(self) -> bytes:
        self._heartbeats = (self._heartbeats + 1) % 2**32
        return self.connection.send(Heartbeat(self._heartbeats))

    def command(self, command: HostCommand) -> bytes:
        return self.connection.send(command)

    def take_events(self) -> list[StreamEvent]:
        events, self.events = self.events, []
        return events

    def feed(self, data: bytes, host_time: float) -> list[SampleBlock]:
        """Decode `data`; return the sample blocks it completed (contiguous frames merged)."""
        self.connection.receive_data(data)
        blocks: list[SampleBlock] = []
        while True:
            event = self.connection.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, SampleFrame):
                if self.device_info is None:
                    self._discard_before_info(event)
                    continue
                self.clock.update(event.device_time_us, host_time)
                self._pending.append(event)
            elif isinstance(event, SampleGap) and self.device_info is None:
                continue  # between samples that are dropped anyway: nothing is lost
            elif isinstance(event, SampleGap):
                blocks.extend(self._flush(host_time))
                self.stats.gaps += 1
                self.stats.samples_lost += max(event.missing, 0)
                log.warning("sample gap: %d samples missing at %d", event.missing, event.expected)
            elif isinstance(event, DeviceInfo):
                blocks.extend(self._flush(host_time))
                self.device_info = event
            elif isinstance(event, ProtocolErrorEvent):
                self.stats.protocol_errors += 1
                log.warning("protocol error from device: %s %s", event.kind, event.detail)
            else:
                if isinstance(event, Status):
                    self.last_status = event
                self.events.append(StreamEvent(event, host_time))
        blocks.extend(self._flush(host_time))
        return blocks

    def _discard_before_info(self, frame: SampleFrame) -> None:
        # Samples before the device said who it is cannot be scaled. A port opened while the
        # device streams always holds some, so they are counted apart from errors and logged once.
        if self.stats.samples_before_info == 0:
            log.info(
                "dropping samples sent before the device identified itself (normal on connect)"
            )
        self.stats.samples_before_info += frame.n_samples

    def _flush(self, host_time: float) -> list[SampleBlock]:
        if not self._pending or self.device_info is None:
            return []
        info = self.device_info
        frames, self._pending = self._pending, []
        # (A block is usually one frame: no concatenation then, and one scaling ufunc whose
        # float32 result equals casting first and multiplying after.)
        counts = (
            frames[0].samples
            if len(frames) == 1
            else np.concatenate([f.samples for f in frames], axis=1)
        )
        data = np.multiply(counts, np.float32(info.lsb_nv * 1e-6), dtype=np.float32)
        first = frames[0]
        if self._last_raw is not None and first.sample_counter < self._last_raw - 2**31:
            self._epoch += 2**32
        self._last_raw = first.sample_counter
        block = SampleBlock(
            first_index=self._epoch + first.sample_counter,
            t_device=self.clock.to_host(first.device_time_us),
            rate_hz=info.sample_rate_hz,
            channels=info.channel_roles,
            data=data,
            t_arrival=host_time,
        )
        self.stats.blocks += 1
        self.stats.samples += block.n_samples
        return [block]
