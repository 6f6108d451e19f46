"""Killing the host process mid-burst over a real pseudo-terminal: the firmware's watchdog stops
the output within its 250 ms.

The emulated firmware serves the pty master from a thread in this process; the host is a real
child process that opens the pty by path (as a serial port), feeds the watchdog, starts a burst
and is then SIGKILLed. This needs no serial driver; the interlock tests through `serial:` are
for when the devices-io branch lands.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tty
from pathlib import Path

import numpy as np

from firmware_bridge import StimState
from firmware_bridge.emulator import EmulatedFirmware
from firmware_bridge.examples import EXAMPLE_INFO

ROOT = Path(__file__).resolve().parents[2]

HOST = textwrap.dedent(
    """
    import os, sys, time, tty
    from firmware_bridge import Connection, Heartbeat, Role, StimAck, StimCommand
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    conn = Connection(Role.HOST)
    os.write(fd, conn.send(Heartbeat(0)))
    os.write(fd, conn.send(StimCommand(1, 0, 20.0, 300, 50, 500, 4000, 500)))
    beat = 1
    while True:
        os.write(fd, conn.send(Heartbeat(beat)))
        beat += 1
        conn.receive_data(os.read(fd, 4096))
        if any(isinstance(e, StimAck) for e in conn.events()):
            print("burst", flush=True)
        time.sleep(0.05)
    """
)


def test_killed_host_mid_burst_stops_within_the_watchdog() -> None:
    fw = EmulatedFirmware(EXAMPLE_INFO, lambda n: np.zeros((2, n)))
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    path = os.ttyname(slave)
    stopped_at: list[float] = []
    last_rx: list[float] = []
    done = threading.Event()

    def firmware() -> None:
        while not done.is_set():
            ready, _, _ = select.select([master], [], [], 0.002)
            now = time.monotonic()
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:
                    data = b""
                if data:
                    last_rx.append(now)
                    os.write(master, fw.receive_data(data, now))
            status = fw.poll(now)  # the firmware's own clock: watchdog and burst phases
            if status:
                os.write(master, status)
            if fw.stim_state is StimState.STOPPED_WATCHDOG and not stopped_at:
                stopped_at.append(now)

    thread = threading.Thread(target=firmware, daemon=True)
    thread.start()
    host = subprocess.Popen(
        [sys.executable, "-c", HOST, path],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert host.stdout is not None
        assert host.stdout.readline().strip() == "burst"
        time.sleep(0.9)  # past the 0.5 s ramp, well into the 5 s burst, heartbeats flowing
        assert fw.stim_state is StimState.HOLD and fw.output_ma == 20.0
        killed_at = time.monotonic()
        host.send_signal(signal.SIGKILL)
        host.wait(5)
        deadline = time.monotonic() + 2.0
        while not stopped_at and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        done.set()
        thread.join(1.0)
        if host.poll() is None:
            host.kill()
        os.close(master)
        os.close(slave)
    assert stopped_at, "the firmware kept stimulating after the host died"
    assert fw.output_ma == 0.0 and fw.stats.watchdog_trips == 1
    # The watchdog runs from the last bytes the host sent, which precede the kill.
    last_before_kill = max(t for t in last_rx if t <= killed_at)
    assert stopped_at[0] - last_before_kill <= 0.25 + 0.02  # one 2 ms poll step of slack, +jitter
