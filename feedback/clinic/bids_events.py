"""A session's events from the clinic database, on the time line of its recording, for BIDS
`*_events.tsv`: cues, work periods, reps, contractions, stimulation bursts, quality flags and
every other event the station sent.

Time zero is the recording's first sample, which is sample index 0 of the session (the recorder
starts with the session's first block). Where a message carries a sample index, the onset is
that index over the rate; otherwise its wall-clock time is mapped through the median offset
between wall clock and sample time of the indexed messages (cues and live), marked
`onset_source = clock` (good to about the 0.1 s at which live messages go out).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from typing import Any

from feedback.clinic.db import Backend

EVENT_COLUMNS = ("onset", "duration", "trial_type", "detail", "channel", "sample", "onset_source")
EVENTS_JSON = {
    "onset": {"Description": "Seconds from the first sample of the recording.", "Units": "s"},
    "duration": {"Description": "Seconds; 0 for an instant, n/a when the end is unknown.",
                 "Units": "s"},
    "trial_type": {"Description": "Kind of event: cue_<kind> (a cue shown or played to the "
                   "patient: phase, zone, rep, quality, calibration), work_period (from a work "
                   "cue to the next phase cue), rep (a repetition counted, or a work period "
                   "missed), contraction (a detected contraction, onset to offset), stim_burst "
                   "(an electrical stimulation burst: ramp up, hold, ramp down), quality (a "
                   "signal-quality flag while it was raised), or the station's event type."},
    "detail": {"Description": "What the event says: cue text, rep result, contraction peak "
               "in % MVC, stimulation parameters, the fields of other events."},
    "channel": {"Description": "The EMG or stimulation channel the event concerns."},
    "sample": {"Description": "Sample index of the onset in the recording (n/a for events "
               "timed by the wall clock)."},
    "onset_source": {"Description": "How the onset was timed.", "Levels": {
        "sample": "from the sample index the station gave",
        "clock": "from the event's wall-clock time, mapped onto the recording by the median "
                 "offset of indexed messages (accuracy about 0.1 s)"}},
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class BidsEvent:
    onset: float
    duration: float | None  # None: n/a
    trial_type: str
    detail: str
    channel: str = "n/a"
    sample: int | None = None
    onset_source: str = "sample"

    def row(self) -> list[str]:
        return [
            f"{self.onset:.4f}",
            "n/a" if self.duration is None else f"{self.duration:.4f}",
            self.trial_type,
            _clean(self.detail) or "n/a",
            _clean(self.channel) or "n/a",
            "n/a" if self.sample is None else str(self.sample),
            self.onset_source,
        ]


def _clean(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")


class _Timeline:
    def __init__(self, db: Backend, sid: str, rate_hz: float) -> None:
        self.rate = rate_hz
        indexed = db.query(
            "SELECT t, sample_index FROM cues WHERE session_id = ? AND sample_index IS NOT NULL",
            (sid,),
        )
        if not indexed:  # no cues (free practice): the live messages, in whichever table
            indexed = (
                _query_or_none(
                    db,
                    "SELECT t, sample_index FROM live WHERE session_id = ?"
                    " AND sample_index IS NOT NULL",
                    sid,
                )
                or _query_or_none(
                    db,
                    "SELECT t_first, index_min FROM live_seconds WHERE session_id = ?"
                    " AND index_min IS NOT NULL",
                    sid,
                )
                or []
            )
        offsets = [float(t) - int(i) / rate_hz for t, i in indexed]
        self.clock0 = statistics.median(offsets) if offsets else None

    def at(self, index: Any, t: float) -> tuple[float, int | None, str]:
        """(onset s, sample, source) of a message with this sample index (or None) sent at t."""
        if index is not None:
            return int(index) / self.rate, int(index), "sample"
        return self.clock(t), None, "clock"

    def clock(self, t: float) -> float:
        return max(0.0, t - self.clock0) if self.clock0 is not None else 0.0


def _query_or_none(db: Backend, sql: str, sid: str) -> list[tuple[Any, ...]] | None:
    try:
        return db.query(sql, (sid,))
    except Exception:  # the table is not in this schema version (sqlite3 / psycopg errors)
        return None


def session_events(db: Backend, sid: str, rate_hz: float) -> list[BidsEvent]:
    line = _Timeline(db, sid, rate_hz)
    events: list[BidsEvent] = []
    phases: list[tuple[float, int | None, str]] = []
    for t, kind, value, index in db.query(
        "SELECT t, kind, value, sample_index FROM cues WHERE session_id = ? ORDER BY msg_id",
        (sid,),
    ):
        onset, sample, src = line.at(index, t)
        events.append(
            BidsEvent(onset, 0.0, f"cue_{kind}", str(value), sample=sample, onset_source=src)
        )
        if kind == "phase":
            phases.append((onset, sample, str(value)))
    reps = db.query(
        "SELECT period, achieved, rep, at_index, t, hold_s, peak_pct_mvc FROM reps"
        " WHERE session_id = ? ORDER BY period",
        (sid,),
    )
    events += _work_periods(phases, {int(r[0]): bool(r[1]) for r in reps})
    for period, ok, rep, at_index, t, hold_s, peak in reps:
        onset, sample, src = line.at(at_index, t)
        result = f"rep {rep}" if ok else "missed"
        detail = f"period {period} {result} hold {float(hold_s):.2f}s peak {float(peak):.0f}%MVC"
        events.append(BidsEvent(onset, 0.0, "rep", detail, sample=sample, onset_source=src))
    raised: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
    for t, kind, detail_json in db.query(
        "SELECT t, type, detail_json FROM events WHERE session_id = ? ORDER BY msg_id", (sid,)
    ):
        d = json.loads(detail_json)
        if kind == "quality":
            events += _quality(d, line.clock(t), raised)
        else:
            events.append(_event(kind, d, t, line))
    for (channel, flag), (onset, _) in raised.items():  # still raised when the session ended
        events.append(
            BidsEvent(
                onset, None, "quality", f"{flag} (not cleared)", channel, onset_source="clock"
            )
        )
    events.sort(key=lambda e: (e.onset, e.trial_type))
    return events


def _work_periods(
    phases: list[tuple[float, int | None, str]], achieved: dict[int, bool]
) -> list[BidsEvent]:
    out = []
    period = 0
    for k, (onset, sample, value) in enumerate(phases):
        if value != "work":
            continue
        period += 1
        end = phases[k + 1][0] if k + 1 < len(phases) else None
        done = achieved.get(period)
        detail = f"period {period}" + ("" if done is None else (" achieved" if done else " missed"))
        out.append(
            BidsEvent(
                onset,
                None if end is None else end - onset,
                "work_period",
                detail,
                sample=sample,
                onset_source="sample" if sample is not None else "clock",
            )
        )
    return out


def _quality(
    d: dict[str, Any], onset: float, raised: dict[tuple[str, str], tuple[float, dict[str, Any]]]
) -> list[BidsEvent]:
    """A flag is one event from raised to cleared (the station sends both edges)."""
    key = (str(d.get("channel", "n/a")), str(d.get("flag", "?")))
    if d.get("active", True):
        raised.setdefault(key, (onset, d))
        return []
    start = raised.pop(key, None)
    if start is None:  # a clear without its raise (the raise was lost): an instant
        return [BidsEvent(onset, 0.0, "quality", f"{key[1]} cleared", key[0], None, "clock")]
    value = start[1].get("value")
    detail = key[1] + ("" if value is None else f" value {value}")
    return [BidsEvent(start[0], onset - start[0], "quality", detail, key[0], None, "clock")]


def _event(kind: str, d: dict[str, Any], t: float, line: _Timeline) -> BidsEvent:
    rate = line.rate
    if kind == "contraction" and d.get("onset_index") is not None:
        on, off = int(d["onset_index"]), int(d.get("offset_index", d["onset_index"]))
        detail = f"#{d.get('number', '?')} peak {float(d.get('peak_pct', 0)):.0f}%MVC"
        return BidsEvent(
            on / rate, (off - on) / rate, "contraction", detail, str(d.get("channel", "n/a")), on
        )
    if kind == "stim_burst":
        ms = sum(float(d.get(k) or 0) for k in ("ramp_up_ms", "hold_ms", "ramp_down_ms"))
        detail = (
            f"burst {d.get('burst', '?')} {float(d.get('amplitude_ma', 0)):g}mA "
            f"{float(d.get('frequency_hz', 0)):g}Hz {float(d.get('pulse_width_us', 0)):g}us"
        )
        channel = str(d.get("channel", "n/a"))
        if d.get("blank_from") is not None:  # the blanking window starts with the burst
            on = int(d["blank_from"])
            return BidsEvent(on / rate, ms / 1000.0, "stim_burst", detail, channel, on)
        return BidsEvent(line.clock(t), ms / 1000.0, kind, detail, channel, None, "clock")
    fields = ", ".join(f"{k}={v}" for k, v in d.items() if isinstance(v, str | int | float))
    return BidsEvent(line.clock(t), 0.0, kind, fields[:200], onset_source="clock")
