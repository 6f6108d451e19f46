"""The Arduino / MyoWare style text stream: one line per sample, values separated by commas,
tabs or spaces, optionally a timestamp first. Selected by `serial:PATH?format=csv&rate=..`.

Sketches print this with `Serial.print(analogRead(A0)); Serial.print(','); ...; Serial.println()`,
often with `millis()` in front and sometimes with Serial Plotter labels (`VM:512,VL:498`), which
are accepted. Everything else that does not parse (a header, a line cut in half when the port was
opened mid-line, garbage from a baud mismatch) is counted in `stats.protocol_errors`, logged a few
times, and skipped: a flaky line never ends a session.

The first line after opening the port is dropped unparsed: it is almost always a partial one.
Text has no sample counter, so indices count lines. With a timestamp column a jump in time larger
than `GAP_TOLERANCE` samples moves the index on (the samples in between were lost); without one,
only a reconnect can reveal a gap (see `devices.link.IndexContinuity`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

from devices.base import DeviceError, HostCommand, LinkStats, SampleBlock, StreamEvent
from devices.framed_stream import StreamIdentity

log = logging.getLogger(__name__)

MAX_LINE = 1024  # bytes without a newline before the buffer is declared garbage
GAP_TOLERANCE = 2  # samples of timestamp jitter tolerated (millis() has 1 ms resolution)
PROBE_LINES = 5  # ts=auto looks at this many lines before deciding
LOGGED_ERRORS = 5  # malformed lines logged individually; the rest are only counted
_SPLIT = re.compile(r"[,\t; ]+")
_TS_TO_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_ROLE = re.compile(r"^[A-Z]{2,4}(_[LR])?$")


@dataclass(frozen=True, slots=True)
class CsvSettings:
    rate_hz: float
    channels: tuple[str, ...]
    ts: str = "auto"  # auto | none | s | ms | us; auto: one extra leading column is ms
    scale: float = 1.0  # multiplies each value to get millivolts (e.g. ADC counts → mV)

    @classmethod
    def from_options(cls, options: dict[str, str]) -> CsvSettings:
        if "rate" not in options:
            raise DeviceError("serial format=csv needs rate=<Hz> (a text stream cannot tell)")
        try:
            rate = float(options["rate"])
            scale = float(options.get("scale", "1"))
        except ValueError as exc:
            raise DeviceError(
                f"serial format=csv: rate and scale must be numbers ({exc})"
            ) from None
        if not 1.0 <= rate <= 20_000.0:
            raise DeviceError(f"serial format=csv: rate must be 1–20000 Hz, not {rate}")
        channels = tuple(c.strip() for c in options.get("channels", "VM,VL").split(",") if c)
        bad = [c for c in channels if not _ROLE.match(c)]
        if not channels or bad:
            raise DeviceError(f"serial format=csv: channels must be roles like VM,VL; got {bad}")
        ts = options.get("ts", "auto")
        if ts not in ("auto", "none", *_TS_TO_S):
            raise DeviceError(f"serial format=csv: ts must be auto, none, s, ms or us, not {ts!r}")
        return cls(rate, channels, ts, scale)


class MalformedLine(ValueError):
    """A line that is not one sample; counted and skipped."""


class CsvSampleStream:
    """`SampleDecoder` for text lines. Feed it bytes split anywhere."""

    def __init__(self, settings: CsvSettings, stats: LinkStats) -> None:
        self.settings = settings
        self.stats = stats
        self.malformed = 0
        self._buffer = bytearray()
        self._next_index = 0
        self._ts0: float | None = None  # seconds, first timestamp seen
        self._n = len(settings.channels)
        self._synced = False  # the first line after opening the port is usually cut: skip it
        # ts=auto: decided by the first PROBE_LINES lines, then fixed, so that a line that lost a
        # column is not mistaken for one without a timestamp.
        self._with_ts: bool | None = {"auto": None, "none": False}.get(settings.ts, True)
        self._probe: list[tuple[bytes, list[float]]] = []  # parsed lines not yet turned into rows

    def identity(self) -> StreamIdentity:
        return StreamIdentity(self.settings.rate_hz, self.settings.channels)

    def hello(self) -> bytes:
        return b""

    def heartbeat(self) -> bytes:
        return b""

    def command(self, command: HostCommand) -> bytes:
        raise DeviceError("a csv text stream takes no stimulation commands")

    def take_events(self) -> list[StreamEvent]:
        return []

    def feed(self, data: bytes, host_time: float) -> list[SampleBlock]:
        self._buffer += data
        if not self._synced:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                return []
            del self._buffer[: newline + 1]
            self._synced = True
        *lines, rest = self._buffer.split(b"\n")
        self._buffer = bytearray(rest)
        if len(self._buffer) > MAX_LINE:
            self._bad(bytes(self._buffer[:40]), f"no newline in {len(self._buffer)} bytes")
            self._buffer.clear()
        for raw in lines:
            text = raw.strip(b"\r \x00").decode("ascii", errors="replace")
            if not text:
                continue
            try:
                self._probe.append((bytes(raw), self._numbers(text)))
            except MalformedLine as exc:
                self._bad(bytes(raw), str(exc))
        if self._with_ts is None:
            self._decide_timestamp()
            if self._with_ts is None:
                return []
        rows: list[tuple[int, list[float]]] = []
        for line, numbers in self._probe:
            expected = self._n + 1 if self._with_ts else self._n
            if len(numbers) != expected:
                self._bad(line, f"{len(numbers)} values, expected {expected}")
                continue
            ts = numbers[0] * _TS_TO_S.get(self.settings.ts, 1e-3) if self._with_ts else None
            rows.append((self._index_for(ts), numbers[1:] if self._with_ts else numbers))
        self._probe.clear()
        return self._blocks(rows, host_time)

    def _numbers(self, text: str) -> list[float]:
        # Serial Plotter labels ("VM:512") are dropped; the column order is what counts.
        fields = [f.rpartition(":")[2] for f in _SPLIT.split(text.strip(",;\t "))]
        try:
            numbers = [float(f) for f in fields]
        except ValueError:
            raise MalformedLine(f"not a number in {text[:40]!r}") from None
        if not all(np.isfinite(numbers)):
            raise MalformedLine(f"non-finite value in {text[:40]!r}")
        return numbers

    def _decide_timestamp(self) -> None:
        """ts=auto: the usual width among the first lines says whether millis() comes first."""
        widths = [len(n) for _, n in self._probe]
        with_ts, without = widths.count(self._n + 1), widths.count(self._n)
        if with_ts + without >= PROBE_LINES:
            self._with_ts = with_ts > without

    def _index_for(self, ts: float | None) -> int:
        index = self._next_index
        if ts is not None:
            if self._ts0 is None or ts < self._ts0:
                self._ts0 = ts - index / self.settings.rate_hz  # start, or the board restarted
            by_time = round((ts - self._ts0) * self.settings.rate_hz)
            if by_time > index + GAP_TOLERANCE:
                self.stats.gaps += 1
                self.stats.samples_lost += by_time - index
                index = by_time
        self._next_index = index + 1
        return index

    def _blocks(self, rows: list[tuple[int, list[float]]], host_time: float) -> list[SampleBlock]:
        """One block per run of consecutive indices."""
        blocks: list[SampleBlock] = []
        start = 0
        for i in range(1, len(rows) + 1):
            if i == len(rows) or rows[i][0] != rows[i - 1][0] + 1:
                run = rows[start:i]
                data = np.array([v for _, v in run], dtype=np.float64).T * self.settings.scale
                rate = self.settings.rate_hz
                blocks.append(
                    SampleBlock(
                        first_index=run[0][0],
                        t_device=host_time - len(run) / rate,
                        rate_hz=rate,
                        channels=self.settings.channels,
                        data=data.astype(np.float32),
                        t_arrival=host_time,
                    )
                )
                self.stats.blocks += 1
                self.stats.samples += len(run)
                start = i
        return blocks

    def _bad(self, raw: bytes, why: str) -> None:
        self.malformed += 1
        self.stats.protocol_errors += 1
        if self.malformed <= LOGGED_ERRORS:
            log.warning("csv stream: skipped line %r: %s", raw[:40], why)
        elif self.malformed == LOGGED_ERRORS + 1:
            log.warning("csv stream: more malformed lines; counting them without logging")
