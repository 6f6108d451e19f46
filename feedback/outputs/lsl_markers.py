"""The session's events as an LSL marker stream, `<prefix>-events` (type `Markers`, one string
channel, irregular rate), for LabRecorder to store next to the envelope and activation streams.

Each marker is one compact JSON object: `n` (1, 2, 3, ... per session: a consumer that sees
n jump knows a marker was lost), `kind`, `i` (the sample index it refers to, or null) and the
event's own fields. Kinds: `onset`/`offset` (per channel, Hodges-Bui instant), `contraction`
(stamped at its onset, with `duration_s`), `rep`, `cue`, `stim_burst` (with `duration_s`),
`quality` (a channel's flags changed: `flags` lists the reasons, empty when clean again),
`gap`, and the other session events (band, calibration, protocol, stimulation safety,
session start/end).

Timestamps: a marker about a sample carries that sample's LSL time in the numeric streams, not
the time it was published (a contraction is known only once it has ended; its marker is stamped
at its onset), so marker timestamps are in time order per kind but not overall; `n` gives the
order of publication. `SampleClock` keeps the anchor of every recent chunk pushed to the numeric
streams, so the mapping is the one those samples were stamped with. Events about no sample
(a band set by the therapist) are stamped when published.
"""

from __future__ import annotations

import bisect
import collections
import json
import logging
import math
from typing import Any

import numpy as np

from feedback.pipeline import Tick
from feedback.processing.quality import describe

log = logging.getLogger(__name__)

HORIZON_S = 120.0  # anchors kept: a contraction or rep refers back seconds, not minutes
# Session messages already published from the tick itself (cues), or whose body is a whole
# settings snapshot (start/end: only the fact and the session id go out).
_FROM_TICK = frozenset({"cue"})
_BRIEF = frozenset({"session_start", "session_end", "status"})
# Which field of a session message names the sample it is about.
_INDEX_FIELD = {
    "rep": "at_index",
    "contraction": "onset_index",
    "stim_burst": "blank_from",
    "gap": "from_index",
    "band_raised": "from_index",
}


class SampleClock:
    """Sample index → the LSL time the numeric streams gave that sample.

    liblsl stamps a pushed chunk's samples back from the chunk's timestamp at the nominal rate,
    so one anchor (first index, its time) per chunk reproduces every sample's time exactly."""

    def __init__(self, rate_hz: float, horizon_s: float = HORIZON_S) -> None:
        self.rate_hz = rate_hz
        self._first: collections.deque[int] = collections.deque()
        self._time: collections.deque[float] = collections.deque()
        self._keep = max(16, round(horizon_s * rate_hz))  # in samples

    def add(self, first_index: int, n_samples: int, t_last: float) -> None:
        if n_samples <= 0:
            return
        self._first.append(first_index)
        self._time.append(t_last - (n_samples - 1) / self.rate_hz)
        while len(self._first) > 1 and first_index - self._first[0] > self._keep:
            self._first.popleft()
            self._time.popleft()

    def at(self, index: int) -> float | None:
        """None before the first chunk; older than the horizon: extrapolated from the oldest."""
        if not self._first:
            return None
        k = max(0, bisect.bisect_right(self._first, index) - 1)
        return self._time[k] + (index - self._first[k]) / self.rate_hz


class MarkerOutlet:
    """Non-blocking like the numeric outlets: `push_sample` copies into liblsl's buffer."""

    def __init__(self, prefix: str, source_id: str, clock: SampleClock) -> None:
        import pylsl

        self._pylsl = pylsl
        self.clock = clock
        self.sent = 0  # also the last `n`
        info = pylsl.StreamInfo(
            f"{prefix}-events", "Markers", 1, pylsl.IRREGULAR_RATE, "string", f"{source_id}-events"
        )
        desc = info.desc()
        ch = desc.append_child("channels").append_child("channel")
        ch.append_child_value("label", "event")
        ch.append_child_value("type", "Marker")
        ch.append_child_value("format", "json")
        acq = desc.append_child("acquisition")
        acq.append_child_value("manufacturer", "vm-feedback")
        acq.append_child_value("session", source_id)
        self.outlet = pylsl.StreamOutlet(info, chunk_size=1, max_buffered=360)
        self._flags: np.ndarray | None = None  # per channel, at the last sample seen

    # -- from each processed block ----------------------------------------------------------
    def on_tick(self, tick: Tick) -> None:
        block = tick.processed.block
        if tick.onsets is not None:
            for ev in tick.onsets.events:
                self.mark(
                    ev.kind, ev.at_index, {"channel": ev.channel, "detected_i": ev.detected_index}
                )
        for cue in tick.cues:
            self.mark("cue", cue.index, {"cue": cue.kind, "value": cue.value})
        if tick.quality is not None and tick.quality.flags.shape[1]:
            self._quality(block.first_index, block.channels, tick.quality.flags)

    def _quality(self, first: int, channels: tuple[str, ...], flags: np.ndarray) -> None:
        before = np.zeros(flags.shape[0], np.uint8) if self._flags is None else self._flags
        prev = np.concatenate([before[:, None], flags[:, :-1]], axis=1)
        for c, s in np.argwhere(flags != prev).tolist():  # row-major: per channel, in order
            value = int(flags[c, s])
            self.mark("quality", first + s, {"channel": channels[c], "flags": describe(value)})
        self._flags = flags[:, -1].copy()

    # -- from the session's messages (events, reps, session start and end) -----------------
    def on_message(self, kind: str, body: dict[str, Any]) -> None:
        if kind in _FROM_TICK:
            return
        if kind in _BRIEF:
            self.mark(kind, None, {})
            return
        field = _INDEX_FIELD.get(kind)
        index = body.get(field) if field else None
        fields = dict(body)
        if kind == "stim_burst":
            try:
                ms = sum(
                    float(body.get(k) or 0.0) for k in ("ramp_up_ms", "hold_ms", "ramp_down_ms")
                )
            except (TypeError, ValueError):  # a timing that is no number: the marker still goes
                ms = math.nan
            fields["duration_s"] = round(ms / 1000.0, 6) if math.isfinite(ms) else None
        numbered = isinstance(index, int | np.integer) and not isinstance(index, bool)
        self.mark(kind, int(index) if numbered and index is not None else None, fields)

    def mark(self, kind: str, index: int | None, fields: dict[str, Any]) -> None:
        self.sent += 1
        stamp = None if index is None else self.clock.at(index)
        marker: dict[str, Any] = {"n": self.sent, "kind": kind, "i": index}
        for key, value in fields.items():
            marker[f"body_{key}" if key in marker else key] = value
        # Strict JSON (no NaN/Infinity, which json.dumps writes and JSON parsers refuse).
        text = json.dumps(_finite(marker), separators=(",", ":"), default=_plain, allow_nan=False)
        self.outlet.push_sample([text], self._pylsl.local_clock() if stamp is None else stamp)


def _plain(value: object) -> object:
    """numpy scalars and arrays as numbers, anything else as text: a marker is never lost to
    encoding."""
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return _finite(item())
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def _finite(value: Any) -> Any:
    """NaN and infinities as null, in nested dicts and lists too."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
