"""What a remote dashboard knows about each station, from MQTT: pure, no Qt, no I/O.

`RemoteModel.on_message(topic, payload)` takes every message of the subscribed stations: binary
`stream` packets fill a per-station 10 s ring (the same `DashboardFeed` ring the local dashboard
uses) and the newest state; `status`, `session`, `rep` and `event` messages (JSON) add what the
stream does not carry: station state, the rep table, the VM–VL onset difference of the newest
contraction, command verdicts. `frame(station)` makes the same `DashFrame` the therapist widgets
draw locally. A lock makes it safe to feed from the MQTT thread and read from the Qt thread.

Every payload comes from the network: JSON is bounded (size, depth) before it is parsed, and
whatever a message provokes is counted (`errors`, and `bad` per station) and logged, never
raised: one bad packet must not end the dashboard's MQTT task.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from feedback.clinic.validation import InvalidMessage, parse_json
from feedback.dashboard.feed import DashboardFeed, DashFrame, Header, RepRow
from feedback.outputs.stream import StreamPacket, decode
from feedback.outputs.topics import TOPIC_ROOT

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StationView:
    station: str
    state: str = "unknown"  # retained status: in_session / idle / offline
    session: str | None = None
    feed: DashboardFeed | None = None
    packet: StreamPacket | None = None
    end_index: int = 0  # device index after the newest display sample
    packets: int = 0
    dropped: int = 0  # packets lost on the way (latest wins): holes in the counter
    bad: int = 0  # packets and messages that could not be used (counted, logged)
    reps: list[RepRow] = field(default_factory=list)
    onset_diff_ms: float | None = None
    estop: bool = False  # a stim_estop event came after the newest packet was made
    trigger_fraction: float = 0.8
    note: str = ""
    received_at: float = 0.0  # local time of the newest packet
    version: int = 0  # bumped on every change the view should draw


def calibrated(p: StreamPacket) -> bool:
    """The stream has no flag for it: the station sends MVC 0 (unknown) for every channel of an
    uncalibrated session, whose % MVC then rests on a made-up maximum."""
    return bool(p.mvc_mv) and all(m > 0 for m in p.mvc_mv)


class RemoteModel:
    def __init__(self, clinic: str, clock: Any = time.time) -> None:
        self.clinic = clinic
        self.stations: dict[str, StationView] = {}
        self.latency_s: list[float] = []  # sample arrival at the station → packet applied here
        self.clock = clock
        self.errors = 0  # messages refused or that failed while applied, all stations
        self._lock = threading.Lock()

    def view(self, station: str) -> StationView:
        return self.stations.setdefault(station, StationView(station))

    def on_message(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT or parts[2] != self.clinic:
            return
        station, leaf = parts[3], parts[4]
        with self._lock:
            v = self.view(station)
            try:
                if leaf == "stream":
                    self._packet(v, payload)
                elif payload:
                    body = parse_json(payload)
                    if isinstance(body, dict):
                        self._json(v, leaf, body)
            except Exception as exc:  # a peer's bytes: refused, counted, never raised
                self._refused(v, topic, exc)
            v.version += 1

    def _refused(self, v: StationView, topic: str, exc: Exception) -> None:
        v.bad += 1
        self.errors += 1
        if self.errors % 100 == 1:  # a flood logs every 100th
            why = exc.reason if isinstance(exc, InvalidMessage) else f"{type(exc).__name__}: {exc}"
            log.warning("message on %s refused (%d so far): %s", topic, self.errors, why[:200])

    def _packet(self, v: StationView, payload: bytes) -> None:
        p = decode(payload)  # StreamError: counted by on_message
        now = self.clock()
        self.latency_s.append(now - p.t_sample)
        if p.session != v.session or v.feed is None or p.channels != v.feed.header.channels:
            self._new_session(v, p)
        assert v.feed is not None
        if v.packet is not None and p.counter > v.packet.counter + 1:
            v.dropped += p.counter - v.packet.counter - 1
        missing = (p.first_index - v.end_index) // p.decimation
        if missing > 0:  # a dropped packet: an empty stretch, so the time axis stays true
            n = min(missing, v.feed.size)
            c = len(p.channels)
            v.feed.write(np.zeros((c, n), np.float32), np.zeros((c, n), np.float32),
                         np.zeros(n, bool))  # fmt: skip
        v.feed.write(p.raw.astype(np.float32), p.envelope.astype(np.float32), p.blanked)
        v.end_index = p.first_index + p.n * p.decimation
        v.packet, v.received_at = p, now
        v.packets += 1
        v.state = "in_session" if p.phase != "done" else v.state

    def _new_session(self, v: StationView, p: StreamPacket) -> None:
        header = Header(
            patient=p.patient, protocol=p.protocol, protocols=(p.protocol,),
            channels=p.channels, target_channel=p.channels[p.target],
            mvc_mv={c: m for c, m in zip(p.channels, p.mvc_mv, strict=True) if m > 0},
            trigger_fraction=v.trigger_fraction, reps_total=p.reps_total, sets=p.sets,
            calibrated=calibrated(p),
        )  # fmt: skip
        if v.session != p.session:
            v.reps, v.onset_diff_ms, v.note, v.estop = [], None, "", False
        v.session = p.session
        v.feed = DashboardFeed(header, p.rate_hz, display_hz=p.display_hz)
        v.end_index, v.packet = p.first_index, None

    def _json(self, v: StationView, leaf: str, body: dict[str, Any]) -> None:
        kind = body.get("type")
        if kind == "status":
            v.state = str(body.get("state", "unknown"))
        elif kind == "session_start":
            stim = body.get("settings", {}).get("stim_burst", {})
            v.trigger_fraction = float(stim.get("trigger_fraction", v.trigger_fraction))
        elif kind == "session_end":
            v.note = f"session ended: {body.get('summary', {}).get('stopped_by', '?')}"
        elif kind == "command_ack":  # the stop's own answer: it comes before the events
            answer = "acknowledged" if body.get("accepted") else f"refused: {body.get('reason')}"
            v.note = f"emergency_stop from {body.get('issuer')} {answer}"
            v.estop = v.estop or body.get("latched") is True
        elif body.get("session") != v.session:
            return  # rep/event of a session this view has not seen a packet of yet
        elif kind == "rep" and body.get("achieved"):
            p = v.packet
            rate = p.rate_hz if p is not None else 1.0
            v.reps.append(
                RepRow.of(body, p.set_no if p is not None else 1, body["at_index"] / rate)
            )
        elif kind == "contraction" and body.get("vm_vl_onset_ms") is not None:
            v.onset_diff_ms = float(body["vm_vl_onset_ms"])
        elif kind in ("stim_estop", "stim_rearm"):  # the stream ends with the session: say it
            v.estop = kind == "stim_estop"
        elif kind == "command_result":
            verdict = "accepted" if body.get("accepted") else f"refused: {body.get('reason')}"
            v.note = f"{body.get('action')} from {body.get('issuer')} {verdict}"

    def frame(self, station: str, mqtt: str = "up") -> DashFrame | None:
        with self._lock:
            v = self.stations.get(station)
            if v is None or v.feed is None or v.packet is None:
                return None
            return self._frame(v, mqtt)

    def _frame(self, v: StationView, mqtt: str) -> DashFrame:
        p, feed = v.packet, v.feed
        assert p is not None and feed is not None
        age = self.clock() - v.received_at
        shown = feed.display_window()
        return DashFrame(
            header=feed.header, t_end_s=v.end_index / p.rate_hz, display_hz=feed.display_hz,
            raw=shown.raw, envelope=shown.envelope, blanked=shown.blanked,
            pct_mvc=dict(zip(p.channels, p.pct_mvc, strict=True)), band=p.band, phase=p.phase,
            holding=p.holding, hold_progress=p.hold_progress, phase_left_s=p.phase_left_s,
            session_left_s=0.0, reps_done=p.reps_done, set_no=p.set_no,
            vm_vl_ratio=p.vm_vl_ratio, onset_diff_ms=v.onset_diff_ms,
            link="up" if p.link_up else "down",
            mqtt=f"{mqtt}; {v.state}; stream {age:.1f} s ago, {v.dropped} dropped",
            gaps=p.gaps, protocol_errors=p.protocol_errors,
            stim_state="estop" if v.estop else p.stim_state,
            stim_bursts=p.stim_bursts, reps=tuple(v.reps), note=v.note,
        )  # fmt: skip

    def summary(self, station: str) -> dict[str, Any]:
        """One overview row: what the station picker shows for each station."""
        with self._lock:
            v = self.view(station)
            p = v.packet
            target = None if p is None else p.pct_mvc[p.target]
            return {
                "station": station, "state": v.state, "session": v.session,
                "phase": "–" if p is None else p.phase,
                "pct_mvc": target, "reps": "–" if p is None else f"{p.reps_done}/{p.reps_total}",
                "stim": "–" if p is None else "estop" if v.estop else p.stim_state,
                "packets": v.packets,
                "dropped": v.dropped, "note": v.note, "version": v.version,
            }  # fmt: skip

    def session_of(self, station: str) -> str | None:
        with self._lock:
            v = self.stations.get(station)
            return None if v is None else v.session
