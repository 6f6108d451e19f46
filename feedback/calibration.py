"""Calibration as a pure, step-driven state machine: rest baseline, then maximal contractions.

Fed the chain's `ProcessedBlock`s on the sample timeline (no clock, no I/O): rest for `rest_s`
(envelope mean and SD per channel, after a short settling time), then `mvc_trials` maximal
voluntary contractions of `mvc_s` with `mvc_rest_s` between them. MVC per channel is the peak of
the envelope's `mvc_window_ms` moving average over all trials. The result is stored in the
patient profile (feedback.profiles) and reused by later sessions with the same envelope settings.
"""

from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from config.settings import CalibrationSettings, CalibrationSource, ProcessingSettings, Settings
from feedback.processing.chain import ProcessedBlock
from feedback.processing.filters import FirFilter

SETTLE_S = 0.5  # skipped at the start of the rest step: the envelope filters are still filling
# The quality check: an MVC must stand clearly above rest, both against the rest's spread
# (REST_SDS standard deviations) and against its level (MIN_MVC_TO_REST times). Maximal efforts
# reach tens of times the resting envelope; on real recordings where VM barely works (standing
# knee flexion, ../shared/data N_TXT *pie) the largest 0.5 s mean stays below 10 × rest.
REST_SDS = 10.0
MIN_MVC_TO_REST = 10.0


class Step(enum.Enum):
    REST = "rest"
    MVC = "mvc"
    MVC_REST = "mvc_rest"
    DONE = "done"


INSTRUCTIONS = {
    Step.REST: "Relax the leg completely.",
    Step.MVC: "Push as hard as you can: straighten the knee against resistance!",
    Step.MVC_REST: "Relax. The next contraction comes after this rest.",
    Step.DONE: "Calibration complete.",
}


@dataclass(frozen=True, slots=True)
class CalibrationStatus:
    step: Step
    trial: int  # 1-based MVC trial (during MVC and the rest after it), 0 before
    trials: int
    step_left_s: float
    instruction: str
    changed: bool  # the step changed during this block


@dataclass(frozen=True)
class CalibrationResult:
    patient: str
    side: str
    created_at: str  # ISO 8601, local time with offset
    rate_hz: float
    channels: list[str]
    rest_mean_mv: dict[str, float]
    rest_sd_mv: dict[str, float]
    mvc_mv: dict[str, float]
    trial_peaks_mv: dict[str, list[float]]
    processing: dict[str, Any]  # the envelope settings the numbers belong to
    group_delay_ms: float
    warnings: list[str] = field(default_factory=list)
    method: str = "guided"  # "guided" (--calibrate, the dashboard) or "recording"
    reference: str = ""  # the recording's file name, for method "recording"
    left_out: list[str] = field(default_factory=list)  # channels not calibrated, and why

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CalibrationResult:
        return cls(**data)

    def matches(self, processing: ProcessingSettings) -> bool:
        """Envelope units depend on the chain: numbers from another chain are not comparable."""
        return self.processing == processing.model_dump(mode="json")

    def apply(self, settings: Settings, source: CalibrationSource | None = None) -> Settings:
        """Settings whose calibration section carries this result (valid channels only);
        `source` says where it came from (default: how it was made, "guided" or "recording")."""
        good = {c: v for c, v in self.mvc_mv.items() if v > self.rest_mean_mv.get(c, 0.0)}
        made: CalibrationSource = "recording" if self.method == "recording" else "guided"
        cal = settings.calibration.model_copy(
            update={
                "mvc_mv": {**settings.calibration.mvc_mv, **good},
                "rest_mv": {**settings.calibration.rest_mv, **self.rest_mean_mv},
                "rest_sd_mv": {**settings.calibration.rest_sd_mv, **self.rest_sd_mv},
                "source": source or made,
            }
        )
        return settings.model_copy(update={"calibration": cal})


class Calibration:
    def __init__(
        self,
        settings: Settings,
        rate_hz: float,
        channels: tuple[str, ...],
        group_delay_ms: float = 0.0,
    ) -> None:
        c: CalibrationSettings = settings.calibration
        self.settings = settings
        self.rate_hz = rate_hz
        self.channels = channels
        self.group_delay_ms = group_delay_ms

        def n(seconds: float) -> int:
            return round(seconds * rate_hz)

        plan = [(Step.REST, 0, n(c.rest_s))]
        for k in range(1, c.mvc_trials + 1):
            plan.append((Step.MVC, k, n(c.mvc_s)))
            if k < c.mvc_trials:
                plan.append((Step.MVC_REST, k, n(c.mvc_rest_s)))
        self.plan = [p for p in plan if p[2] > 0]
        self.trials = c.mvc_trials
        self._stage = 0
        self._into = 0  # samples into the current stage
        self._settle = min(n(SETTLE_S), self.plan[0][2] // 2)
        self._sum = np.zeros(len(channels))
        self._sq = np.zeros(len(channels))
        self._count = 0
        width = max(1, n(c.mvc_window_ms / 1000.0))
        self._average = FirFilter(np.full(width, 1.0 / width), len(channels))
        self._peaks = np.zeros((c.mvc_trials, len(channels)))

    @property
    def done(self) -> bool:
        return self._stage >= len(self.plan)

    def process(self, processed: ProcessedBlock) -> CalibrationStatus:
        env = processed.envelope
        averaged = self._average.process(env)
        changed = False
        pos, n = 0, env.shape[1]
        while pos < n and not self.done:
            step, trial, length = self.plan[self._stage]
            take = min(n - pos, length - self._into)
            self._consume(step, trial, env[:, pos : pos + take], averaged[:, pos : pos + take])
            self._into += take
            pos += take
            if self._into >= length:
                self._stage, self._into, changed = self._stage + 1, 0, True
        return self.status(changed)

    def _consume(self, step: Step, trial: int, env: np.ndarray, averaged: np.ndarray) -> None:
        if step is Step.REST:
            skip = max(0, self._settle - self._into)
            part = env[:, skip:]
            self._sum += part.sum(axis=1)
            self._sq += (part * part).sum(axis=1)
            self._count += part.shape[1]
        elif step is Step.MVC and averaged.shape[1]:
            self._peaks[trial - 1] = np.maximum(self._peaks[trial - 1], averaged.max(axis=1))

    def status(self, changed: bool = False) -> CalibrationStatus:
        if self.done:
            return CalibrationStatus(
                Step.DONE, self.trials, self.trials, 0.0, INSTRUCTIONS[Step.DONE], changed
            )
        step, trial, length = self.plan[self._stage]
        left = (length - self._into) / self.rate_hz
        text = INSTRUCTIONS[step]
        if step is Step.MVC:
            text = f"Contraction {trial} of {self.trials}. {text}"
        return CalibrationStatus(step, trial, self.trials, left, text, changed)

    def result(self) -> CalibrationResult:
        if not self.done:
            raise RuntimeError("calibration is not finished")
        s = self.settings
        mean = self._sum / max(self._count, 1)
        sd = np.sqrt(np.maximum(self._sq / max(self._count, 1) - mean * mean, 0.0))
        mvc = self._peaks.max(axis=0)
        warnings = quality_warnings(self.channels, mean, sd, mvc)
        chans = list(self.channels)
        return CalibrationResult(
            patient=s.session.patient,
            side=s.session.side,
            created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            rate_hz=self.rate_hz,
            channels=chans,
            rest_mean_mv={c: float(mean[i]) for i, c in enumerate(chans)},
            rest_sd_mv={c: float(sd[i]) for i, c in enumerate(chans)},
            mvc_mv={c: float(mvc[i]) for i, c in enumerate(chans)},
            trial_peaks_mv={c: [float(v) for v in self._peaks[:, i]] for i, c in enumerate(chans)},
            processing=s.processing.model_dump(mode="json"),
            group_delay_ms=self.group_delay_ms,
            warnings=warnings,
        )


def quality_warnings(
    channels: tuple[str, ...], rest: np.ndarray, rest_sd: np.ndarray, mvc: np.ndarray
) -> list[str]:
    """One warning per channel whose MVC is not clearly above rest (see REST_SDS and
    MIN_MVC_TO_REST): the same check for a guided calibration and one from a recording."""
    out = []
    for i, ch in enumerate(channels):
        need = max(rest[i] + REST_SDS * rest_sd[i], MIN_MVC_TO_REST * rest[i])
        if not mvc[i] > need:
            out.append(
                f"{ch}: MVC {mvc[i]:.4f} mV is not clearly above rest {rest[i]:.4f} mV "
                f"(needs > {need:.4f} mV: {REST_SDS:.0f} SD of rest and "
                f"{MIN_MVC_TO_REST:.0f} × rest); check the electrodes and the effort"
            )
    return out
