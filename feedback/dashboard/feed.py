"""What the dashboard draws, made in the session process without Qt: `DashFrame`s.

The feed keeps a 10 s ring of display-rate samples (raw EMG decimated by keeping the largest
excursion in each bin, so spikes and artefacts stay visible; the envelope by the bin mean) and
makes a self-contained snapshot on demand. Every frame carries the whole window, so a frame the
dashboard never sees (latest wins) costs nothing but a skipped redraw.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from feedback.outputs.decimate import decimate
from feedback.pipeline import Tick

WINDOW_S = 10.0
DISPLAY_HZ = 200.0


@dataclass(frozen=True, slots=True)
class RepRow:
    """One row of the therapist's rep table: the rep message's own values (feedback.rep_metrics),
    never recomputed here, so the table, the live view and the clinic show the same numbers."""

    rep: int
    set_no: int
    at_s: float  # seconds from the session start (device samples)
    time_to_band_s: float | None  # from the contraction's onset (docs/metrics.md)
    peak_pct_mvc: float  # the rep's contraction's peak, target channel
    vm_vl_ratio: float | None

    @classmethod
    def of(cls, metrics: dict[str, Any], set_no: int, at_s: float) -> RepRow:
        """From a rep message body (or the dict the session sends as one)."""
        return cls(
            int(metrics["rep"]),
            set_no,
            at_s,
            metrics.get("time_to_band_s"),
            float(metrics.get("peak_pct_mvc") or 0.0),
            metrics.get("vm_vl_ratio"),
        )


@dataclass(slots=True)
class Header:
    """Fixed for a session: set once, sent with every frame (small)."""

    patient: str = ""
    protocol: str = ""
    protocols: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    target_channel: str = "VM"
    mvc_mv: dict[str, float] = field(default_factory=dict)
    trigger_fraction: float = 0.8
    reps_total: int = 0  # 0: free practice (no reps counted)
    sets: int = 1
    calibrated: bool = True  # False: % MVC rests on a placeholder MVC; no band is shown


@dataclass(slots=True)
class DashFrame:
    header: Header
    t_end_s: float
    display_hz: float
    raw: np.ndarray  # (n_channels, n) mV, band-passed, decimated
    envelope: np.ndarray  # (n_channels, n) mV
    blanked: np.ndarray  # (n,) bool
    pct_mvc: dict[str, float]
    band: tuple[float, float]
    phase: str
    holding: bool
    hold_progress: float
    phase_left_s: float
    session_left_s: float
    reps_done: int
    set_no: int
    vm_vl_ratio: float | None
    onset_diff_ms: float | None
    link: str
    mqtt: str
    gaps: int
    protocol_errors: int
    stim_state: str
    stim_bursts: int
    reps: tuple[RepRow, ...]
    note: str = ""


class DisplayWindow(NamedTuple):
    """The last WINDOW_S of display samples, oldest first; copies, as the ring keeps moving."""

    raw: np.ndarray
    envelope: np.ndarray
    blanked: np.ndarray


class DashboardFeed:
    def __init__(self, header: Header, rate_hz: float, display_hz: float = DISPLAY_HZ) -> None:
        self.header = header
        self.rate_hz = rate_hz
        self.factor = max(1, round(rate_hz / display_hz))
        self.display_hz = rate_hz / self.factor
        n_ch = len(header.channels)
        self.size = round(WINDOW_S * self.display_hz)
        self._raw = np.zeros((n_ch, self.size), dtype=np.float32)
        self._env = np.zeros((n_ch, self.size), dtype=np.float32)
        self._blank = np.zeros(self.size, dtype=bool)
        self._filled = 0  # display samples written so far
        self._carry: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._origin: int | None = None
        self._end_index = 0
        self.reps: list[RepRow] = []
        self.onset_diff_ms: float | None = None  # of the newest contraction that had a VL onset
        self.last: Tick | None = None
        self.status: dict[str, object] = {}

    def add(self, tick: Tick) -> None:
        """Decimate one tick into the ring; cheap, called for every block."""
        block = tick.processed.block
        if self._origin is None:
            self._origin = block.first_index
        self._end_index = block.end_index
        raw, env = tick.processed.filtered, tick.processed.envelope
        blank = tick.blanked if tick.blanked is not None else np.zeros(raw.shape[1], bool)
        if self._carry is not None:
            raw = np.concatenate([self._carry[0], raw], axis=1)
            env = np.concatenate([self._carry[1], env], axis=1)
            blank = np.concatenate([self._carry[2], blank])
        whole = raw.shape[1] // self.factor * self.factor
        self._carry = (raw[:, whole:], env[:, whole:], blank[whole:])
        if whole:
            self.write(*decimate(raw[:, :whole], env[:, :whole], blank[:whole], self.factor))
        for c in tick.contractions:
            if c.vm_vl_onset_ms is not None:  # VL onset minus VM onset: positive when VM led
                self.onset_diff_ms = c.vm_vl_onset_ms
        if tick.protocol and tick.protocol != self.header.protocol:  # switched mid-session
            h = self.header
            self.header = replace(
                h, protocol=tick.protocol, reps_total=tick.reps_total, sets=tick.sets
            )
        self.last = tick

    def add_rep(self, metrics: dict[str, Any]) -> None:
        """A rep as the session reported it (a RepDone item); achieved reps only."""
        if not metrics.get("achieved") or self.last is None:
            return
        at_s = (int(metrics["at_index"]) - (self._origin or 0)) / self.rate_hz
        self.reps.append(RepRow.of(metrics, self.last.exercise.set_no, at_s))

    def write(self, raw: np.ndarray, env: np.ndarray, blank: np.ndarray) -> None:
        n = raw.shape[1]
        if n >= self.size:
            raw, env, blank, n = (
                raw[:, -self.size :],
                env[:, -self.size :],
                blank[-self.size :],
                self.size,
            )
        pos = self._filled % self.size
        first = min(n, self.size - pos)
        self._raw[:, pos : pos + first] = raw[:, :first]
        self._env[:, pos : pos + first] = env[:, :first]
        self._blank[pos : pos + first] = blank[:first]
        rest = n - first
        if rest:
            self._raw[:, :rest] = raw[:, first:]
            self._env[:, :rest] = env[:, first:]
            self._blank[:rest] = blank[first:]
        self._filled += n

    def display_window(self) -> DisplayWindow:
        return DisplayWindow(
            self._in_order(self._raw), self._in_order(self._env), self._in_order(self._blank)
        )

    def _in_order(self, ring: np.ndarray) -> np.ndarray:
        if self._filled < self.size:
            return ring[..., : self._filled].copy()
        pos = self._filled % self.size
        return np.concatenate([ring[..., pos:], ring[..., :pos]], axis=-1)

    def frame(self, **status: object) -> DashFrame | None:
        """A snapshot of the window and the newest state; None before the first tick."""
        tick = self.last
        if tick is None:
            return None
        ex = tick.exercise
        s = {**self.status, **status}
        shown = self.display_window()
        return DashFrame(
            header=self.header,
            t_end_s=(self._end_index - (self._origin or 0)) / self.rate_hz,
            display_hz=self.display_hz,
            raw=shown.raw,
            envelope=shown.envelope,
            blanked=shown.blanked,
            pct_mvc=dict(tick.pct_mvc),
            band=tick.band,
            phase=ex.phase.name.lower(),
            holding=ex.holding,
            hold_progress=ex.hold_progress,
            phase_left_s=ex.phase_left_s,
            session_left_s=ex.session_left_s,
            reps_done=ex.reps_done,
            set_no=ex.set_no,
            vm_vl_ratio=tick.vm_vl_ratio,
            onset_diff_ms=_opt_float(s.get("onset_diff_ms", self.onset_diff_ms)),
            link=str(s.get("link", "up")),
            mqtt=str(s.get("mqtt", "-")),
            gaps=int(str(s.get("gaps", 0))),
            protocol_errors=int(str(s.get("protocol_errors", 0))),
            stim_state=str(s.get("stim_state", "off")),
            stim_bursts=int(str(s.get("stim_bursts", 0))),
            reps=tuple(self.reps),
            note=str(s.get("note", "")),
        )


def _opt_float(v: object) -> float | None:
    return None if v is None else float(str(v))
