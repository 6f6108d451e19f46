"""Fixtures for device tests: an emulated device on a real pty, behind a symlink that the tests
repoint on 'replug' (as udev does with /dev/serial/by-id)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devices.firmware_pty import PtyService, default_firmware
from firmware_bridge.emulator import EmulatedFirmware


class PluggableEmulator:
    """`plug()` starts an emulator on a new pty and points `link` at it; `unplug()` closes it."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.service: PtyService | None = None
        self._thread: threading.Thread | None = None
        self.plugs = 0

    @property
    def firmware(self) -> EmulatedFirmware:
        assert self.service is not None
        return self.service.firmware

    def plug(self) -> None:
        self.service = PtyService(default_firmware())
        self._thread = threading.Thread(target=self.service.serve, daemon=True)
        self._thread.start()
        tmp = self.link.with_suffix(".new")
        os.symlink(self.service.path, tmp)
        os.replace(tmp, self.link)  # atomic, like udev updating /dev/serial/by-id
        self.plugs += 1

    def unplug(self) -> None:
        if self.service is not None and self._thread is not None:
            self.service.stop()
            self._thread.join(5)
        self.service = self._thread = None

    async def replug_after(self, unplug_at_s: float, down_s: float) -> None:
        await asyncio.sleep(unplug_at_s)
        await asyncio.to_thread(self.unplug)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.plug)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[PluggableEmulator]:
    """An emulated device already plugged in, at `emulator.link`."""
    device = PluggableEmulator(tmp_path / "ttyEMG")
    device.plug()
    try:
        yield device
    finally:
        device.unplug()
