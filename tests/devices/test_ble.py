"""The real BLE driver against an injected client that speaks bleak's API (the radio is the fake).

`FakePeripheral` runs the emulated firmware in real time and, while a client is connected,
delivers its bytes as notifications cut at random byte counts (1 … MTU-3), like a BLE stack
that packs whatever is in its buffer. Disconnects call bleak's `disconnected_callback`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from config.loader import load_settings
from devices.base import DeviceError, SampleBlock
from devices.ble import DEVICE_TO_HOST_UUID, HOST_TO_DEVICE_UUID, SERVICE_UUID, open_ble
from devices.firmware_pty import default_firmware
from devices.link import LinkedDevice
from devices.registry import open_device
from firmware_bridge import StimAck, StimCommand

ADDRESS = "C0:FF:EE:00:00:01"
NAME = "VMF-EMG-01"


class FakePeripheral:
    """One advertising peripheral with the firmware inside; at most one central at a time."""

    def __init__(self, mtu: int, seed: int = 3) -> None:
        self.firmware = default_firmware()
        self.mtu = mtu
        self.rng = random.Random(seed)
        self.advertising = True
        self.client: FakeBleakClient | None = None
        self.notifications: list[int] = []
        self.writes: list[int] = []
        self._start = time.monotonic()
        self._produced = 0
        self._tx = bytearray()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        """The firmware samples whether or not anyone listens: disconnected samples are lost."""
        rate = self.firmware.info.sample_rate_hz
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            due = int((now - self._start) * rate) - self._produced
            self._produced += due
            self.notify(self.firmware.advance(due, now))

    def notify(self, data: bytes) -> None:
        """Queue bytes; send what fills packets of a random size. So one notification may end
        a frame and start the next, and the rest waits for the next connection event."""
        client = self.client
        if client is None or client.callback is None:
            self._tx.clear()
            return
        self._tx += data
        while self._tx:
            # Any byte count: single bytes, full packets and everything between.
            n = self.rng.choice((1, 2, self.rng.randint(1, self.mtu - 3), self.mtu - 3))
            if n > len(self._tx):
                return
            chunk, self._tx = self._tx[:n], self._tx[n:]
            self.notifications.append(n)
            client.callback(DEVICE_TO_HOST_UUID, chunk)

    def drop_link(self) -> None:
        """Out of range: the central learns it through the disconnected callback."""
        client, self.client = self.client, None
        if client is not None:
            client.lost()

    # bleak.BleakScanner.find_device_by_filter
    async def find_device_by_filter(
        self, filterfunc: Callable[[BLEDevice, AdvertisementData], bool], timeout: float = 10.0
    ) -> BLEDevice | None:
        deadline = time.monotonic() + timeout
        device = BLEDevice(ADDRESS, NAME, None)
        adv = AdvertisementData(NAME, {}, {}, [SERVICE_UUID], None, -60, ())
        while time.monotonic() < deadline:
            if self.advertising and filterfunc(device, adv):
                return device
            await asyncio.sleep(0.02)
        return None

    def client_class(self) -> Callable[..., FakeBleakClient]:
        def make(address_or_ble_device: BLEDevice | str, **kwargs: Any) -> FakeBleakClient:
            return FakeBleakClient(self, address_or_ble_device, **kwargs)

        return make


class FakeBleakClient:
    """bleak.BleakClient's surface: connect, start_notify, write_gatt_char, disconnect, mtu_size."""

    def __init__(
        self,
        peripheral: FakePeripheral,
        address_or_ble_device: BLEDevice | str,
        disconnected_callback: Callable[[FakeBleakClient], None] | None = None,
        *,
        timeout: float = 30.0,
    ) -> None:
        self.peripheral = peripheral
        self.address = getattr(address_or_ble_device, "address", address_or_ble_device)
        self.disconnected_callback = disconnected_callback
        self.callback: Callable[[Any, bytearray], None] | None = None
        self.is_connected = False

    @property
    def mtu_size(self) -> int:
        return self.peripheral.mtu

    async def connect(self) -> None:
        if not self.peripheral.advertising or self.address != ADDRESS:
            raise BleakError(f"Device with address {self.address} was not found")
        await asyncio.sleep(0.01)
        self.is_connected = True
        self.peripheral.client = self

    async def start_notify(self, char_specifier: str, callback: Any) -> None:
        assert char_specifier == DEVICE_TO_HOST_UUID
        self.callback = callback

    async def write_gatt_char(
        self, char_specifier: str, data: bytes, response: bool | None = None
    ) -> None:
        if not self.is_connected:
            raise BleakError("Not connected")
        assert char_specifier == HOST_TO_DEVICE_UUID and response is False
        assert len(data) <= self.mtu_size - 3, "a write must fit one ATT packet"
        self.peripheral.writes.append(len(data))
        self.peripheral.notify(self.peripheral.firmware.receive_data(bytes(data), time.monotonic()))

    async def disconnect(self) -> None:
        if self.is_connected:
            self.peripheral.client = None
            self.lost()

    def lost(self) -> None:
        self.is_connected = False
        if self.disconnected_callback is not None:
            self.disconnected_callback(self)


def ble_device(peripheral: FakePeripheral, target: str, **options: str) -> LinkedDevice:
    return open_ble(
        f"ble:{target}",
        target,
        options,
        client_class=peripheral.client_class(),
        scanner=peripheral.find_device_by_filter,
    )


async def collect(
    device: LinkedDevice, until: Callable[[list[SampleBlock]], bool]
) -> list[SampleBlock]:
    blocks: list[SampleBlock] = []
    async with asyncio.timeout(10):
        async for block in device.blocks():
            blocks.append(block)
            if until(blocks):
                return blocks
    raise AssertionError("unreachable")


@pytest.mark.parametrize("mtu", [23, 185, 247])
@pytest.mark.parametrize("target", [NAME, f"uuid={SERVICE_UUID.upper()}", ADDRESS])
async def test_frames_reassemble_from_notifications_of_any_size(mtu: int, target: str) -> None:
    peripheral = FakePeripheral(mtu)
    peripheral.start()
    device = ble_device(peripheral, target)
    try:
        async with device:
            assert device.info.channels == ("VM", "VL") and device.info.rate_hz == 2000.0
            blocks = await collect(device, lambda b: sum(x.n_samples for x in b) >= 600)
    finally:
        await peripheral.stop()
    for a, b in itertools.pairwise(blocks):
        assert b.first_index == a.end_index
    assert device.stats.protocol_errors == 0 and device.stats.gaps == 0
    assert min(peripheral.notifications) == 1 and max(peripheral.notifications) == mtu - 3
    # Host → device: InfoRequest and heartbeats, each in writes no larger than MTU - 3.
    assert peripheral.firmware.link_stats.frames_ok >= 2
    assert max(peripheral.writes) <= mtu - 3


async def test_disconnect_reconnects_and_marks_the_gap() -> None:
    peripheral = FakePeripheral(23)
    peripheral.start()
    device = ble_device(peripheral, NAME)

    async def out_of_range() -> None:
        await asyncio.sleep(0.3)
        peripheral.advertising = False
        peripheral.drop_link()
        await asyncio.sleep(0.5)
        peripheral.advertising = True

    try:
        async with device:
            dropper = asyncio.create_task(out_of_range())
            blocks = await collect(
                device, lambda b: dropper.done() and device.stats.reconnects == 1 and len(b) > 150
            )
    finally:
        await peripheral.stop()
    starts = [b.first_index for b in blocks]
    assert starts == sorted(starts)
    jumps = [b.first_index - a.end_index for a, b in itertools.pairwise(blocks)]
    lost = [j for j in jumps if j]
    assert len(lost) == 1 and device.stats.samples_lost == lost[0]
    # Same firmware, counter kept running: the jump is the samples sent while out of range.
    assert 0.4 * 2000 <= lost[0] <= 2.0 * 2000
    assert device.stats.reconnects == 1 and device.stats.down_s >= 0.4


async def test_stim_command_goes_out_in_mtu_chunks_and_is_acked() -> None:
    peripheral = FakePeripheral(23)
    peripheral.start()
    device = ble_device(peripheral, NAME)
    try:
        async with device:
            await device.send(StimCommand(42, 1, 15.0, 250, 40, 200, 300, 200))
            events: list[object] = []

            def acked(_: list[SampleBlock]) -> bool:
                events.extend(e.message for e in device.take_events())
                return any(isinstance(m, StimAck) for m in events)

            await collect(device, acked)
    finally:
        await peripheral.stop()
    ack = next(m for m in events if isinstance(m, StimAck))
    assert ack.command_id == 42
    assert peripheral.firmware.stats.commands_accepted == 1


async def test_nothing_advertising_is_a_clear_error() -> None:
    peripheral = FakePeripheral(23)
    peripheral.advertising = False
    device = ble_device(peripheral, "uuid=0000aaaa-0000-1000-8000-00805f9b34fb", timeout="0.1")
    with pytest.raises(DeviceError, match="no BLE device advertising uuid=0000aaaa"):
        async with device:
            pass


@pytest.mark.parametrize(
    ("spec", "message"),
    [("ble:x?mtu=5", "allowed"), ("ble:", "give a name"), ("ble:x?timeout=soon", "seconds")],
)
def test_bad_ble_specs(spec: str, message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        open_device(spec, load_settings(environ={}))
