"""Serve an `EmulatedFirmware` on a pseudo-terminal, in real time, so the real serial driver can
open it by path: `python -m devices.firmware_pty --pty` (then `--device serial:<path>`).

It lives on the device side because it does I/O (a pty, select, signals): `firmware_bridge` itself
stays sans-I/O. Blocking and single-threaded on purpose (os.openpty + tty.setraw + select), as a
microcontroller's main loop looks. The slave
end is kept open here as well, so the master never sees EIO while no host has the port open.

Output nobody reads is stale, and a host that opens the port must not have to wade through it:
while no host is talking (no frame for HOST_SILENT_S; a connected host sends a heartbeat every
100 ms) the unread bytes in the pty are discarded once they pass STALE_INPUT, and the first host
frame after a silence discards this side's backlog, as a real USB CDC device drops what the host
did not poll. Every discard keeps the stream at a frame boundary, so a host that connects sees
whole frames only: at most a few samples before the device's answer to its hello, no errors.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import struct
import sys
import termios
import time
import tty
from collections.abc import Sequence

from firmware_bridge.emulator import EmulatedFirmware
from firmware_bridge.frames import DeviceInfo
from firmware_bridge.synthetic_emg import ChannelModel, ContractionProfile, SyntheticEmg

__all__ = ["PtyService", "default_firmware", "main", "serve_on_pty"]

LSB_NV = 500  # 0.5 µV per count, as the simulated amplifier
TICK_S = 0.002  # how often samples are framed: 4 samples at 2 kHz, like a DMA half-buffer
MAX_BACKLOG = 4 * 1024  # bytes waiting here for a reader (~0.25 s at 2 kHz x 2) before dropping
STALE_INPUT = 2048  # unread bytes in the pty, while no host talks, that are discarded as stale
HOST_SILENT_S = 1.0  # no frame from the host for this long: nobody is connected


def default_firmware(
    rate_hz: float = 2000.0, channels: Sequence[str] = ("VM", "VL"), seed: int = 1
) -> EmulatedFirmware:
    """Synthetic VM/VL contractions (VL 30 ms after VM) behind the emulated firmware."""
    models = tuple(
        ChannelModel(role=r, onset_delay_s=0.03 if r.startswith("VL") else 0.0) for r in channels
    )
    source = SyntheticEmg(rate_hz, models, ContractionProfile(), seed=seed)
    info = DeviceInfo(
        protocol_version=1,
        firmware_version="0.1.0",
        serial="PTY-0001",
        sample_rate_hz=rate_hz,
        channel_roles=tuple(channels),
        lsb_nv=LSB_NV,
        adc_bits=16,
    )
    return EmulatedFirmware(info, source)


class PtyService:
    """One emulated device on one pty. `serve()` blocks until `stop()` (from any thread)."""

    def __init__(self, firmware: EmulatedFirmware) -> None:
        self.firmware = firmware
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)
        self.bytes_dropped = 0
        self.host_connects = 0  # first host frames after a silence (each discards stale output)
        self.started_at = 0.0  # time.monotonic() of sample 0: sample i is due at + i / rate
        self._out = bytearray()
        self._stopping = False  # set from another thread or a signal handler; read each tick
        self._host_heard_at: float | None = None  # time.monotonic() of the last host bytes
        self._mid_frame = False  # the last write ended inside a frame (its rest is in _out)

    def stop(self) -> None:
        self._stopping = True

    def serve(self) -> None:
        rate = self.firmware.info.sample_rate_hz
        start = self.started_at = time.monotonic()
        produced = 0
        try:
            while not self._stopping:
                wants_write = [self.master] if self._out else []
                readable, _, _ = select.select([self.master], wants_write, [], TICK_S)
                now = time.monotonic()
                if readable:
                    self._receive(now)
                due = int((now - start) * rate) - produced
                self._queue(self.firmware.advance(max(due, 0), now))
                produced += max(due, 0)
                if not self._host_present(now):
                    self._drop_unread()
                self._flush()
        finally:
            self.close()

    def close(self) -> None:
        """Closing the master is the unplug: a host reading the slave gets EIO."""
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _receive(self, now: float) -> None:
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        if data and not self._host_present(now):
            # A host (re)opened the port: what was queued for nobody is stale. Answer its hello
            # with fresh output, as a device that flushes its buffers on connect.
            self.host_connects += 1
            self._drop_backlog()
        if data:
            self._host_heard_at = now
        self._queue(self.firmware.receive_data(data, now))

    def _host_present(self, now: float) -> bool:
        heard = self._host_heard_at
        return heard is not None and now - heard < HOST_SILENT_S

    def _queue(self, data: bytes) -> None:
        self._out += data
        if len(self._out) > MAX_BACKLOG:
            self._drop_backlog()

    def _drop_backlog(self) -> None:
        """Drop what waits here, but finish the frame already half written (up to its 0x00)."""
        end = self._out.find(0) if self._mid_frame else -1
        keep = end + 1 if end >= 0 else 0
        self.bytes_dropped += len(self._out) - keep
        del self._out[keep:]

    def _drop_unread(self) -> None:
        """With no host talking, discard the pty's unread bytes before they pile up."""
        unread = struct.unpack("i", fcntl.ioctl(self._slave, termios.FIONREAD, b"\0" * 4))[0]
        if unread < STALE_INPUT:
            return
        termios.tcflush(self._slave, termios.TCIFLUSH)
        self.bytes_dropped += unread
        if self._mid_frame:  # its head went with the flush: its rest would be garbage
            end = self._out.find(0)
            cut = end + 1 if end >= 0 else len(self._out)
            self.bytes_dropped += cut
            del self._out[:cut]
            self._mid_frame = False

    def _flush(self) -> None:
        while self._out:
            try:
                n = os.write(self.master, self._out)
            except (BlockingIOError, InterruptedError):
                return
            self._mid_frame = self._out[n - 1] != 0
            del self._out[:n]


def serve_on_pty(rate_hz: float, channels: Sequence[str], seed: int, link: str | None) -> int:
    """`python -m devices.firmware_pty --pty`: serve until Ctrl-C or SIGTERM."""
    service = PtyService(default_firmware(rate_hz, channels, seed))
    path = service.path
    if link:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
        os.symlink(service.path, link)
        path = link
    print(path, flush=True)
    print(
        f"serving emulated firmware; try: --device serial:{path}  (Ctrl-C stops)", file=sys.stderr
    )
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    try:
        service.serve()
    except KeyboardInterrupt:
        pass
    finally:
        if link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
    return 0


def sample_rate(text: str) -> float:
    """`--rate`, bounded as the simulator's own setting is: slower than 500 Hz cannot carry
    surface EMG's band (and below ~270 Hz the muscle's spectral shape cannot be made at all)."""
    import argparse

    from pydantic import ValidationError

    from config.settings import SimulatorSettings

    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of Hz") from None
    try:
        SimulatorSettings(rate_hz=rate)
    except ValidationError as exc:
        why = exc.errors()[0]["msg"]  # e.g. "Input should be greater than or equal to 500"
        raise argparse.ArgumentTypeError(
            f"{text} Hz refused: {why} Hz, as the simulator's own rate"
        ) from None
    return rate


def main(argv: list[str] | None = None) -> int:
    """`python -m devices.firmware_pty`: serve a pty (--pty) or record the wire bytes."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m devices.firmware_pty",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The emulated EMG/stimulation firmware, without hardware. Two modes:\n\n"
        "  --pty [--link PATH]   serve it in real time on a new pseudo-terminal and print the\n"
        "                        path; then: run_feedback.py --device serial:PATH (Ctrl-C stops)\n"
        "  (default)             write what it sends with no host attached, as raw wire bytes\n"
        "                        (COBS frames), for replay tests; it stimulates nothing",
    )
    pty = parser.add_argument_group("serving on a pseudo-terminal")
    pty.add_argument("--pty", action="store_true", help="serve on a new pty (prints its path)")
    pty.add_argument(
        "--link", metavar="PATH", help="with --pty: also make PATH a symlink to the pty"
    )
    common = parser.add_argument_group("the emulated device (both modes)")
    common.add_argument(
        "--rate", type=sample_rate, default=2000.0, help="sample rate, Hz (2000; 500 to 10000)"
    )
    common.add_argument("--channels", default="VM,VL", help="comma-separated channel roles")
    common.add_argument("--seed", type=int, default=1, help="random seed of the synthetic EMG")
    rec = parser.add_argument_group("recording the wire bytes (without --pty)")
    rec.add_argument("--seconds", type=float, default=10.0, help="how much to record (10)")
    rec.add_argument("--samples-per-frame", type=int, default=20)
    rec.add_argument("--output", "-o", default="-", help="file to write, or - for stdout")
    args = parser.parse_args(argv)
    if args.link and not args.pty:
        parser.error("--link needs --pty")
    roles = tuple(r.strip() for r in args.channels.split(",") if r.strip())
    if args.pty:
        return serve_on_pty(args.rate, roles, args.seed, args.link)

    info = DeviceInfo(1, "1.0.0", "EMULATED", args.rate, roles, lsb_nv=195, adc_bits=16)
    channels = tuple(ChannelModel(role) for role in roles)
    source = SyntheticEmg(args.rate, channels, ContractionProfile(), seed=args.seed)
    fw = EmulatedFirmware(info, source, samples_per_frame=args.samples_per_frame)
    step = args.samples_per_frame
    chunks = [fw.hello()]
    for i in range(round(args.seconds * args.rate / step)):
        chunks.append(fw.advance(step, (i + 1) * step / args.rate))
    data = b"".join(chunks)
    if args.output == "-":
        sys.stdout.buffer.write(data)
    else:
        with open(args.output, "wb") as f:
            f.write(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
