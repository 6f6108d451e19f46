"""The real serial driver (pyserial-asyncio-fast) against the emulated firmware on a real pty."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PluggableEmulator  # type: ignore[import-not-found]
from serial.tools.list_ports_common import ListPortInfo

from config.loader import load_settings
from devices.base import DeviceError, LinkState, SampleBlock
from devices.registry import open_device
from devices.serial_device import PortQuery, find_port, open_serial
from feedback import app
from firmware_bridge import StimCommand, StimState

SETTINGS = load_settings(environ={})


def serial_spec(link: Path) -> str:
    return f"serial:{link}"


async def take(device: object, n_blocks: int) -> list[SampleBlock]:
    blocks: list[SampleBlock] = []
    async for block in device.blocks():  # type: ignore[attr-defined]
        blocks.append(block)
        if len(blocks) >= n_blocks:
            break
    return blocks


async def test_streams_contiguous_blocks_and_feeds_the_watchdog(
    emulator: PluggableEmulator,
) -> None:
    device = open_device(serial_spec(emulator.link), SETTINGS)
    async with device:
        assert device.info.kind == "serial"
        assert device.info.rate_hz == 2000.0 and device.info.channels == ("VM", "VL")
        assert device.info.serial == "PTY-0001"
        blocks = await asyncio.wait_for(take(device, 60), 10)
        assert device.stats.state is LinkState.UP
    for a, b in itertools.pairwise(blocks):
        assert b.first_index == a.end_index
    assert all(b.data.shape[0] == 2 and b.data.dtype.name == "float32" for b in blocks)
    assert device.stats.gaps == 0 and device.stats.protocol_errors == 0
    # Host → device direction works: InfoRequest plus heartbeats decoded by the firmware.
    assert emulator.firmware.link_stats.frames_ok >= 3
    assert emulator.firmware.link_stats.errors == 0


async def test_connecting_late_and_reconnecting_show_no_protocol_errors(
    emulator: PluggableEmulator,
) -> None:
    """The emulator streams with nobody reading (as a device does before the host opens the
    port); a host that connects later, twice, sees whole frames and no stale backlog."""
    assert emulator.service is not None
    for attempt in range(2):
        await asyncio.sleep(1.5)  # longer than HOST_SILENT_S: the port is unread, output piles up
        device = open_device(serial_spec(emulator.link), SETTINGS)
        async with device:
            await asyncio.wait_for(take(device, 30), 10)
        stats = device.stats
        assert stats.protocol_errors == 0, (attempt, stats)
        assert stats.gaps == 0
        # Only what the pty held when the port opened came before the device's hello answer.
        assert stats.samples_before_info < 2000, (attempt, stats)
        assert emulator.service.host_connects == attempt + 1
    assert emulator.service.bytes_dropped > 0  # 3 s of output with no host were discarded


async def test_unplug_and_replug_mid_stream_marks_the_gap(emulator: PluggableEmulator) -> None:
    device = open_device(serial_spec(emulator.link), SETTINGS)
    down_s = 0.6
    states: set[LinkState] = set()
    async with device:
        replug = asyncio.create_task(emulator.replug_after(0.5, down_s))
        blocks: list[SampleBlock] = []
        async with asyncio.timeout(15):
            async for block in device.blocks():
                blocks.append(block)
                states.add(device.stats.state)
                if replug.done() and device.stats.reconnects and len(blocks) > 120:
                    break
        await replug
    assert emulator.plugs == 2
    stats = device.stats
    assert stats.reconnects == 1
    assert down_s * 0.8 <= stats.down_s <= down_s + 2.0
    starts = [b.first_index for b in blocks]
    assert starts == sorted(starts), "indices must stay monotonic across the replug"
    jumps = [(a, b) for a, b in itertools.pairwise(blocks) if b.first_index != a.end_index]
    assert len(jumps) == 1
    lost = jumps[0][1].first_index - jumps[0][0].end_index
    assert stats.gaps == 1 and stats.samples_lost == lost
    # The new emulator restarted its counter at 0: the loss is estimated from the silence.
    assert down_s * 2000 * 0.7 <= lost <= (down_s + 1.5) * 2000
    assert any("link back after" in n for n in stats.notes)


async def test_stim_command_ack_and_refusal_surface_as_events(
    emulator: PluggableEmulator,
) -> None:
    device = open_device(serial_spec(emulator.link), SETTINGS)
    ok = StimCommand(7, 0, 20.0, 300, 50, 100, 600, 100)  # 0.8 s burst
    too_strong = StimCommand(8, 0, 75.0, 300, 50, 100, 600, 100)  # above the firmware's 60 mA
    async with device:
        await device.send(too_strong)
        await device.send(ok)
        events: list[object] = []
        async with asyncio.timeout(5):
            async for _ in device.blocks():
                events += [e.message for e in device.take_events()]
                if emulator.firmware.stats.commands_accepted and (
                    emulator.firmware.stim_state is StimState.IDLE
                ):
                    break
    names = [type(m).__name__ for m in events]
    assert "StimRefused" in names and "StimAck" in names
    refused = next(m for m in events if type(m).__name__ == "StimRefused")
    assert refused.command_id == 8 and refused.reason.name == "AMPLITUDE_LIMIT"  # type: ignore[attr-defined]
    # The host's heartbeat kept the firmware's 0.25 s watchdog fed for the whole 0.8 s burst.
    assert emulator.firmware.stats.watchdog_trips == 0


async def test_send_while_down_raises_instead_of_queueing(emulator: PluggableEmulator) -> None:
    device = open_serial(serial_spec(emulator.link), str(emulator.link), {})
    async with device:
        reader = asyncio.create_task(take(device, 10**9))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(emulator.unplug)
        async with asyncio.timeout(5):
            while device.stats.state is LinkState.UP:
                await asyncio.sleep(0.01)
        with pytest.raises(DeviceError, match="link is down"):
            await device.send(StimCommand(1, 0, 10.0, 300, 50, 100, 100, 100))
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    assert device.stats.state is LinkState.CLOSED


async def test_missing_port_is_a_clear_error(tmp_path: Path) -> None:
    device = open_device(f"serial:{tmp_path / 'nothing'}", SETTINGS)
    with pytest.raises(DeviceError, match="nothing"):
        async with device:
            pass


def test_auto_finds_by_vid_pid_and_lists_what_it_saw() -> None:
    def port(dev: str, vid: int | None, pid: int | None, desc: str) -> ListPortInfo:
        p = ListPortInfo(dev, skip_link_detection=True)
        p.vid, p.pid, p.description = vid, pid, desc
        return p

    ports = [
        port("/dev/ttyS0", None, None, "n/a"),
        port("/dev/ttyUSB0", 0x1A86, 0x7523, "USB Serial"),
        port("/dev/ttyACM0", 0x2341, 0x0043, "Arduino Uno"),
    ]
    assert find_port(PortQuery(0x2341, 0x0043), lambda: ports) == "/dev/ttyACM0"
    assert find_port(PortQuery(match="usb serial"), lambda: ports) == "/dev/ttyUSB0"
    assert find_port(PortQuery(), lambda: ports) == "/dev/ttyACM0"  # known vendors, sorted
    with pytest.raises(DeviceError) as err:
        find_port(PortQuery(0x239A), lambda: ports)
    assert "/dev/ttyS0" in str(err.value) and "1a86:7523" in str(err.value)


async def test_auto_on_this_machine_reports_what_it_saw() -> None:
    device = open_device("serial:auto?vid=dead&pid=beef", SETTINGS)
    with pytest.raises(DeviceError, match="saw:"):
        async with device:
            pass


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("serial:/dev/x?speed=2", "allowed"),
        ("serial:/dev/x?format=json", "frames or csv"),
        ("serial:/dev/x?vid=2341", "only apply to serial:auto"),
        ("serial:/dev/x?rate=1000", "only apply to format=csv"),
        ("serial:auto?vid=xyz", "hex"),
        ("serial:", "port path"),
        ("sim?baud=9600", "allowed"),
        ("usb:/dev/x", "known: sim, serial, ble, lsl"),
    ],
)
def test_bad_specs_name_what_is_allowed(spec: str, message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        open_device(spec, SETTINGS)


@pytest.mark.slow
async def test_session_over_pty_with_replug_logs_gap_and_downtime(
    emulator: PluggableEmulator, tmp_path: Path
) -> None:
    """The whole station on the emulated device: the gap reaches the session log and report."""
    settings = load_settings(environ={}, overrides={"session.station": "pty-test"})
    options = app.RunOptions(
        device=serial_spec(emulator.link),
        duration_s=3.0,
        db=str(tmp_path / "s.db"),
        broker="embedded",
        report=None,
        live_view=False,
    )
    replug = asyncio.create_task(emulator.replug_after(1.2, 0.5))
    from rich.console import Console

    with open(tmp_path / "console.txt", "w") as out:
        report = await app.run(settings, options, console=Console(file=out))
    await replug
    assert report["gaps"] == 1 and report["reconnects"] == 1
    assert report["samples_lost"] > 500 and report["link_down_s"] >= 0.4
    with sqlite3.connect(tmp_path / "s.db") as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM events")]
    assert kinds.count("gap") == 1


def test_emulator_cli_prints_a_path_the_driver_opens(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "devices.firmware_pty", "--pty"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/pts/")

        async def read_some() -> list[SampleBlock]:
            device = open_device(f"serial:{path}", SETTINGS)
            async with device:
                return await asyncio.wait_for(take(device, 20), 10)

        blocks = asyncio.run(read_some())
        assert blocks[-1].end_index - blocks[0].first_index == sum(b.n_samples for b in blocks)
    finally:
        proc.send_signal(2)  # Ctrl-C
        t0 = time.monotonic()
        assert proc.wait(10) == 0, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() - t0 < 10
