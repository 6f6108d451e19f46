"""An emulated firmware on a pty, served from a thread, reachable through a symlink that a new
emulator can take over (as `python -m devices.firmware_pty --pty --link PATH` does): so a
test can kill the device and bring another one back on the same path."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from devices.firmware_pty import PtyService, default_firmware


class Emulator:
    def __init__(self, link: Path) -> None:
        self.service = PtyService(default_firmware())
        self.firmware = self.service.firmware
        tmp = link.with_suffix(".new")
        os.symlink(self.service.path, tmp)
        os.replace(tmp, link)
        self.thread = threading.Thread(target=self.service.serve, daemon=True)
        self.thread.start()

    def kill(self) -> None:
        self.service.stop()  # closes the master: the host's reads fail, as on an unplug
        self.thread.join(5)
