"""BLE devices through bleak: the same framed byte stream, carried by GATT notifications.

`ble:NAME` scans for an advertised name, `ble:uuid=SERVICE` for an advertised service, and
`ble:AA:BB:CC:DD:EE:FF` connects to an address without scanning. The firmware's service has a
notify characteristic (device → host) and a write-without-response one (host → device); a
notification or a write is only a chunk of the stream, so chunks go straight into the same
`FramedSampleStream` as serial bytes do and frames reassemble whatever the MTU.

The client class is injectable (`client_class`, `scanner`): tests run this driver against a
client that speaks the part of bleak's `BleakClient` API used here, radio excluded.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from devices.base import DeviceError
from devices.framed_stream import FramedSampleStream
from devices.link import Backoff, LinkedDevice, LinkLost

# The GATT layout of docs/protocol.md ("BLE (GATT)") lives with the protocol.
from firmware_bridge.gatt import (
    DEVICE_TO_HOST_UUID,
    HOST_TO_DEVICE_UUID,
    SERVICE_UUID,
    chunk_for_mtu,
)

__all__ = ["DEVICE_TO_HOST_UUID", "HOST_TO_DEVICE_UUID", "SERVICE_UUID", "BleTransport", "open_ble"]


BLE_OPTIONS = ("uuid", "name", "address", "timeout")
_ADDRESS = re.compile(r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$|^[0-9A-Fa-f-]{36}$")


class BleClient(Protocol):
    """The part of `bleak.BleakClient` this driver uses."""

    @property
    def mtu_size(self) -> int: ...

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    async def start_notify(
        self, char_specifier: str, callback: Callable[[Any, bytearray], None]
    ) -> None: ...

    async def write_gatt_char(
        self, char_specifier: str, data: bytes, response: bool | None = None
    ) -> None: ...


ClientFactory = Callable[..., BleClient]
"""Called as bleak's `BleakClient(device, disconnected_callback=cb)`."""
Finder = Callable[..., Awaitable[Any]]
"""Called as bleak's `BleakScanner.find_device_by_filter(filterfunc, timeout=s)`."""


class BleTransport:
    """`ByteTransport` over one connected client: notifications in, chunked writes out."""

    def __init__(self) -> None:
        # Unbounded on purpose: notifications are only ever queued by bleak's callback and
        # drained by the session's loop; dropping one would corrupt a frame.
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.client: BleClient | None = None
        self.notifications = 0

    def on_notify(self, _sender: Any, data: bytearray) -> None:
        self.notifications += 1
        self._queue.put_nowait(bytes(data))

    def on_disconnect(self, _client: Any) -> None:
        self._queue.put_nowait(None)

    async def read(self) -> bytes:
        chunks = [await self._queue.get()]
        while not self._queue.empty():  # coalesce what is already there: one decode pass
            chunks.append(self._queue.get_nowait())
        if None in chunks:
            raise LinkLost("BLE disconnected")
        return b"".join(c for c in chunks if c)

    async def write(self, data: bytes) -> None:
        if self.client is None:
            raise LinkLost("not connected")
        try:
            for chunk in chunk_for_mtu(data, self.client.mtu_size):
                await self.client.write_gatt_char(HOST_TO_DEVICE_UUID, chunk, response=False)
        except Exception as exc:  # bleak raises BleakError or OSError by backend
            raise LinkLost(f"BLE write failed: {exc}") from exc

    async def close(self) -> None:
        if self.client is not None:
            await self.client.disconnect()


def open_ble(
    spec: str,
    target: str,
    options: dict[str, str],
    *,
    client_class: ClientFactory | None = None,
    scanner: Finder | None = None,
) -> LinkedDevice:
    unknown = sorted(set(options) - set(BLE_OPTIONS))
    if unknown:
        raise DeviceError(f"ble: unknown option(s) {unknown}; allowed: {list(BLE_OPTIONS)}")
    key, sep, value = target.partition("=")
    if sep and key in ("uuid", "name", "address"):
        options = {**options, key: value}
    elif target:
        options = {**options, "address" if _ADDRESS.match(target) else "name": target}
    if not {"uuid", "name", "address"} & set(options):
        raise DeviceError("ble: give a name (ble:EMG-1), uuid=SERVICE or an address")
    try:
        timeout = float(options.get("timeout", "10"))
    except ValueError:
        raise DeviceError(f"ble: timeout must be seconds, not {options['timeout']!r}") from None
    if client_class is None or scanner is None:
        try:
            import bleak
        except ImportError:
            raise DeviceError("ble: needs bleak (pip install 'vm-feedback[ble]')") from None
        client_class = client_class or bleak.BleakClient
        scanner = scanner or bleak.BleakScanner.find_device_by_filter
    find, make_client = _finder(options, scanner, timeout), client_class

    async def opener() -> BleTransport:
        device = await find()
        transport = BleTransport()
        client = make_client(device, disconnected_callback=transport.on_disconnect)
        try:
            await client.connect()
            await client.start_notify(DEVICE_TO_HOST_UUID, transport.on_notify)
        except Exception as exc:  # BleakError, TimeoutError, OSError depending on backend
            raise OSError(f"BLE connect to {device} failed: {exc}") from exc
        transport.client = client
        return transport

    # A BLE reconnect involves a scan: do not hammer the radio.
    return LinkedDevice(
        spec, "ble", opener, FramedSampleStream, backoff=Backoff(initial_s=0.25, max_s=5.0)
    )


def _finder(
    options: dict[str, str], scanner: Finder, timeout: float
) -> Callable[[], Awaitable[Any]]:
    address = options.get("address")
    name = options.get("name")
    uuid = options.get("uuid", "").lower()

    def matches(device: Any, adv: Any) -> bool:
        if name is not None and name not in (device.name, adv.local_name):
            return False
        return not uuid or uuid in [u.lower() for u in adv.service_uuids]

    async def find() -> Any:
        if address:
            return address
        device = await scanner(matches, timeout=timeout)
        if device is None:
            want = " and ".join(f"{k}={options[k]}" for k in ("name", "uuid") if k in options)
            raise OSError(f"no BLE device advertising {want} within {timeout} s")
        return device

    return find
