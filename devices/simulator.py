"""The simulated amplifier: synthetic EMG inside the emulated firmware, over the real protocol.

Nothing here shortcuts the wire: samples are quantised, framed (COBS + CRC), decoded by the same
`FramedSampleStream` that serial and BLE use, and heartbeats flow back the other way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from typing import Self

from config.settings import CalibrationSettings, SimulatorSettings
from devices.base import DeviceInfo, HostCommand, LinkState, LinkStats, SampleBlock, StreamEvent
from devices.framed_stream import FramedSampleStream
from firmware_bridge import DeviceInfo as FirmwareInfo
from firmware_bridge import Heartbeat
from firmware_bridge.emulator import EmulatedFirmware
from firmware_bridge.synthetic_emg import ChannelModel, ContractionProfile, SyntheticEmg

LSB_NV = 500  # 0.5 µV per count: ±16 mV in int16, ample for surface EMG
HEARTBEAT_S = 0.1


def build_firmware(settings: SimulatorSettings) -> EmulatedFirmware:
    profile = ContractionProfile(
        first_rest_s=settings.first_rest_s,
        contract_s=settings.contract_s,
        relax_s=settings.relax_s,
        ramp_s=settings.ramp_s,
        level=settings.contraction_pct / 100.0,
        reps_per_set=settings.reps_per_set,
        set_rest_s=settings.set_rest_s,
    )
    models = []
    for role in settings.channels:
        is_vl = role.startswith("VL")
        models.append(
            ChannelModel(
                role=role,
                mvc_rms_mv=settings.mvc_rms_mv,
                onset_delay_s=settings.vm_vl_onset_delay_ms / 1000.0 if is_vl else 0.0,
                gain=settings.vl_to_vm_ratio if is_vl else 1.0,
            )
        )
    source = SyntheticEmg(
        settings.rate_hz,
        tuple(models),
        profile,
        baseline_noise_mv=settings.baseline_noise_uv / 1000.0,
        mains_hz=float(settings.mains_hz),
        mains_mv=settings.mains_mv,
        seed=settings.seed,
    )
    info = FirmwareInfo(
        protocol_version=1,
        firmware_version="0.1.0",
        serial="SIM-0001",
        sample_rate_hz=settings.rate_hz,
        channel_roles=tuple(settings.channels),
        lsb_nv=LSB_NV,
        adc_bits=16,
    )
    return EmulatedFirmware(info, source)


class SimulatedDevice:
    """`sim` (real time) or `sim?speed=max` (as fast as the consumer takes blocks)."""

    def __init__(
        self, settings: SimulatorSettings, *, block_ms: float = 10.0, realtime: bool = True
    ) -> None:
        self.settings = settings
        self.realtime = realtime
        self.block_samples = max(1, round(block_ms * settings.rate_hz / 1000.0))
        self.info = DeviceInfo(
            spec="sim" if realtime else "sim?speed=max",
            kind="simulator",
            rate_hz=settings.rate_hz,
            channels=tuple(settings.channels),
            firmware_version="0.1.0",
            serial="SIM-0001",
        )
        self.stats = LinkStats()
        self.firmware = build_firmware(settings)
        self._emg = self.firmware.source
        self.stream = FramedSampleStream(self.stats)
        self._heartbeats = 0

    async def __aenter__(self) -> Self:
        self.stream.feed(self.firmware.hello(), time.time())
        self.stats.state = LinkState.UP
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stats.state = LinkState.CLOSED

    async def send(self, command: HostCommand) -> None:
        self._to_firmware(self.stream.connection.send(command))

    def take_events(self) -> list[StreamEvent]:
        return self.stream.take_events()

    @contextlib.contextmanager
    def following_calibration(self, c: CalibrationSettings) -> Iterator[None]:
        """The simulated patient does as the guided calibration says, from the next sample: rest
        for `rest_s`, then `mvc_trials` maximal contractions of (a little under) `mvc_s` with
        `mvc_rest_s` between them; afterwards it goes back to its configured script. So
        `--calibrate` on the demo device gives a calibration that passes its checks."""
        emg = self._emg
        if not isinstance(emg, SyntheticEmg):
            yield
            return
        before = emg.profile
        now_s = emg.index / self.settings.rate_hz
        lead = min(0.5, c.mvc_s / 4)  # react a moment after the prompt, relax before the next
        emg.profile = dataclasses.replace(
            before,
            first_rest_s=now_s + c.rest_s + lead,
            contract_s=c.mvc_s - 2 * lead,
            relax_s=c.mvc_rest_s + 2 * lead,
            level=1.0,
        )
        try:
            yield
        finally:
            emg.profile = before

    def _to_firmware(self, data: bytes) -> None:
        reply = self.firmware.receive_data(data, time.monotonic())
        if reply:
            self.stream.feed(reply, time.time())

    async def blocks(self) -> AsyncIterator[SampleBlock]:
        start = time.monotonic()
        produced = 0
        next_heartbeat = 0.0
        while True:
            if self.realtime:
                due = start + (produced + self.block_samples) / self.settings.rate_hz
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)  # let the outputs run between blocks
            now = time.monotonic()
            if now >= next_heartbeat:
                self._heartbeats += 1
                self._to_firmware(self.stream.connection.send(Heartbeat(self._heartbeats)))
                next_heartbeat = now + HEARTBEAT_S
            data = self.firmware.advance(self.block_samples, now)
            produced += self.block_samples
            for block in self.stream.feed(data, time.time()):
                yield block
