"""The compiled AVR firmware under simavr (firmware/sim/vmf_sim.c), on a real pseudo-terminal.

`AvrSim` starts the runner, reads the pty path, and talks to it on stdin/stdout: `stats()`
(simulated clock, stimulator pin history, interrupt cycles) and `contact(ch, ok)`. `PtyHost`
is a minimal host on that pty: a firmware_bridge Connection over a raw file descriptor.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
import tty
from pathlib import Path
from typing import Any

from vmf_c import build

from firmware_bridge import Connection, Heartbeat, InfoRequest, Message, Role


def firmware_elf(**variables: str) -> Path:
    return build("avr", **variables)


class AvrSim:
    def __init__(
        self, elf: Path | None = None, *, speed: float = 1.0, link: Path | None = None
    ) -> None:
        runner = build("sim")
        args = [str(runner), "--speed", str(speed), str(elf or firmware_elf())]
        if link is not None:
            args[1:1] = ["--link", str(link)]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.path = self.proc.stdout.readline().strip()
        assert self.path, self.proc.stderr.read() if self.proc.stderr else "no pty path"

    def _ask(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return answer

    def stats(self) -> dict[str, Any]:
        return self._ask("stats")

    def contact(self, channel: int, ok: bool) -> None:
        self._ask(f"contact {channel} {int(ok)}")

    def wait_input_taken(self, host: PtyHost, timeout_s: float = 30.0) -> dict[str, Any]:
        """Until every byte the host sent has reached the UART, then 5 ms more of simulated
        time (the UART's own queue at 500 kbaud): nothing queued ahead of what comes next. On a
        loaded machine the simulated clock lags the wall and heartbeats pile up meanwhile."""
        deadline = time.monotonic() + timeout_s
        while (stats := self.stats())["uart_in"] < host.bytes_sent:
            assert time.monotonic() < deadline, f"{stats['uart_in']} of {host.bytes_sent} taken"
            time.sleep(0.01)
        return self.wait_sim_time(stats["t_s"] + 0.005, timeout_s)

    def wait_sim_time(self, t_s: float, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            stats = self.stats()
            if stats["t_s"] >= t_s:
                return stats
            assert time.monotonic() < deadline, f"simulated clock stuck at {stats['t_s']}"
            time.sleep(0.02)

    def close(self) -> dict[str, Any]:
        """Stops the runner; its final stats."""
        if self.proc.poll() is not None:
            return {}
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            out = self.proc.stdout.read()
            self.proc.wait(10)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(5)
            return {}
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else {}

    def __enter__(self) -> AvrSim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PtyHost:
    """A host on the simulated board's pty: send messages, collect what comes back."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        self.conn = Connection(Role.HOST)
        self.events: list[object] = []
        self.beats = 0
        self.bytes_sent = 0

    def send(self, message: Message) -> None:
        data = self.conn.send(message)
        os.write(self.fd, data)
        self.bytes_sent += len(data)

    def pump(self, seconds: float, heartbeat_s: float | None = 0.05) -> None:
        """Read for `seconds` of wall time, sending heartbeats every `heartbeat_s`."""
        end = time.monotonic() + seconds
        next_beat = time.monotonic()
        while (now := time.monotonic()) < end:
            if heartbeat_s is not None and now >= next_beat:
                self.send(Heartbeat(self.beats))
                self.beats += 1
                next_beat = now + heartbeat_s
            ready, _, _ = select.select([self.fd], [], [], 0.01)
            if ready:
                self.conn.receive_data(os.read(self.fd, 65536))
                self.events.extend(self.conn.events())

    def hello(self) -> None:
        self.send(InfoRequest())
        self.pump(0.3)

    def of_type(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]

    def close(self) -> None:
        os.close(self.fd)
