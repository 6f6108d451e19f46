"""Keeps a session's result (feedback.session_result) from its ticks: the counts, the live
contractions and their metrics, each rep's metrics, and at the end the offline second pass."""

from __future__ import annotations

from typing import Any

from config.settings import Settings
from devices.base import DeviceInfo
from feedback.contraction_report import contraction_metrics
from feedback.pipeline import Pipeline, Tick
from feedback.processing.metrics import Contraction
from feedback.processing.offline_count import OfflineCounter
from feedback.rep_metrics import RepMetrics
from feedback.session_result import SessionResult

Metrics = list[dict[str, Any]]


def reported_calibration(settings: Settings, channels: tuple[str, ...]) -> dict[str, Any]:
    """The report's `calibration`: the MVC per channel, null where none was measured. Without
    a calibration (source "placeholder") every one is null: the shipped default is nobody's
    MVC, and a number in a clinical report would be read, and divided by, as one."""
    cal = settings.calibration
    mvc = cal.mvc_mv if cal.calibrated else {}
    return {
        "calibrated": cal.calibrated,
        "source": cal.source,
        "mvc_mv": {ch: mvc.get(ch) for ch in channels},
    }


class Tally:
    """One session's bookkeeping; `begin` once the pipeline exists, then one `block` per tick."""

    def __init__(self, result: SessionResult, settings: Settings) -> None:
        self.result = result
        self.reps_counted = settings.protocol.kind != "free"  # a timed protocol was followed
        result.reps = 0 if self.reps_counted else None
        self.last_onset_ms: float | None = None  # VM–VL onset difference, last contraction
        self._offline: OfflineCounter | None = None
        self._reps: RepMetrics | None = None

    def begin(self, settings: Settings, info: DeviceInfo, pipeline: Pipeline) -> None:
        r = self.result
        r.group_delay_ms = pipeline.chain.group_delay_ms
        self._reps = RepMetrics(
            info.channels, pipeline.target, info.rate_hz, settings.onset.pair_window_ms
        )
        c = settings.contractions
        self._offline = OfflineCounter(
            info.rate_hz,
            info.channels.index(pipeline.target),
            min_on_s=c.min_on_s,
            merge_gap_s=c.merge_gap_s,
        )
        r.contraction_rule = {
            "channel": pipeline.target,
            "min_on_s": c.min_on_s,
            "merge_gap_s": c.merge_gap_s,
            "live": "causal: each contraction counted once its dip has lasted merge_gap_s",
        }
        r.calibration = reported_calibration(settings, info.channels)

    def protocol_switched(self, pipeline: Pipeline) -> None:
        if pipeline.protocol.kind != "free":
            self.reps_counted = True

    def calibrated(self, settings: Settings) -> None:
        """A mid-session calibration was stored: `settings` carry it."""
        self.result.calibration = {
            "calibrated": True,
            "source": "guided",
            "mvc_mv": {ch: round(v, 6) for ch, v in settings.calibration.mvc_mv.items()},
        }

    def block(self, tick: Tick, *, free: bool) -> tuple[Metrics, Metrics]:
        """Counts one tick; the metrics of the contractions and of the reps it completed."""
        r = self.result
        block = tick.processed.block
        r.samples += block.n_samples
        r.blocks += 1
        r.compute_us.add(tick.compute_s * 1e6)
        ex = tick.exercise
        r.reps = ex.reps_done if self.reps_counted else None
        r.time_in_target_s = ex.in_band_s
        r.cues += len(tick.cues)
        if self._offline is not None:
            self._offline.add(block.first_index, tick.processed.envelope)
        counted = self._count(tick.contractions)
        reps = [] if self._reps is None else self._reps.update(tick, counting=not free)
        return counted, reps

    def finish(self, last: list[Contraction]) -> tuple[Metrics, Metrics]:
        """The session ended with `last` still going (they count): their metrics and the last
        reps'; the offline pass goes into the result."""
        counted = self._count(last)
        reps = [] if self._reps is None else self._reps.finish(last)
        if self._offline is not None:
            offline = self._offline.result()
            self.result.contractions_offline = {
                "count": offline.count,
                "spans_s": [[round(a, 2), round(b, 2)] for a, b in offline.spans_s],
                "rest_mv": round(offline.rest_mv, 6),
                "reference_mv": round(offline.reference_mv, 6),
                "method": offline.method,
            }
        return counted, reps

    def _count(self, counted: tuple[Contraction, ...] | list[Contraction]) -> Metrics:
        """Into the result (and the last onset difference); their metrics, for the events."""
        out = []
        for c in counted:
            if c.vm_vl_onset_ms is not None:
                self.last_onset_ms = c.vm_vl_onset_ms
            metrics = contraction_metrics(c)
            self.result.contractions.append(metrics)
            self.result.contractions_total += 1
            out.append(metrics)
        return out
