"""Shared fixtures: real brokers on free loopback ports.

Tests that need a service skip with the reason when it is missing, unless VMF_REQUIRE_SERVICES
is set (CI sets it in .ci/run), in which case they fail: CI must never pass by skipping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from feedback.broker import EmbeddedBroker, free_port

REQUIRED = bool(os.environ.get("VMF_REQUIRE_SERVICES"))


def missing_service(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (VMF_REQUIRE_SERVICES is set, so this is a failure)")
    pytest.skip(reason)


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


def wait_for_port(port: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout_s} s")


class MosquittoProcess:
    """A private Mosquitto on a free loopback port; can be stopped and restarted on that port."""

    def __init__(self, binary: str, workdir: Path, extra_conf: str = "") -> None:
        self.binary = binary
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            # as deploy/mosquitto.conf: Nagle off, or ~5 % of messages wait ~40 ms
            "set_tcp_nodelay true\n" + extra_conf
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        self.proc = None


B = TypeVar("B", bound=MosquittoProcess)


@contextlib.contextmanager
def running_mosquitto(kind: type[B], workdir: Path) -> Iterator[B]:
    """A started broker of `kind`, stopped afterwards; a missing binary is `missing_service`."""
    binary = mosquitto_binary()
    if binary is None:
        missing_service("mosquitto is not installed: apt-get install -y mosquitto")
    assert binary is not None
    broker = kind(binary, workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoProcess]:
    with running_mosquitto(MosquittoProcess, tmp_path) as broker:
        yield broker


@pytest.fixture
async def embedded_broker() -> AsyncIterator[EmbeddedBroker]:
    async with EmbeddedBroker() as broker:
        yield broker
