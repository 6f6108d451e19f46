"""A recording's time column: the sample rate it gives, and the check that every later row
keeps to it (no lost, repeated or backward samples), batch by batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from devices.formats.base import RecordingFormatError, check_rate

Floats = npt.NDArray[np.float64]


@dataclass
class TimeColumn:
    """What the first rows of the time column say; later rows are checked against it."""

    path: Path
    dt: float
    tol: float
    last_t: float
    last_text: str
    last_line: int

    @classmethod
    def from_first_rows(
        cls, p: Path, t: Floats, text: list[str], line_nos: list[int], given: float | None
    ) -> tuple[float, float, TimeColumn | None]:
        """(rate, t0, the column to follow) from the first rows; `given` must agree."""
        if len(t) < 2:
            if given is None:
                reason = "one row: a time column cannot give a rate"
                raise RecordingFormatError(p, reason, line_nos[0])
            return given, float(t[0]), None
        steps = np.diff(t)
        if (back := np.flatnonzero(steps <= 0)).size:
            i = int(back[0])
            reason = f"time goes backwards or repeats ({text[i]} -> {text[i + 1]})"
            raise RecordingFormatError(p, reason, line_nos[i + 1])
        # Lower median: missing samples only lengthen steps, and with very few steps the plain
        # median would average a jump into the reference step and hide it.
        dt = float(np.sort(steps)[(len(steps) - 1) // 2])
        # Printed times are rounded: two rounded values differ from the true step by up to one
        # unit of the last printed digit. Tolerate that (but never half a step), else 0.1 %.
        quantum = max(
            (
                10.0 ** -len(s.split(".")[1]) if "." in s else 1.0
                for s in text
                if "e" not in s.lower()
            ),
            default=0.0,
        )
        tol = min(max(1e-3 * dt, 1.01 * quantum), 0.5 * dt)
        column = cls(p, dt, tol, float(t[-1]), text[-1], line_nos[-1])
        column._check_steps(steps, text, line_nos)
        with np.errstate(over="ignore"):  # times near ±1e308: their span overflows to inf
            span = float(t[-1] - t[0])
        rate = round((len(t) - 1) / span, 6) if np.isfinite(span) else 0.0
        if not rate > 0.0 or not np.isfinite(rate):
            reason = f"the time column gives no usable sample rate ({text[0]} ... {text[-1]})"
            raise RecordingFormatError(p, reason, line_nos[-1])
        check_rate(p, rate, given, "the time column")
        return rate, float(t[0]), column

    def follow(self, t: Floats, line_nos: list[int], text_of: Callable[[int], str]) -> None:
        """Check the next rows (`text_of(k)`: row k's time as written, looked up on error)."""
        steps = np.diff(np.concatenate([[self.last_t], t]))
        back = np.flatnonzero(steps <= 0)
        jump = np.flatnonzero(np.abs(steps - self.dt) > self.tol)
        if back.size or jump.size:
            i = int(min(back[0] if back.size else len(steps), jump[0] if jump.size else len(steps)))
            text = [self.last_text if i == 0 else text_of(i - 1), text_of(i)]
            lines = [self.last_line if i == 0 else line_nos[i - 1], line_nos[i]]
            if steps[i] <= 0:
                reason = f"time goes backwards or repeats ({text[0]} -> {text[1]})"
                raise RecordingFormatError(self.path, reason, lines[1])
            self._check_steps(steps[i : i + 1], text, lines)
        self.last_t, self.last_line = float(t[-1]), line_nos[-1]
        self.last_text = text_of(len(line_nos) - 1)

    def _check_steps(self, steps: Floats, text: list[str], line_nos: list[int]) -> None:
        if (jump := np.flatnonzero(np.abs(steps - self.dt) > self.tol)).size:
            i = int(jump[0])
            reason = (
                f"time step breaks: {text[i]} -> {text[i + 1]} is a step of "
                f"{steps[i] * 1e3:.6g} ms, expected {self.dt * 1e3:.6g} ms "
                "(missing or duplicated samples?)"
            )
            raise RecordingFormatError(self.path, reason, line_nos[i + 1])
