"""Fixtures shared by the stimulation tests that talk to an emulated firmware over a real pty."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from devices.firmware_pty import PtyService, default_firmware


@pytest.fixture
def pty_firmware() -> Iterator[PtyService]:
    """The emulated firmware served on a fresh pty from a thread, stopped after the test."""
    service = PtyService(default_firmware())
    thread = threading.Thread(target=service.serve, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.stop()
        thread.join(5)
