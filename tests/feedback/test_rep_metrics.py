"""A rep's metrics are its contraction's, whenever the contraction is reported."""

from __future__ import annotations

from typing import Any

from config.loader import load_settings
from devices.base import LinkStats
from devices.framed_stream import FramedSampleStream
from devices.simulator import build_firmware
from feedback.contraction_report import contraction_metrics
from feedback.pipeline import Pipeline
from feedback.processing.metrics import Contraction
from feedback.rep_metrics import REP_FROM_CONTRACTION, RepMetrics

SHORT = {
    "protocol.ready_s": 0.5,
    "protocol.work_s": 2.0,
    "protocol.rest_s": 1.0,  # the simulator's cycle (contract + relax) is 3 s too
    "protocol.hold_s": 1.0,
    "protocol.reps": 3,
    "simulator.first_rest_s": 0.6,
    "simulator.relax_s": 1.2,
}


def run(seconds: float, **overrides: Any) -> tuple[list[dict[str, Any]], list[Contraction]]:
    settings = load_settings(environ={}, overrides={**SHORT, **overrides})
    fw = build_firmware(settings.simulator)
    stream = FramedSampleStream(LinkStats())
    stream.feed(fw.hello(), 0.0)
    channels = tuple(settings.simulator.channels)
    pipeline = Pipeline(settings, 2000.0, channels)
    reps = RepMetrics(channels, pipeline.target, 2000.0, settings.onset.pair_window_ms)
    out: list[dict[str, Any]] = []
    counted: list[Contraction] = []
    t = 0.0
    for _ in range(round(seconds * 100)):
        t += 0.01
        for block in stream.feed(fw.advance(20, t), t):
            tick = pipeline.process(block)
            counted += tick.contractions
            out += reps.update(tick)
    last = pipeline.finish()
    counted += last
    out += reps.finish(last)
    return out, counted


def check_copied(reps: list[dict[str, Any]], counted: list[Contraction]) -> None:
    by_number = {c.number: contraction_metrics(c) for c in counted}
    for r in reps:
        if r["contraction"] is None:
            continue
        c = by_number[r["contraction"]]
        assert {k: r[k] for k in REP_FROM_CONTRACTION} == {
            k: c[src] for k, src in REP_FROM_CONTRACTION.items()
        }
        assert r["hold_s"] == c["longest_hold_s"]


def test_contraction_inside_the_period() -> None:
    reps, counted = run(9.0, **{"simulator.contract_s": 1.8})
    assert [r["contraction"] for r in reps] == [1, 2, 3] and all(r["achieved"] for r in reps)
    check_copied(reps, counted)


def test_contraction_outlasting_the_period_waits_for_it() -> None:
    """The patient holds 0.4 s into the rest: the rep is sent when the contraction is."""
    reps, counted = run(9.0, **{"simulator.contract_s": 2.4, "simulator.relax_s": 0.6})
    assert [r["contraction"] for r in reps] == [1, 2, 3]
    assert all(r["duration_s"] == 2.0 for r in reps)
    check_copied(reps, counted)


def test_no_contraction_reports_the_level_and_no_effort() -> None:
    reps, _ = run(6.0, **{"simulator.contraction_pct": 0.0})
    assert reps and all(r["contraction"] is None and not r["achieved"] for r in reps)
    assert all(r["hold_s"] == 0.0 and r["onset_diff_ms"] is None for r in reps)
