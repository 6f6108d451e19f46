"""The terminal live view (rich), read by the patient: what to do now in plain words, how hard
the muscle works against the target band, a countdown that says what it counts, the reps (or
the contractions in free practice), and one short line on the station's links.

No jargon here (no median frequency, onsets or envelope chain: those are in the report, the
session log and the therapist's dashboard). Without a calibration the level is the raw
envelope in mV, labelled "uncalibrated", and no band is drawn: a band against a made-up MVC
would tell the patient nothing true.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from feedback.outputs.effort import effort_word, whole_seconds, zone_of
from feedback.processing.metrics import Contraction

BAR_WIDTH = 50
BAR_MAX_PCT = 100.0


@dataclass(slots=True)
class ViewState:
    """What the view shows; the session runner overwrites it (latest wins), the view reads it."""

    patient: str = ""
    protocol: str = ""
    target_channel: str = "VM"
    band: tuple[float, float] = (0.0, 0.0)
    pct_mvc: dict[str, float] = field(default_factory=dict)
    envelope_mv: dict[str, float] = field(default_factory=dict)
    phase: str = "ready"
    holding: bool = False
    hold_progress: float = 0.0
    rep_held: bool = False  # this effort's rep is counted: it reads as done until the rest
    reps_done: int | None = 0  # None: no reps are counted (free practice)
    reps_total: int = 0
    phase_left_s: float | None = None  # None: no block yet, so no countdown to show
    session_left_s: float = 0.0
    vm_vl_ratio: float | None = None
    link: str = "connecting"
    mqtt: str = "connecting"
    mqtt_backlog: int = 0
    group_delay_ms: float = 0.0  # in the start line and the report; not shown to the patient
    gaps: int = 0
    lsi: float | None = None
    onset: dict[str, bool] = field(default_factory=dict)  # channel → active now
    problems: dict[str, tuple[str, ...]] = field(default_factory=dict)
    last_contraction: Contraction | None = None
    calibrated: bool = True  # False: % MVC would rest on a placeholder MVC
    calibration_source: str = "configured"
    free: bool = False  # free practice: no timing, contractions counted
    contractions: int = 0
    contracting: bool = False
    children: dict[str, str] = field(default_factory=dict)  # helper → what happened to it


def activation_bar(pct: float, low: float, high: float) -> Text:
    """A bar 0–100 % MVC with the band marked; the fill is green inside the band."""
    scale = BAR_WIDTH / BAR_MAX_PCT
    filled = round(min(max(pct, 0.0), BAR_MAX_PCT) * scale)
    lo, hi = round(low * scale), round(min(high, BAR_MAX_PCT) * scale)
    colour = "green" if low <= pct <= high else ("yellow" if pct < low else "red")
    bar = Text()
    for i in range(BAR_WIDTH):
        in_band = lo <= i < hi
        if i < filled:
            bar.append("█", style=colour)
        else:
            bar.append("░" if in_band else "·", style="green dim" if in_band else "dim")
    return bar


WORK_WORDS = {"push": "PUSH", "hold": "HOLD", "ease": "EASE OFF A LITTLE", "relax": "RELAX"}


def instruction(view: ViewState) -> str:
    """The one thing to do now: push, hold, ease off, relax, get ready."""
    if view.phase == "work":
        if view.free:
            return "HOLD" if view.contracting else "PUSH WHEN READY"
        if view.calibrated:
            pct = view.pct_mvc.get(view.target_channel, 0.0)
            zone = zone_of(pct, view.band, view.holding)
        else:  # no band to judge against: contracting or not is all there is
            zone = "in_band" if view.contracting else "below"
        return WORK_WORDS[effort_word(zone, held=view.rep_held, left_s=view.phase_left_s)]
    return {
        "ready": "GET READY",
        "rest": "RELAX",
        "done": "WELL DONE",
        "calibrating": "CALIBRATING",
    }.get(view.phase, view.phase.upper())


def countdown(view: ViewState) -> str:
    """A countdown that says what it counts, e.g. `rest 3 s`, `push for 4 s more`."""
    if view.phase_left_s is None:
        return ""
    left = f"{whole_seconds(view.phase_left_s)} s"
    if view.phase == "ready":
        return f"starting in {left}"
    if view.phase == "rest":
        return f"rest {left}"
    if view.phase == "work" and not view.free:
        return f"this effort: {left} to go"
    return ""


def hold_text(view: ViewState) -> str:
    """The hold's progress; a held rep stays done (the progress itself drops to 0 as the
    patient eases off) until the rest starts."""
    if view.rep_held:
        return "hold 100 % done: rep held"
    return f"hold {view.hold_progress * 100:3.0f} % done"


def reps_text(view: ViewState) -> str:
    """`2 of 10 held`, or `—` when no reps are counted (free practice): never a made-up 0."""
    if view.reps_done is None:
        return "—"
    return f"{view.reps_done} of {view.reps_total} held"


def level_cell(view: ViewState) -> Text:
    ch = view.target_channel
    if view.calibrated:
        pct = view.pct_mvc.get(ch, 0.0)
        low, high = view.band
        return Text.assemble(activation_bar(pct, low, high), f" {pct:5.1f} % MVC")
    mv = view.envelope_mv.get(ch, 0.0)
    return Text(f"{mv:.3f} mV (uncalibrated)")


def contraction_line(c: Contraction) -> str:
    """The last contraction in plain words: how long, how hard, how long in the band."""
    if c.calibrated:
        level = f"strongest {c.peak_pct:.0f} % MVC"
    else:
        level = f"strongest {c.peak_mv or 0.0:.3f} mV (uncalibrated)"
    parts = [f"lasted {c.duration_s:.1f} s", level]
    if c.calibrated and c.longest_hold_s is not None:
        parts.append(f"held in the band {c.longest_hold_s:.1f} s")
    if c.vm_vl_ratio is not None:  # VM:VL, in words: inner against outer thigh muscle
        parts.append(f"inner/outer thigh {c.vm_vl_ratio:.2f}")
    return ", ".join(parts)


def render(view: ViewState) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_column(justify="right", style="bold")
    table.add_column()
    word = instruction(view)
    style = "bold green" if word == "HOLD" else "bold"
    table.add_row("now", Text(word, style=style))
    if text := countdown(view):
        table.add_row("", text)
    if view.phase == "work" and not view.free and view.calibrated:
        table.add_row("", hold_text(view))
    table.add_row(view.target_channel, level_cell(view))
    if view.calibrated:
        low, high = view.band
        table.add_row("target", f"{low:.0f}–{high:.0f} % MVC")
    else:
        table.add_row("target", "after a calibration (the target band needs your maximum)")
    table.add_row("reps", reps_text(view))
    table.add_row("contractions", f"{view.contractions}")
    if (c := view.last_contraction) is not None:
        table.add_row("last", contraction_line(c))
    for ch, reasons in view.problems.items():
        note = "  (feedback paused)" if ch == view.target_channel else ""
        table.add_row(ch, Text(f"check the electrode: {', '.join(reasons)}{note}", style="yellow"))
    waiting = f", {view.mqtt_backlog} messages waiting" if view.mqtt_backlog else ""
    table.add_row(
        "station",
        Text(f"sensor {view.link}, clinic link {view.mqtt}{waiting}", style="dim"),
    )
    for name, what in view.children.items():  # a helper died (feedback/supervision.py)
        table.add_row(name, Text(what, style="bold red"))
    title = f"vm-feedback · {view.patient} · {view.protocol}"
    return Panel(Group(table), title=title)


async def run_terminal_view(view: ViewState, console: Console, refresh_hz: float = 10.0) -> None:
    with Live(render(view), console=console, auto_refresh=False, transient=False) as live:
        while True:
            await asyncio.sleep(1.0 / refresh_hz)
            live.update(render(view), refresh=True)
