"""Small inline-SVG charts for the HTML reports: lines and bars, with a shaded band or a reference.

Hand-made on purpose: a report is one self-contained HTML file that opens anywhere, and the
clinic side needs no plotting stack (matplotlib would add ~40 MB for five kinds of chart).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

W, H = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 26, 30
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")

Point = tuple[float, float]


def _span(values: Sequence[float], extra: Sequence[float] = ()) -> tuple[float, float]:
    vals = [v for v in (*values, *extra) if math.isfinite(v)]
    if not vals:
        return 0.0, 1.0
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


class _Frame:
    def __init__(self, xs: tuple[float, float], ys: tuple[float, float]) -> None:
        self.x0, self.x1 = xs
        self.y0, self.y1 = ys

    def x(self, v: float) -> float:
        return LEFT + (v - self.x0) / (self.x1 - self.x0 or 1) * (W - LEFT - RIGHT)

    def y(self, v: float) -> float:
        return H - BOTTOM - (v - self.y0) / (self.y1 - self.y0 or 1) * (H - TOP - BOTTOM)


def _axes(f: _Frame, title: str, x_label: str, y_label: str) -> list[str]:
    out = [
        f'<text x="{LEFT}" y="16" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" stroke="#888"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" stroke="#888"/>',
        f'<text x="{W - RIGHT}" y="{H - 4}" text-anchor="end">{escape(x_label)}</text>',
        f'<text x="4" y="{TOP - 6}">{escape(y_label)}</text>',
    ]
    for i in range(5):
        v = f.y0 + (f.y1 - f.y0) * i / 4
        out.append(
            f'<text x="{LEFT - 4}" y="{f.y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>'
            f'<line x1="{LEFT}" y1="{f.y(v):.1f}" x2="{W - RIGHT}" y2="{f.y(v):.1f}" '
            'stroke="#eee"/>'
        )
    for i in range(5):
        v = f.x0 + (f.x1 - f.x0) * i / 4
        out.append(
            f'<text x="{f.x(v):.1f}" y="{H - BOTTOM + 14}" text-anchor="middle">{v:.3g}</text>'
        )
    return out


def _svg(parts: list[str]) -> str:
    body = "\n".join(parts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" '
        f'height="{H}" font-family="sans-serif" font-size="11">\n{body}\n</svg>'
    )


def line_chart(
    series: Mapping[str, Sequence[Point]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    band: tuple[float, float] | None = None,
    reference: float | None = None,
    markers: bool = False,
) -> str:
    points = [p for s in series.values() for p in s if math.isfinite(p[1])]
    if not points:
        return _svg([f'<text x="{LEFT}" y="40">{escape(title)}: no data</text>'])
    extra = [*(band or ()), *(() if reference is None else (reference,))]
    f = _Frame(_span([p[0] for p in points]), _span([p[1] for p in points], extra))
    parts = _axes(f, title, x_label, y_label)
    if band is not None:
        y_hi, y_lo = f.y(band[1]), f.y(band[0])
        parts.append(
            f'<rect x="{LEFT}" y="{y_hi:.1f}" width="{W - LEFT - RIGHT}" '
            f'height="{y_lo - y_hi:.1f}" fill="#2ca02c" fill-opacity="0.12"/>'
        )
    if reference is not None:
        parts.append(
            f'<line x1="{LEFT}" y1="{f.y(reference):.1f}" x2="{W - RIGHT}" '
            f'y2="{f.y(reference):.1f}" stroke="#555" stroke-dasharray="4 3"/>'
        )
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        good = [(f.x(x), f.y(y)) for x, y in pts if math.isfinite(y)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in good)
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
        )
        if markers:
            parts.extend(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in good
            )
        parts.append(
            f'<text x="{W - RIGHT - 4}" y="{TOP + 12 * (i + 1)}" text-anchor="end" '
            f'fill="{colour}">{escape(name)}</text>'
        )
    return _svg(parts)


def bar_chart(
    bars: Sequence[tuple[str, float, bool]],
    *,
    title: str,
    y_label: str,
    band: tuple[float, float] | None = None,
    reference: float | None = None,
) -> str:
    """Bars labelled below; the flag colours a bar as achieved (green) or not (grey)."""
    vals = [v for _, v, _ in bars if math.isfinite(v)]
    if not vals:
        return _svg([f'<text x="{LEFT}" y="40">{escape(title)}: no data</text>'])
    extra = [0.0, *(band or ()), *(() if reference is None else (reference,))]
    f = _Frame((0, len(bars)), _span(vals, extra))
    parts = _axes(f, title, "", y_label)[:5]  # no numeric x ticks: bars are labelled
    for i in range(5):
        v = f.y0 + (f.y1 - f.y0) * i / 4
        parts.append(f'<text x="{LEFT - 4}" y="{f.y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    if band is not None:
        for edge in band:
            parts.append(
                f'<line x1="{LEFT}" y1="{f.y(edge):.1f}" x2="{W - RIGHT}" y2="{f.y(edge):.1f}" '
                'stroke="#2ca02c" stroke-dasharray="4 3"/>'
            )
    base = f.y(max(f.y0, min(0.0, f.y1)))
    width = (W - LEFT - RIGHT) / max(len(bars), 1)
    for i, (label, v, ok) in enumerate(bars):
        if not math.isfinite(v):
            continue
        x, y = f.x(i) + width * 0.15, f.y(v)
        top, height = min(y, base), abs(base - y)
        colour = "#2ca02c" if ok else "#999"
        parts.append(
            f'<rect x="{x:.1f}" y="{top:.1f}" width="{width * 0.7:.1f}" height="{height:.1f}" '
            f'fill="{colour}"><title>{escape(label)}: {v:.3g}</title></rect>'
            f'<text x="{x + width * 0.35:.1f}" y="{H - BOTTOM + 14}" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
    if reference is not None:
        parts.append(
            f'<line x1="{LEFT}" y1="{f.y(reference):.1f}" x2="{W - RIGHT}" '
            f'y2="{f.y(reference):.1f}" stroke="#555" stroke-dasharray="4 3"/>'
        )
    return _svg(parts)
