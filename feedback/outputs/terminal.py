"""The terminal live view (rich): VM activation against its band, phase, reps, time left, link."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

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
    phase: str = "ready"
    holding: bool = False
    hold_progress: float = 0.0
    reps_done: int = 0
    reps_total: int = 0
    phase_left_s: float = 0.0
    session_left_s: float = 0.0
    vm_vl_ratio: float | None = None
    link: str = "connecting"
    mqtt: str = "connecting"
    mqtt_backlog: int = 0
    group_delay_ms: float = 0.0
    gaps: int = 0
    lsi: float | None = None
    onset: dict[str, bool] = field(default_factory=dict)  # channel → active now
    problems: dict[str, tuple[str, ...]] = field(default_factory=dict)
    last_contraction: Contraction | None = None
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


def display_state(view: ViewState) -> str:
    if view.phase == "work":
        return "HOLD" if view.holding else "WORK"
    return view.phase.upper()


def contraction_line(c: Contraction) -> str:
    parts = [f"#{c.number} peak {c.peak_pct:.0f} %", f"in band {c.hold_in_band_s:.1f} s"]
    if c.time_to_band_s is not None:
        parts.append(f"to band {c.time_to_band_s:.2f} s")
    if c.relaxation_s is not None:
        parts.append(f"relax {c.relaxation_s:.2f} s")
    if c.median_freq_hz is not None:
        parts.append(f"MDF {c.median_freq_hz:.0f} Hz")
    if c.vm_vl_onset_ms is not None:
        parts.append(f"VM–VL {c.vm_vl_onset_ms:+.0f} ms")
    return ", ".join(parts)


def onset_line(onset: dict[str, bool]) -> Text:
    """Which muscles are on now (Hodges-Bui onset state), e.g. `VM on  VL off`."""
    line = Text()
    for ch, on in onset.items():
        line.append(f"{ch} {'on' if on else 'off'}  ", style="bold green" if on else "dim")
    return line


def render(view: ViewState) -> Panel:
    low, high = view.band
    pct = view.pct_mvc.get(view.target_channel, 0.0)
    table = Table.grid(padding=(0, 2))
    table.add_column(justify="right", style="bold")
    table.add_column()
    table.add_row(
        view.target_channel, Text.assemble(activation_bar(pct, low, high), f" {pct:5.1f} % MVC")
    )
    table.add_row("band", f"{low:.0f}–{high:.0f} % MVC")
    for ch, value in view.pct_mvc.items():
        if ch != view.target_channel:
            table.add_row(ch, f"{value:5.1f} % MVC")
    if view.vm_vl_ratio is not None:
        table.add_row("VM:VL", f"{view.vm_vl_ratio:.2f}")
    if view.lsi is not None:
        table.add_row("LSI", f"{view.lsi:.0f} %")
    if view.onset:
        table.add_row("onset", onset_line(view.onset))
    for ch, reasons in view.problems.items():
        cue = "  (cues withheld)" if ch == view.target_channel else ""
        table.add_row(ch, Text(f"{', '.join(reasons)}{cue}", style="bold yellow"))
    if (c := view.last_contraction) is not None:
        table.add_row("last", contraction_line(c))
    state = display_state(view)
    if view.phase == "work":
        state += f"  hold {view.hold_progress * 100:3.0f} %"
    table.add_row("state", Text(state, style="bold green" if view.holding else "bold"))
    table.add_row("reps", f"{view.reps_done} / {view.reps_total}")
    table.add_row(
        "time left", f"{view.phase_left_s:4.1f} s in phase, {view.session_left_s:5.1f} s in session"
    )
    table.add_row(
        "link",
        f"device {view.link} (gaps {view.gaps}), MQTT {view.mqtt} (backlog {view.mqtt_backlog})",
    )
    table.add_row("delay", f"envelope chain {view.group_delay_ms:.0f} ms")
    for name, what in view.children.items():  # a helper died (feedback/supervision.py)
        table.add_row(name, Text(what, style="bold red"))
    return Panel(Group(table), title=f"vm-feedback · {view.patient} · {view.protocol}")


async def run_terminal_view(view: ViewState, console: Console, refresh_hz: float = 10.0) -> None:
    with Live(render(view), console=console, auto_refresh=False, transient=False) as live:
        while True:
            await asyncio.sleep(1.0 / refresh_hz)
            live.update(render(view), refresh=True)
