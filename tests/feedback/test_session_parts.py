"""The parts the session runner composes (issue 12), each on its own: what a therapist's command
does (feedback.session_commands), band and protocol changes (feedback.prescription), and a
mid-session calibration (feedback.calibration_live). The runner's own tests
(test_runner_outputs.py, the dashboard and stimulation suites) drive them through a session."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from config.loader import load_settings
from config.protocols import ProtocolError
from feedback.calibration import CalibrationResult
from feedback.calibration_live import LiveCalibration
from feedback.control import commands as cmd
from feedback.control.bus import CommandBus
from feedback.pipeline import Pipeline
from feedback.prescription import Prescription
from feedback.session_commands import TherapistControl

Events = list[tuple[str, dict[str, Any]]]


@dataclass
class FakeStim:
    calls: list[tuple[str, Any]] = field(default_factory=list)
    rearm_fails: bool = False

    def latch(self, source: str) -> float:
        self.calls.append(("latch", source))
        return 1.5

    async def send_estop(self, t0: float) -> float | None:
        self.calls.append(("send_estop", t0))
        return None

    async def rearm(self, source: str) -> bool:
        self.calls.append(("rearm", source))
        if self.rearm_fails:
            raise OSError("device gone")
        return True


@dataclass
class FakePrescription:
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def change_band(self, low: object, high: object, source: str) -> bool:
        self.calls.append(("band", low, high, source))
        return True

    def change_protocol(self, name: str, source: str) -> None:
        self.calls.append(("protocol", name, source))


@dataclass
class Rig:
    bus: CommandBus
    ctl: TherapistControl
    stim: FakeStim
    rx: FakePrescription
    stops: list[str]
    calibrations: list[str]


def rig(events: Events) -> Rig:
    bus, stim, rx, stops, calibrations = CommandBus(), FakeStim(), FakePrescription(), [], []
    ctl = TherapistControl(
        bus, lambda k, d: events.append((k, d)), stim=stim, prescription=rx,  # type: ignore[arg-type]
        calibrate=lambda: calibrations.append("now"), stop=stops.append, pain_before=None,
    )  # fmt: skip
    return Rig(bus, ctl, stim, rx, stops, calibrations)


async def test_each_command_reaches_the_part_it_concerns() -> None:
    events: Events = []
    r = rig(events)
    bus, ctl, stim, rx, stops = r.bus, r.ctl, r.stim, r.rx, r.stops
    bus.submit(cmd.Start(pain_before=3))
    assert ctl.started.is_set() and ctl.pain_before == 3
    ctl.session_opened()
    bus.submit(cmd.Start(pain_before=7))  # the session's pain_before is fixed once it opened
    assert ctl.pain_before == 3
    bus.submit(cmd.ChangeBand(low_pct=30.0, high_pct=50.0))
    bus.submit(cmd.PickProtocol(name="quad-sets", source="therapist_command"))
    assert rx.calls == [("band", 30.0, 50.0, "dashboard"),
                        ("protocol", "quad-sets", "therapist_command")]  # fmt: skip
    bus.submit(cmd.Calibrate())
    assert r.calibrations == ["now"]
    bus.submit(cmd.EmergencyStop(source="therapist_command"))
    assert stim.calls == [("latch", "therapist_command")]  # latched before submit returned
    await ctl.settle()
    assert stim.calls[-1] == ("send_estop", 1.5)
    bus.submit(cmd.Pain(pain_after=4))
    bus.submit(cmd.Stop(source="therapist_command"))
    bus.submit(cmd.Stop(pain_after=2))
    assert stops == ["therapist_stop", "dashboard_stop"] and ctl.pain_after == 2
    kinds = [k for k, _ in events]
    assert kinds == ["protocol_picked", "calibrate_requested"]


async def test_a_failure_in_a_commands_task_is_a_control_failed_event() -> None:
    events: Events = []
    r = rig(events)
    bus, ctl, stim = r.bus, r.ctl, r.stim
    stim.rearm_fails = True
    bus.submit(cmd.Rearm())
    await ctl.settle()
    await asyncio.sleep(0)  # the done-callback runs on the next turn of the loop
    assert events == [("control_failed", {"control": "Rearm", "source": "dashboard",
                                          "error": "OSError: device gone"})]  # fmt: skip
    # Negative control: a re-arm that works leaves no event.
    events.clear()
    stim.rearm_fails = False
    bus.submit(cmd.Rearm())
    await ctl.settle()
    await asyncio.sleep(0)
    assert events == []


def test_band_and_protocol_changes_pass_the_target_checks() -> None:
    s = load_settings(environ={})
    events: Events = []
    rx = Prescription(s.target, lambda k, d: events.append((k, d)))
    assert not rx.change_band(30, 50, "dashboard")  # no pipeline yet
    assert events[-1] == ("band_refused", {"source": "dashboard", "reason": "no session running"})
    with pytest.raises(RuntimeError, match="no session running"):
        rx.change_protocol("quad-sets", "dashboard")
    pipeline = Pipeline(s, 2000.0, ("VM", "VL"))
    rx.attach(pipeline)
    assert not rx.change_band(50, 30, "dashboard")  # high below low: refused, with the reason
    kind, detail = events[-1]
    assert kind == "band_refused" and detail["reason"] and detail["low_pct"] == "50"
    assert rx.change_band(30, 50, "therapist_command")
    assert events[-1] == ("band_set", {"low_pct": 30.0, "high_pct": 50.0,
                                       "source": "therapist_command"})  # fmt: skip
    with pytest.raises(ProtocolError):
        rx.change_protocol("no-such", "dashboard")
    rx.change_protocol("quad-sets", "dashboard")  # takes effect at a safe boundary, not here
    assert [k for k, _ in events].count("protocol_changed") == 0


def test_a_rejected_calibration_changes_nothing_and_stores_nothing(tmp_path: Path) -> None:
    s = load_settings(environ={}, overrides={"calibration.profile_dir": str(tmp_path)})
    events: Events = []

    class Device:  # follows no prompts
        pass

    cal = LiveCalibration(Device(), lambda k, d: events.append((k, d)))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="no session running"):
        cal.start(s)

    def result(warnings: list[str]) -> CalibrationResult:
        return CalibrationResult(
            patient=s.session.patient, side=s.session.side, created_at="2026-12-01T07:00:00+00:00",
            rate_hz=2000.0, channels=["VM"], rest_mean_mv={"VM": 0.01}, rest_sd_mv={"VM": 0.002},
            mvc_mv={"VM": 0.5}, trial_peaks_mv={"VM": [0.5]}, processing={},
            group_delay_ms=10.0, warnings=warnings,
        )  # fmt: skip

    assert cal.ended(result(["MVC too close to rest"]), s) is None
    assert events[-1][0] == "calibration_rejected" and not list(tmp_path.iterdir())
    # Negative control: one that passes is stored and its settings returned.
    applied = cal.ended(result([]), s)
    assert applied is not None and applied.calibration.mvc_mv["VM"] == 0.5
    assert events[-1][0] == "calibration" and list(tmp_path.iterdir())
