"""What the patient is asked to do, changed during a session: the target band and the protocol.

A therapist's change (from MQTT or the dashboard) passes the station's `[target]` checks, the
same as the config file's, before the pipeline sees it; each change and each refusal is an event.
The pipeline decides when a picked protocol takes over (Pipeline.change_protocol); this says so
when the tick reports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from config.protocols import load_protocol
from config.settings import TargetSettings
from feedback.pipeline import Pipeline, Tick

EventSink = Callable[[str, dict[str, Any]], None]


class Prescription:
    """The band and protocol changes of one session; `attach` the pipeline when it exists."""

    def __init__(self, target: TargetSettings, log_event: EventSink) -> None:
        self._target = target
        self._log = log_event
        self._pipeline: Pipeline | None = None
        self._switch_source = ""  # who picked the pending protocol

    def attach(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def change_band(self, low_pct: object, high_pct: object, source: str) -> bool:
        """A band change from any source, checked against the `[target]` constraints (the same
        as in the config file) before it acts; logged as `band_set` or `band_refused`."""
        try:
            target = self._target.with_band(low_pct, high_pct)  # type: ignore[arg-type]
        except ValidationError as exc:
            reason = "; ".join(e["msg"] for e in exc.errors())
            body = {"low_pct": str(low_pct), "high_pct": str(high_pct), "source": source}
            self._log("band_refused", {**body, "reason": reason[:300]})
            return False
        if self._pipeline is None:
            self._log("band_refused", {"source": source, "reason": "no session running"})
            return False
        self._pipeline.set_band(target.low_pct, target.high_pct)
        applied: dict[str, Any] = {"low_pct": target.low_pct, "high_pct": target.high_pct}
        self._log("band_set", {**applied, "source": source})
        return True

    def change_protocol(self, name: str, source: str) -> None:
        """Switch to protocol `name` at the next safe boundary (see Pipeline.change_protocol).
        Its band passes the station's `[target]` checks; an unknown name or a bad band raises
        (ProtocolError, ValidationError) and nothing changes. `protocol_changed` is logged when
        the switch takes effect (`took_effect`)."""
        if self._pipeline is None:
            raise RuntimeError("no session running")
        protocol, target = load_protocol(name)
        band = self._target.with_band(target.low_pct, target.high_pct)
        self._pipeline.change_protocol(protocol, band.low_pct, band.high_pct)
        self._switch_source = source

    def took_effect(self, tick: Tick) -> None:
        """The tick in which a picked protocol took over: logged as `protocol_changed`."""
        assert tick.switched_at is not None
        detail = {
            "name": tick.protocol,
            "from_index": tick.switched_at,
            "reps_done": tick.exercise.reps_done,
            "reps_total": tick.reps_total,
            "low_pct": tick.band[0],
            "high_pct": tick.band[1],
            "source": self._switch_source,
        }
        self._log("protocol_changed", detail)

    def raised(self, tick: Tick) -> None:
        """The progression's band raises in this tick (feedback.progression), each an event."""
        for r in tick.band_raised:
            detail = {
                "low_pct": r.low_pct,
                "high_pct": r.high_pct,
                "from_index": r.from_index,
                "after_rep": r.after_rep,
            }
            self._log("band_raised", detail)
