"""The charts of the clinic reports, drawn by matplotlib: inline SVG in the HTML, pages of the PDF.

Every chart is a `draw_*(ax, ...)` function on a matplotlib Axes, so the HTML (one chart per
SVG) and the PDF (several charts on an A4 page) draw the same thing. Rules a clinician reads by:

- counts (repetitions, sessions) on integer axes; units in every axis label;
- fixed, readable scales that do not magnify noise: % MVC from 0 to 100 (more if the data is
  higher), the VM:VL ratio on 0.5–1.5 around the reference 1 (wider only when the data is),
  pain 0–10, percentages 0–100;
- a legend on every chart (what each line, bar, band and reference is).

No pyplot: figures are plain `Figure` objects, so nothing global and no GUI backend.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

VM_COLOURS = {"VM": "#1f77b4", "VL": "#d95f02"}
OTHER_COLOURS = ("#7570b3", "#1b9e77", "#e7298a", "#66a61e")
ACHIEVED, MISSED = "#2e7d32", "#9e9e9e"
BAND = "#a5d6a7"
RATIO_RANGE = (0.5, 1.5)
WIDTH_IN, HEIGHT_IN = 7.2, 2.7
# Clinically important change in pain on the 0–10 numeric rating scale: about 2 points (or
# 30 %) less than at the start (Farrar et al., Pain 2001;94:149–158). docs/reports.md.
PAIN_MCID_POINTS = 2.0

Point = tuple[float, float]


def colour(name: str, i: int) -> str:
    return VM_COLOURS.get(name, OTHER_COLOURS[i % len(OTHER_COLOURS)])


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _nice_top(top: float, at_least: float) -> float:
    """Round an axis top up to a multiple of 10 (of 1 below 10), never under at_least."""
    step = 10.0 if top > 10 else 1.0
    return max(at_least, math.ceil(top * 1.05 / step) * step)


def _style(ax: Axes, title: str, x_label: str, y_label: str) -> None:
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(axis="y", color="#e0e0e0", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _integer_x(ax: Axes, xs: Sequence[float]) -> None:
    if 0 < len(set(xs)) <= 15:  # every repetition or session gets its number
        ax.set_xticks(sorted(set(xs)))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
    if xs:
        ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)


def _legend(ax: Axes) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, frameon=False)


def draw_envelope(
    ax: Axes,
    envelopes: Mapping[str, Sequence[Point]],
    band: tuple[float, float],
    *,
    spread: Mapping[str, Sequence[tuple[float, float, float]]] | None = None,
) -> None:
    """Each channel's envelope; `spread`: (x, min, max) per point, shaded under the line (the
    clinic stores live metrics at 1 Hz: the line is each second's mean)."""
    top = 0.0
    for i, (name, points) in enumerate(envelopes.items()):
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, color=colour(name, i), linewidth=1.0, label=f"{name} envelope")
        top = max(top, *_finite(ys), 0.0)
        if spread and (lows := spread.get(name)):
            ax.fill_between([p[0] for p in lows], [p[1] for p in lows], [p[2] for p in lows],
                            color=colour(name, i), alpha=0.15, linewidth=0)  # fmt: skip
            top = max(top, *_finite([p[2] for p in lows]), 0.0)
    if band[1] > band[0]:
        ax.axhspan(*band, color=BAND, alpha=0.5, label=f"target band {band[0]:g}–{band[1]:g} %")
    ax.set_ylim(0, _nice_top(max(top, band[1]), 100.0))
    ax.set_xlim(left=0)
    _style(ax, "Muscle activity during the session", "time since the start (s)", "% MVC")
    _legend(ax)


def draw_per_rep_bars(
    ax: Axes,
    reps: Sequence[int],
    values: Sequence[float | None],
    achieved: Sequence[bool],
    *,
    title: str,
    y_label: str,
    band: tuple[float, float] | None = None,
    floor_top: float = 1.0,
) -> None:
    heights = [0.0 if v is None else float(v) for v in values]
    colours = [ACHIEVED if a else MISSED for a in achieved]
    ax.bar(reps, heights, color=colours, width=0.7)
    handles = [Patch(color=ACHIEVED, label="hold reached"),
               Patch(color=MISSED, label="hold not reached")]  # fmt: skip
    if band is not None and band[1] > band[0]:
        ax.axhspan(*band, color=BAND, alpha=0.5, zorder=0)
        handles.append(Patch(color=BAND, alpha=0.5, label=f"target band {band[0]:g}–{band[1]:g}"))
    top = max([*_finite(values), band[1] if band else 0.0, 0.0])
    ax.set_ylim(0, _nice_top(top, floor_top))
    _integer_x(ax, reps)
    _style(ax, title, "repetition", y_label)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5,
              frameon=False)  # fmt: skip


def ratio_range(values: Sequence[float | None]) -> tuple[float, float]:
    """0.5–1.5, widened in steps of 0.5 only when the data lies outside."""
    lo, hi = RATIO_RANGE
    data = _finite(values)
    if data:
        lo = min(lo, math.floor(min(data) * 2) / 2)
        hi = max(hi, math.ceil(max(data) * 2) / 2)
    return max(0.0, lo), hi


def draw_ratio(
    ax: Axes, xs: Sequence[int], values: Sequence[float | None], *, x_label: str, title: str
) -> None:
    ys = [math.nan if v is None else float(v) for v in values]
    ax.plot(xs, ys, marker="o", color=VM_COLOURS["VM"], label="VM:VL ratio")
    ax.axhline(1.0, color="#555", linestyle="--", linewidth=1, label="1 = VM as active as VL")
    ax.set_ylim(*ratio_range(values))
    _integer_x(ax, xs)
    _style(ax, title, x_label, "VM:VL ratio")
    _legend(ax)


def draw_onset(
    ax: Axes, xs: Sequence[int], values: Sequence[float | None], *, x_label: str, title: str,
    bars: bool = True,
) -> None:  # fmt: skip
    ys = [math.nan if v is None else float(v) for v in values]
    if bars:
        ax.bar(xs, [0.0 if math.isnan(v) else v for v in ys], width=0.7,
               color=[ACHIEVED if v >= 0 else "#c62828" for v in ys],
               label="VL onset − VM onset")  # fmt: skip
    else:
        ax.plot(xs, ys, marker="o", color=VM_COLOURS["VM"], label="VL onset − VM onset")
    ax.axhline(0.0, color="#555", linewidth=1, label="0 = together; above: VM first")
    span = _nice_top(max([abs(v) for v in _finite(values)] + [0.0]), 50.0)
    ax.set_ylim(-span, span)
    _integer_x(ax, xs)
    _style(ax, title, x_label, "ms")
    _legend(ax)


def draw_stimulation(ax: Axes, bursts: Sequence[Point], refused: Sequence[float]) -> None:
    ax.plot([b[0] for b in bursts], [b[1] for b in bursts], "o", color="#7b1fa2",
            label="burst (amplitude)")  # fmt: skip
    if refused:
        ax.plot(refused, [0.0] * len(refused), "x", color="#c62828", markersize=8,
                label="refused by a safety check")  # fmt: skip
    ax.set_ylim(0, _nice_top(max([b[1] for b in bursts] + [0.0]), 10.0))
    ax.set_xlim(left=0)
    _style(ax, "Stimulation bursts", "time since the start (s)", "mA")
    _legend(ax)


def draw_trend(
    ax: Axes,
    xs: Sequence[int],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    y_label: str,
    y_range: tuple[float, float] | None = None,
    reference: tuple[float, str] | None = None,
    unit: str = "",
) -> None:
    """Values per session, with a least-squares trend line (3 sessions or more)."""
    top = 0.0
    for i, (name, values) in enumerate(series.items()):
        ys = [math.nan if v is None else float(v) for v in values]
        c = OTHER_COLOURS[i % len(OTHER_COLOURS)] if len(series) > 1 else VM_COLOURS["VM"]
        ax.plot(xs, ys, marker="o", color=c, label=name)
        pts = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
        top = max([top, *(y for _, y in pts)])
        if len(pts) >= 3:
            slope, icpt = _fit(pts)
            ends = [pts[0][0], pts[-1][0]]
            trend = "flat" if abs(slope) < 0.005 else f"{slope:+.2f}{unit} per session"
            ax.plot(ends, [icpt + slope * x for x in ends], "--", color=c, linewidth=1,
                    label=f"trend: {trend}")  # fmt: skip
    if reference is not None:
        ax.axhline(reference[0], color="#555", linestyle=":", linewidth=1, label=reference[1])
    ax.set_ylim(*(y_range or (0, _nice_top(top, 1.0))))
    _integer_x(ax, xs)
    _style(ax, title, "session", y_label)
    _legend(ax)


def draw_pain(
    ax: Axes, xs: Sequence[int], before: Sequence[int | None], after: Sequence[int | None]
) -> None:
    for name, values, c in (("before the session", before, "#7570b3"),
                            ("after the session", after, "#d95f02")):  # fmt: skip
        ax.plot(xs, [math.nan if v is None else v for v in values], marker="o", color=c,
                label=name)  # fmt: skip
    first = next((v for v in before if v is not None), None)
    if first is not None and first >= PAIN_MCID_POINTS:
        goal = first - PAIN_MCID_POINTS
        ax.axhspan(-0.5, goal, color=BAND, alpha=0.45,
                   label=f"important improvement (≤ {goal:g})")  # fmt: skip
    ax.set_ylim(-0.5, 10.5)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
    _integer_x(ax, xs)
    _style(ax, "Pain before and after each session", "session", "pain (0–10)")
    _legend(ax)


def _fit(points: Sequence[Point]) -> tuple[float, float]:
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    slope = sum((p[0] - mx) * (p[1] - my) for p in points) / sxx if sxx else 0.0
    return slope, my - slope * mx


def figure(width_in: float = WIDTH_IN, height_in: float = HEIGHT_IN) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    return fig, fig.add_subplot()


def svg(fig: Figure, name: str) -> str:
    """The figure as inline SVG text (text kept as text), ids unique to this chart."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


# --- PDF ---------------------------------------------------------------------------------------

A4_PORTRAIT, A4_LANDSCAPE = (8.27, 11.69), (11.69, 8.27)
CHARTS_PER_PAGE = 3
ROWS_PER_PAGE = 24


def write_pdf(
    path: Path,
    title: str,
    facts: Mapping[str, str],
    figures: Sequence[tuple[str, str, Callable[[Axes], None]]],
    table: tuple[Sequence[str], Sequence[Sequence[str]]],
    glossary: Sequence[tuple[str, str]] = (),
) -> None:
    """An A4 PDF: the facts, the charts three to a page, the numbers (landscape pages)."""
    with PdfPages(path, metadata={"Title": title, "Creator": "vm-feedback"}) as pages:
        fig = Figure(figsize=A4_PORTRAIT)
        fig.text(0.08, 0.94, title, fontsize=17, fontweight="bold")
        y = 0.89
        for key, value in facts.items():
            lines = textwrap.wrap(value, 62) or [""]
            fig.text(0.08, y, key, fontsize=9.5, fontweight="bold", va="top")
            fig.text(0.38, y, "\n".join(lines), fontsize=9.5, va="top")
            y -= 0.024 * len(lines) + 0.008
        if glossary:
            y -= 0.02
            fig.text(0.08, y, "Words used", fontsize=11, fontweight="bold", va="top")
            y -= 0.03
            for key, value in glossary:
                lines = textwrap.wrap(value, 62)
                fig.text(0.08, y, key, fontsize=9, fontweight="bold", va="top")
                fig.text(0.38, y, "\n".join(lines), fontsize=9, va="top")
                y -= 0.022 * len(lines) + 0.006
        pages.savefig(fig)
        for start in range(0, len(figures), CHARTS_PER_PAGE):
            fig = Figure(figsize=A4_PORTRAIT, layout="constrained")
            chunk = figures[start : start + CHARTS_PER_PAGE]
            subs: list[Any] = list(fig.subfigures(CHARTS_PER_PAGE, 1, squeeze=False).flat)
            for sub, (_, caption, draw) in zip(subs, chunk, strict=False):
                draw(sub.add_subplot())
                sub.supxlabel("\n".join(textwrap.wrap(caption, 110)), fontsize=8, x=0.02,
                              ha="left", color="#333")  # fmt: skip
            pages.savefig(fig)
        headers, rows = table
        wrapped = ["\n".join(textwrap.wrap(h, 14)) for h in headers]
        for start in range(0, max(len(rows), 1), ROWS_PER_PAGE):
            fig = Figure(figsize=A4_LANDSCAPE)
            ax = fig.add_axes((0.03, 0.05, 0.94, 0.85))
            ax.axis("off")
            fig.text(0.03, 0.94, f"{title}: the numbers", fontsize=12, fontweight="bold")
            cells = [list(r) for r in rows[start : start + ROWS_PER_PAGE]] or [["–"] * len(headers)]
            t = ax.table(cellText=cells, colLabels=wrapped, loc="upper center", cellLoc="right")
            t.auto_set_font_size(False)
            t.set_fontsize(7.5)
            t.auto_set_column_width(list(range(len(headers))))
            t.scale(1.0, 1.35)
            for (row, _), cell in t.get_celld().items():
                if row == 0:
                    cell.set_height(cell.get_height() * 2.6)
                    cell.set_facecolor("#eeeeee")
            pages.savefig(fig)
