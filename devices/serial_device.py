"""Serial devices (USB CDC, UART adapters) through pyserial-asyncio-fast.

`serial:/dev/ttyACM0` opens a path; `serial:auto` finds the port by USB VID:PID or description.
Either is resolved again on every reconnect, so a stable name for a device that comes back under
a new node works: udev's `/dev/serial/by-id/...` symlinks, or any symlink you repoint (the tests
replug an emulator on a new pty by repointing one). Two wire formats: the framed firmware protocol
(`format=frames`, default) and a plain text stream (`format=csv`, see `devices.csv_stream`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import serial
import serial_asyncio_fast
from serial.tools import list_ports
from serial.tools.list_ports_common import ListPortInfo

from devices.base import DeviceError, LinkStats
from devices.csv_stream import CsvSampleStream, CsvSettings
from devices.framed_stream import FramedSampleStream
from devices.link import LinkedDevice, LinkLost, SampleDecoder

log = logging.getLogger(__name__)

READ_CHUNK = 4096
SERIAL_OPTIONS = ("format", "baud", "vid", "pid", "match", "rate", "channels", "ts", "scale")

# USB vendors of the boards EMG front ends are usually built on; `serial:auto` without criteria
# picks among these, so a modem or a UART console is not opened by mistake.
KNOWN_VENDORS: dict[int, str] = {
    0x2341: "Arduino",
    0x2A03: "Arduino",
    0x239A: "Adafruit",
    0x16C0: "Teensy (PJRC)",
    0x1B4F: "SparkFun",
    0x303A: "Espressif",
    0x2E8A: "Raspberry Pi",
    0x0483: "STMicroelectronics",
    0x1915: "Nordic Semiconductor",
    0x1A86: "WCH CH340",
    0x0403: "FTDI",
    0x10C4: "Silicon Labs CP210x",
}


@dataclass(frozen=True, slots=True)
class PortQuery:
    """How `serial:auto` recognises the device; empty means 'any known board vendor'."""

    vid: int | None = None
    pid: int | None = None
    match: str = ""  # case-insensitive substring of description, product or manufacturer

    def accepts(self, port: ListPortInfo) -> bool:
        if self.vid is None and self.pid is None and not self.match:
            return port.vid in KNOWN_VENDORS
        if self.vid is not None and port.vid != self.vid:
            return False
        if self.pid is not None and port.pid != self.pid:
            return False
        text = " ".join(str(x) for x in (port.description, port.product, port.manufacturer))
        return self.match.lower() in text.lower()


def describe_port(port: ListPortInfo) -> str:
    ids = f"{port.vid:04x}:{port.pid:04x}" if port.vid is not None else "no USB id"
    return f"{port.device} ({ids}, {port.description})"


def find_port(
    query: PortQuery, comports: Callable[[], Sequence[ListPortInfo]] = list_ports.comports
) -> str:
    """The device path of the first matching port; `DeviceError` listing all ports otherwise."""
    ports = sorted(comports(), key=lambda p: p.device)
    hits = [p for p in ports if query.accepts(p)]
    if not hits:
        seen = "; ".join(describe_port(p) for p in ports) or "no serial ports at all"
        raise DeviceError(f"serial:auto found no port matching {query}; saw: {seen}")
    if len(hits) > 1:
        log.warning("serial:auto: %d ports match, using %s", len(hits), describe_port(hits[0]))
    return str(hits[0].device)


class SerialTransport:
    """`ByteTransport` over an asyncio serial stream; any error or EOF on read is a lost link."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def read(self) -> bytes:
        try:
            data = await self._reader.read(READ_CHUNK)
        except (OSError, serial.SerialException) as exc:
            raise LinkLost(str(exc) or type(exc).__name__) from exc
        if not data:
            raise LinkLost("port closed")
        return data

    async def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise LinkLost("port closed")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (OSError, serial.SerialException, ConnectionError) as exc:
            raise LinkLost(str(exc) or type(exc).__name__) from exc

    async def close(self) -> None:
        self._writer.close()
        # Closing a port whose device is gone may fail; it is closed either way.
        with contextlib.suppress(OSError, serial.SerialException, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)


def open_serial(
    spec: str,
    target: str,
    options: dict[str, str],
    *,
    comports: Callable[[], Sequence[ListPortInfo]] = list_ports.comports,
) -> LinkedDevice:
    unknown = sorted(set(options) - set(SERIAL_OPTIONS))
    if unknown:
        raise DeviceError(f"serial: unknown option(s) {unknown}; allowed: {list(SERIAL_OPTIONS)}")
    if not target:
        raise DeviceError("serial: give a port path (serial:/dev/ttyACM0) or serial:auto")
    fmt = options.get("format", "frames")
    baud = _int_option(options, "baud", 115200)
    query = PortQuery(
        _hex_option(options, "vid"), _hex_option(options, "pid"), options.get("match", "")
    )
    if target != "auto" and (query.vid is not None or query.pid is not None or query.match):
        raise DeviceError("serial: vid, pid and match only apply to serial:auto")

    async def opener() -> SerialTransport:
        path = find_port(query, comports) if target == "auto" else target
        try:
            reader, writer = await serial_asyncio_fast.open_serial_connection(
                url=path, baudrate=baud
            )
        except serial.SerialException as exc:
            raise OSError(str(exc)) from exc
        return SerialTransport(reader, writer)

    make_decoder: Callable[[LinkStats], SampleDecoder]
    if fmt == "frames":
        make_decoder = FramedSampleStream
        csv_only = {"rate", "channels", "ts", "scale"} & set(options)
        if csv_only:
            raise DeviceError(f"serial: {sorted(csv_only)} only apply to format=csv")
    elif fmt == "csv":
        csv_settings = CsvSettings.from_options(options)

        def make_decoder(stats: LinkStats) -> SampleDecoder:
            return CsvSampleStream(csv_settings, stats)
    else:
        raise DeviceError(f"serial: format must be frames or csv, not {fmt!r}")
    return LinkedDevice(spec, "serial", opener, make_decoder)


def _int_option(options: dict[str, str], key: str, default: int) -> int:
    try:
        return int(options.get(key, default))
    except ValueError:
        raise DeviceError(f"serial: {key} must be an integer, not {options[key]!r}") from None


def _hex_option(options: dict[str, str], key: str) -> int | None:
    """USB ids are written in hex everywhere (lsusb, udev): `vid=2341`."""
    if key not in options:
        return None
    try:
        return int(options[key], 16)
    except ValueError:
        raise DeviceError(f"serial: {key} must be hex like 2341, not {options[key]!r}") from None
