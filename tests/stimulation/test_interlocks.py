"""Every host interlock, against the emulated firmware in process, on a stepped clock."""

from __future__ import annotations

import re

import pytest
from stim_rig import StimRig, of

from config.loader import ConfigError, load_settings
from feedback.stimulation import Abort, BurstEnded, EStop, Fire, Rearm, Refusal, Refused, TickView
from firmware_bridge import StimState
from firmware_bridge.emulator import FirmwareLimits


def reasons(actions: list[object]) -> list[Refusal]:
    return [a.verdict.reason for a in of(Refused, actions)]  # type: ignore[arg-type]


def test_trigger_fires_one_burst_per_work_period_and_firmware_runs_it() -> None:
    rig = StimRig()
    assert not of(Fire, rig.run(0.5, pct=10.0))  # below 0.8 x 30 % = 24 %: no trigger
    fired = of(Fire, rig.run(0.05, pct=25.0))
    assert len(fired) == 1
    cmd = fired[0].command
    assert (cmd.amplitude_ma, cmd.pulse_width_us, cmd.frequency_hz) == (20.0, 300, 50)
    assert rig.fw.stim_state is StimState.RAMP_UP and rig.ctl.state == "stimulating"
    # blanking covers the burst and its margin, from the block after the trigger
    assert fired[0].blank_from == 1020  # end of the first block at 25 %, at 0.51 s
    assert fired[0].blank_to - fired[0].blank_from == (900 + 150) * 2
    later = rig.run(1.0, pct=60.0)
    assert not of(Fire, later) and not of(Refused, later)  # same period: no second burst
    assert rig.fw.stim_state is StimState.IDLE
    assert [e.how for e in of(BurstEnded, later)] == ["completed"]


def test_no_trigger_outside_work() -> None:
    rig = StimRig()
    assert not of(Fire, rig.run(1.0, pct=80.0, working=False))


def test_disabled_never_fires_or_logs() -> None:
    rig = StimRig(**{"stimulation.enabled": False})
    assert rig.run(1.0, pct=80.0) == []
    assert rig.fw.stats.commands_accepted == 0 and rig.ctl.state == "off"


def test_minimum_rest_between_bursts() -> None:
    rig = StimRig(**{"stimulation.min_rest_s": 3.0})
    assert of(Fire, rig.run(0.1, period=1))
    early = rig.run(2.0, period=2)  # burst ends at 1.0 s; 2.1 s is 1.1 s of rest
    # still running, then resting: each reason logged once per period, not every block
    assert reasons(early) == [Refusal.BUSY, Refusal.TOO_SOON]
    assert rig.fw.stats.commands_accepted == 1
    assert of(Fire, rig.run(2.0, period=2))  # 3 s of rest reached
    assert rig.fw.stats.commands_accepted == 2


def test_total_bursts_per_session() -> None:
    rig = StimRig(**{"stimulation.max_bursts_per_session": 2, "stimulation.min_rest_s": 1.0})
    for period in (1, 2):
        assert of(Fire, rig.run(2.0, period=period))
    assert reasons(rig.run(2.0, period=3)) == [Refusal.SESSION_LIMIT]
    assert rig.fw.stats.commands_accepted == 2


@pytest.mark.parametrize(
    ("field", "value", "detail"),
    [
        ("amplitude_ma", 45.0, "amplitude"),
        ("pulse_width_us", 400, "pulse width"),
        ("frequency_hz", 80, "frequency"),
        ("hold_s", 5.0, "burst"),
    ],
)
def test_hard_caps_refuse_at_runtime(field: str, value: float, detail: str) -> None:
    """A burst beyond the caps (e.g. a therapist's adjustment) is refused by the host."""
    rig = StimRig(**{"stimulation.max_pulse_width_us": 350})
    rig.ctl.burst = rig.ctl.burst.model_copy(update={field: value})
    refused = of(Refused, rig.run(0.1))
    assert [r.verdict.reason for r in refused] == [Refusal.OVER_LIMIT]
    assert detail in refused[0].verdict.detail
    assert rig.fw.stats.commands_accepted == rig.fw.stats.commands_refused == 0


def test_hard_caps_refuse_at_load() -> None:
    with pytest.raises(ConfigError, match=re.escape("amplitude 50.0 mA > 40.0 mA")):
        load_settings(
            environ={}, overrides={"stimulation.enabled": True, "stim_burst.amplitude_ma": 50.0}
        )


def test_firmware_refuses_on_its_own_caps_and_it_is_logged() -> None:
    """Host caps looser than the firmware's: the firmware's refusal comes back with its reason."""
    rig = StimRig(fw_limits=FirmwareLimits(max_amplitude_ma=10.0))
    refused = of(Refused, rig.run(0.1))
    assert [(r.verdict.reason, r.verdict.detail) for r in refused] == [
        (Refusal.FIRMWARE, "command 1: AMPLITUDE_LIMIT")
    ]
    assert rig.ctl.state == "armed" and rig.fw.stim_state is StimState.IDLE


def test_electrode_contact_required() -> None:
    rig = StimRig()
    rig.fw.set_contact(0, False)
    assert reasons(rig.run(0.6)) == [Refusal.NO_CONTACT]  # after the next Status
    assert rig.fw.stats.commands_accepted == 0
    rig.fw.set_contact(0, True)
    assert of(Fire, rig.run(0.6, period=2))


def test_no_status_yet_means_no_burst() -> None:
    rig = StimRig()
    rig.last_data = rig.now  # samples, but no Status yet: contact is unknown
    acts = rig.ctl.on_tick(TickView(True, 1, 50.0, 30.0, 0, 2000.0), rig.link(), rig.now)
    assert reasons(acts) == [Refusal.NO_STATUS]


def test_contact_lost_mid_burst_stops_it() -> None:
    rig = StimRig()
    assert of(Fire, rig.run(0.1))
    rig.fw.set_contact(0, False)
    actions = rig.run(0.05)
    assert rig.fw.stim_state is StimState.IDLE and rig.fw.output_ma == 0.0
    stops = of(BurstEnded, actions) + of(Abort, actions)
    assert stops and rig.ctl.state == "armed"


def test_stale_data_stops_a_running_burst() -> None:
    rig = StimRig()
    assert of(Fire, rig.run(0.1))
    assert rig.fw.stim_state.stimulating
    # samples stop arriving, but the host keeps the link alive: only the host can tell
    actions = rig.run(0.3, data=False, heartbeat=True)
    aborts = of(Abort, actions)
    assert [a.verdict.reason for a in aborts] == [Refusal.STALE_DATA]
    assert rig.fw.stim_state is StimState.IDLE and not rig.fw.estop_latched
    assert rig.ctl.state == "armed"


def test_missing_data_refuses() -> None:
    rig = StimRig()
    rig.run(0.6, data=False)
    rig.last_data = None
    acts = rig.ctl.on_tick(TickView(True, 1, 50.0, 30.0, 0, 2000.0), rig.link(), rig.now)
    assert reasons(acts) == [Refusal.STALE_DATA]


def test_link_down_refuses_and_stops() -> None:
    rig = StimRig()
    assert of(Fire, rig.run(0.1))
    rig.link_up = False
    assert [a.verdict.reason for a in of(Abort, rig.run(0.02))] == [Refusal.LINK_DOWN]
    assert rig.fw.stim_state is StimState.IDLE
    assert reasons(rig.run(3.0, period=2)) == [Refusal.LINK_DOWN]


def test_emergency_stop_stops_at_once_latches_and_rearms() -> None:
    rig = StimRig()
    assert of(Fire, rig.run(0.3))
    assert rig.fw.output_ma > 0
    rig.apply(rig.ctl.emergency_stop("key", rig.now))
    assert rig.fw.output_ma == 0.0 and rig.fw.stim_state is StimState.STOPPED_ESTOP
    assert rig.fw.estop_latched and rig.ctl.state == "estop"
    assert rig.ctl.estop_acks == 1
    assert [e.how for e in of(BurstEnded, rig.actions)] == ["estop"]
    assert reasons(rig.run(3.0, period=2)) == [Refusal.ESTOP_LATCHED]
    assert rig.fw.stats.commands_accepted == 1
    rig.apply(rig.ctl.rearm("therapist-T1", rig.now))
    assert of(Rearm, rig.actions) and not rig.fw.estop_latched
    assert reasons(rig.run(1.0, period=3)) == [Refusal.TOO_SOON]  # a full rest after re-arming
    assert of(Fire, rig.run(2.0, period=3))


def test_emergency_stop_works_with_stimulation_disabled() -> None:
    rig = StimRig(**{"stimulation.enabled": False})
    rig.run(0.1)
    rig.apply(rig.ctl.emergency_stop("button", rig.now))
    assert of(EStop, rig.actions) and rig.fw.estop_latched


def test_abort_never_clears_a_therapist_estop() -> None:
    rig = StimRig()
    assert of(Fire, rig.run(0.1))
    rig.apply(rig.ctl.emergency_stop("mqtt:T1", rig.now))
    rig.run(0.5, data=False)  # stale data while latched: no abort (which would clear the latch)
    assert not of(Abort, rig.actions) and rig.fw.estop_latched


def test_host_silence_mid_burst_trips_the_firmware_watchdog() -> None:
    rig = StimRig()
    assert of(Fire, rig.run(0.1))
    stopped_at = None
    for _ in range(40):  # the host process is gone: no bytes at all, only firmware time passes
        rig.now = round(rig.now + 0.01, 9)
        rig.stream.feed(rig.fw.poll(rig.now), rig.now)
        if stopped_at is None and rig.fw.stim_state is StimState.STOPPED_WATCHDOG:
            stopped_at = rig.now
    assert stopped_at is not None and stopped_at - 0.1 <= 0.25 + 0.01
    assert rig.fw.stats.watchdog_trips == 1
    events, rig.stream.events = rig.stream.events, []
    ended = [a for e in events for a in rig.ctl.on_device(e.message, rig.now)]
    assert [e.how for e in of(BurstEnded, ended)] == ["watchdog"]


def test_shutdown_stops_a_running_burst() -> None:
    rig = StimRig()
    assert of(Fire, rig.run(0.1))
    rig.apply(rig.ctl.shutdown(rig.now))
    assert [a.verdict.reason for a in of(Abort, rig.actions)] == [Refusal.SESSION_ENDED]
    assert rig.fw.stim_state is StimState.IDLE


def test_a_burst_the_firmware_never_acknowledged_is_aborted_not_completed() -> None:
    rig = StimRig()
    rig.lose_commands = True
    assert of(Fire, rig.run(0.05, pct=40.0))
    later = rig.run(1.5, pct=40.0)  # the burst would have ended at 0.95 s
    aborts = of(Abort, later)
    assert [a.verdict.reason for a in aborts] == [Refusal.NO_ACK]
    assert "no StimAck in 200 ms" in aborts[0].verdict.detail
    assert not of(BurstEnded, later)  # never logged as completed
    assert rig.ctl.state == "armed" and rig.fw.stats.commands_accepted == 0


def test_a_burst_that_could_not_be_sent_is_refused_and_frees_the_interlock() -> None:
    rig = StimRig()
    rig.lose_commands = True
    fired = of(Fire, rig.run(0.05, pct=40.0))
    refused = rig.ctl.not_sent(fired[0].command.command_id, rig.now, "link is down")
    assert reasons(list(refused)) == [Refusal.NOT_SENT]
    assert rig.ctl.state == "armed"
    assert not of(Abort, rig.run(1.5, pct=40.0))  # nothing left waiting for an ack


def test_a_calibration_mid_session_stops_the_burst_and_refuses_new_ones() -> None:
    rig = StimRig()
    assert of(Fire, rig.run(0.05, pct=25.0))
    rig.ctl.interlock.calibrating = True  # the driver sets it from the exercise phase
    stopped = rig.run(0.05, pct=60.0)
    assert [a.verdict.reason for a in of(Abort, stopped)] == [Refusal.CALIBRATING]
    assert rig.fw.stim_state is not StimState.RAMP_UP
    verdict = rig.ctl.interlock.check(rig.ctl.command(), rig.link(), rig.now)
    assert verdict is not None and verdict.reason is Refusal.CALIBRATING
    rig.ctl.interlock.calibrating = False
    assert rig.ctl.interlock.link_fault(rig.link(), rig.now) is None
