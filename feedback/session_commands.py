"""What a therapist's command does to a session: each typed command (feedback.control) from the
`CommandBus` is handed to the part it concerns: the stimulation driver, the prescription (band,
protocol), the live calibration, or the session's start, stop and pain scores kept here.

A handler that fails, at once or in the task it started (an emergency stop's send, a re-arm),
becomes a `control_failed` event; it never reaches the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from feedback.control.bus import CommandBus
from feedback.control.commands import (
    Calibrate,
    ChangeBand,
    Command,
    EmergencyStop,
    Pain,
    PickProtocol,
    Rearm,
    Start,
    Stop,
)
from feedback.control.gate import Verdict
from feedback.prescription import Prescription
from feedback.stimulation.driver import StimDriver

EventSink = Callable[[str, dict[str, Any]], None]


def verdict_detail(verdict: Verdict) -> dict[str, Any]:
    """A command verdict (accepted or refused) as the `command_result` event's detail."""
    return {
        "accepted": verdict.accepted,
        "reason": verdict.reason,
        "action": verdict.action,
        "issuer": verdict.issuer,
        "command_msg_id": verdict.msg_id,
    }


class TherapistControl:
    """The commands' effects on one session. `started` is set by a `start`; a `stop` calls
    `stop` with who stopped the session; the pain scores are the patient's."""

    def __init__(
        self,
        bus: CommandBus,
        log_event: EventSink,
        *,
        stim: StimDriver,
        prescription: Prescription,
        calibrate: Callable[[], None],
        stop: Callable[[str], None],
        pain_before: int | None,
    ) -> None:
        self._log = log_event
        self._stim = stim
        self._prescription = prescription
        self._calibrate = calibrate
        self._stop = stop
        self.pain_before = pain_before
        self.pain_after: int | None = None
        self.started = asyncio.Event()
        self._opened = False  # after the session opened, its pain_before is fixed
        self._pending: set[asyncio.Future[Any]] = set()  # emergency stops and re-arms under way
        bus.on(Start, self._on_start)
        bus.on(Stop, self._on_stop)
        bus.on(EmergencyStop, self._on_emergency_stop)
        bus.on(Rearm, lambda c: self._later(self._stim.rearm(c.source), c))
        bus.on(ChangeBand, self._on_band)
        bus.on(Pain, self._on_pain)
        bus.on(Calibrate, self._on_calibrate)
        bus.on(PickProtocol, self._on_pick)
        bus.on_error = self._failed

    def session_opened(self) -> None:
        self._opened = True

    def session_closed(self) -> None:
        self._opened = False

    async def wait_for_start(self, stop: asyncio.Event) -> None:
        """Until a therapist's `start` (or `stop` is set)."""
        waits = {asyncio.create_task(self.started.wait()), asyncio.create_task(stop.wait())}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()

    async def settle(self) -> None:
        """Lets the work under way (a stop reaching the device, its outcome the log) finish."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def _on_start(self, cmd: Start) -> None:
        if cmd.pain_before is not None and not self._opened:
            self.pain_before = cmd.pain_before
        self.started.set()

    def _on_stop(self, cmd: Stop) -> None:
        if cmd.pain_after is not None:
            self.pain_after = cmd.pain_after
        self._stop("dashboard_stop" if cmd.source == "dashboard" else "therapist_stop")

    def _on_emergency_stop(self, cmd: EmergencyStop) -> None:
        # Latch stimulation, keep the session running (ending it is the separate `stop`). The
        # host latch is taken here, before the handler returns; only sending to the device
        # waits for a task. The driver logs the outcome (acknowledged, no ack, not sent).
        t0 = self._stim.latch(cmd.source)
        self._later(self._stim.send_estop(t0), cmd)

    def _on_band(self, cmd: ChangeBand) -> None:
        # logs band_set or band_refused
        self._prescription.change_band(cmd.low_pct, cmd.high_pct, cmd.source)

    def _on_pain(self, cmd: Pain) -> None:
        self.pain_after = cmd.pain_after

    def _on_calibrate(self, cmd: Calibrate) -> None:
        self._log("calibrate_requested", {"source": cmd.source})
        self._calibrate()

    def _on_pick(self, cmd: PickProtocol) -> None:
        self._log("protocol_picked", {"name": cmd.name, "source": cmd.source})
        self._prescription.change_protocol(cmd.name, cmd.source)  # a refusal raises: failed

    def _later(self, work: Awaitable[Any], cmd: Command) -> None:
        task = asyncio.ensure_future(work)
        self._pending.add(task)

        def done(t: asyncio.Future[Any]) -> None:
            self._pending.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self._failed(cmd, t.exception())  # type: ignore[arg-type]

        task.add_done_callback(done)

    def _failed(self, cmd: Command, exc: BaseException) -> None:
        name = type(cmd).__name__
        detail = {"control": name, "source": cmd.source, "error": f"{type(exc).__name__}: {exc}"}
        self._log("control_failed", detail)
