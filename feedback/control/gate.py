"""Therapist commands: validated and authorised on the station before anything acts on them.

Gates, in order (each refusal is logged and published as a `command_result` event):
1. the broker's ACL: only therapist accounts may publish to `.../cmd` and `.../cmd/estop`
   (deploy/mosquitto/acl);
2. size, nesting depth, then the JSON Schema (`schemas/command.json`): shape, ranges, no
   unknown fields;
3. `role` is `therapist` and `issuer` is on this station's allow-list (`mqtt.therapists`);
4. freshness and replay: `t` within `max_age_s` of the station's clock, and (`issuer`,
   `msg_id`) not seen before within that window (`ReplayWindow`);
5. the command names the running session (start: none may be running).

`emergency_stop` is the exception that fails safe: once authorised (gates 1–3) it acts whatever
its age, session or msg_id, because stopping is never the dangerous direction. It has its own
topic (`.../cmd/estop`) and its own entry, `handle_estop`, so no flood on `.../cmd` delays it,
and it never touches the replay window: an emergency stop can neither be refused as a replay
nor make a later command look like one.

Nothing a peer sends can raise out of `handle`: any failure is a refused verdict, counted and
logged. Refusals are reported one by one up to REPORTED_REFUSALS_PER_S; beyond that (a flood)
they are counted and reported as one summary verdict, so a flood cannot fill the session log
and the outbox ahead of the emergency stop's own events.

An accepted command goes to the `CommandBus` (feedback.control.bus) as a typed value
(feedback.control.commands), the same values the dashboard's buttons become.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from feedback.clinic.validation import ESTOP_LEAF, InvalidMessage, conform, decode
from feedback.control.bus import CommandBus
from feedback.control.commands import MQTT_ACTIONS, from_body
from feedback.outputs.topics import SCHEMA_VERSION, Topics

log = logging.getLogger(__name__)

ACTIONS = MQTT_ACTIONS
REPORTED_REFUSALS_PER_S = 10
MAX_IDS_PER_ISSUER = 1024  # a therapist sends a few commands a minute, not 34 a second
_last_msg_id = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: bool
    reason: str
    action: str | None = None
    issuer: str | None = None
    msg_id: int | None = None


class ReplayWindow:
    """Which (issuer, msg_id) were accepted, for as long as a command with them could still be
    fresh. A command is fresh while the station's clock is within `max_age_s` of its `t`, so
    an id is remembered until `t + max_age_s` and then forgotten: a replay after that is
    already refused as stale. Ids need not increase, so one huge msg_id poisons nothing; at
    most `max_ids` per issuer are held, and a full window refuses (it never forgets early)."""

    def __init__(self, max_age_s: float, max_ids: int = MAX_IDS_PER_ISSUER) -> None:
        self.max_age_s = max_age_s
        self.max_ids = max_ids
        self._seen: dict[str, dict[int, float]] = {}  # issuer → msg_id → forget after

    def refusal(self, issuer: str, msg_id: int, now: float) -> str | None:
        ids = self._prune(issuer, now)
        if msg_id in ids:
            return f"replayed: msg_id {msg_id} from {issuer} was already accepted"
        if len(ids) >= self.max_ids:
            return f"more than {self.max_ids} commands from {issuer} within {self.max_age_s} s"
        return None

    def accept(self, issuer: str, msg_id: int, t: float) -> None:
        self._seen.setdefault(issuer, {})[msg_id] = t + self.max_age_s

    def _prune(self, issuer: str, now: float) -> dict[int, float]:
        ids = self._seen.setdefault(issuer, {})
        for old in [i for i, until in ids.items() if until < now]:
            del ids[old]
        return ids


class CommandGate:
    def __init__(
        self,
        topics: Topics,
        therapists: Iterable[str],
        bus: CommandBus,
        *,
        current_session: Callable[[], str | None],
        max_age_s: float = 30.0,
        on_verdict: Callable[[Verdict], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topic = topics.cmd
        self.therapists = frozenset(therapists)
        self.bus = bus
        self.current_session = current_session
        self.max_age_s = max_age_s
        self.on_verdict = on_verdict
        self.clock = clock
        self.estop_topic = topics.estop
        assert self.estop_topic.endswith(ESTOP_LEAF)
        self.replays = ReplayWindow(max_age_s)
        self.accepted = 0
        self.refused = 0
        self.errors = 0  # failures inside the gate itself (each also a refusal)
        self.unreported = 0  # refusals of a flood, counted but not reported one by one
        self._window = (0, 0)  # (second, refusals reported in it)
        self._acks = 0  # msg_id counter of command_ack answers

    def handle(self, payload: bytes) -> Verdict:
        """A command from `.../cmd`. Never raises: any failure is a refused verdict."""
        return self._handle(self.topic, payload)

    def handle_estop(self, payload: bytes) -> Verdict:
        """A command from `.../cmd/estop`: only emergency_stop is valid there."""
        return self._handle(self.estop_topic, payload)

    def answer_estop(self, payload: bytes) -> dict[str, Any] | None:
        """`handle_estop`, and the `command_ack` the stop's connection sends straight back to
        the therapist (docs/mqtt.md): always for an accepted stop, for a refused message only
        while refusals are reported one by one (a flood is not answered message by message)."""
        unreported = self.unreported
        verdict = self.handle_estop(payload)
        if not verdict.accepted and self.unreported > unreported:
            return None
        self._acks += 1
        try:
            session = self.current_session()
        except Exception:
            session = None
        return {
            "v": SCHEMA_VERSION,
            "type": "command_ack",
            "session": session,
            "msg_id": self._acks,
            "t": round(self.clock(), 6),
            "command_msg_id": verdict.msg_id,
            "issuer": verdict.issuer,
            "accepted": verdict.accepted,
            "reason": verdict.reason[:300],
            "latched": self.bus.emergency_stop.is_set(),
        }

    def _handle(self, topic: str, payload: bytes) -> Verdict:
        try:
            msg = decode(topic, payload)
            issuer = msg.body.get("issuer")
            if isinstance(issuer, str) and issuer not in self.therapists:
                # before the schema: a stranger's command is refused at the cheapest point
                reason = f"issuer {issuer[:64]!r} is not on this station's therapist list"
                # The audit record still names who asked for what (only known actions and an
                # integer id: nothing unchecked goes into the session log).
                action, msg_id = msg.body.get("action"), msg.body.get("msg_id")
                return self._verdict(Verdict(
                    False, reason, action if action in ACTIONS else None, issuer[:64],
                    msg_id if type(msg_id) is int and 0 < msg_id < 2**53 else None))  # fmt: skip
            body = conform(msg).body
        except InvalidMessage as exc:
            return self._verdict(Verdict(False, f"invalid command: {exc.reason}"))
        try:
            return self._decide(body)
        except Exception as exc:  # a bug here must refuse one command, not end the listener
            self.errors += 1
            log.exception("command gate failed")
            return self._verdict(Verdict(False, f"internal error: {type(exc).__name__}"))

    def _decide(self, body: dict[str, Any]) -> Verdict:
        action, issuer, msg_id = body["action"], body["issuer"], body["msg_id"]
        reason = self._refusal(body)
        verdict = Verdict(reason is None, reason or "accepted", action, issuer, msg_id)
        if verdict.accepted:
            if action != "emergency_stop":
                self.replays.accept(issuer, msg_id, float(body["t"]))
            self.bus.submit(from_body(body))
        return self._verdict(verdict)

    def _refusal(self, body: dict[str, Any]) -> str | None:
        issuer, action = body["issuer"], body["action"]
        if issuer not in self.therapists:
            return f"issuer {issuer!r} is not on this station's therapist list"
        if action == "emergency_stop":
            return None
        now = self.clock()
        age = now - float(body["t"])
        if abs(age) > self.max_age_s:
            return f"stale or future command: {age:.1f} s old (limit {self.max_age_s} s)"
        replayed = self.replays.refusal(issuer, body["msg_id"], now)
        if replayed is not None:
            return replayed
        running = self.current_session()
        if action == "start":
            return None if running is None else f"session {running} is already running"
        if running is None or body["session"] != running:
            return f"command is for session {body['session']!r}, running is {running!r}"
        if action == "change_band" and body["high_pct"] <= body["low_pct"]:
            return f"band {body['low_pct']}–{body['high_pct']} % MVC is empty"
        return None

    def _verdict(self, verdict: Verdict) -> Verdict:
        if verdict.accepted:
            self.accepted += 1
            log.warning("command %s from %s accepted", verdict.action, verdict.issuer)
            self._report(verdict)
            return verdict
        self.refused += 1
        second = int(self.clock())
        if second != self._window[0]:
            if self.unreported:
                n, self.unreported = self.unreported, 0
                self._report(Verdict(False, f"{n} more commands refused (a flood?), not "
                                            "reported one by one"))  # fmt: skip
            self._window = (second, 0)
        if self._window[1] >= REPORTED_REFUSALS_PER_S:
            self.unreported += 1
            log.debug("command refused: %s", verdict.reason)
            return verdict
        self._window = (second, self._window[1] + 1)
        log.warning("command refused: %s", verdict.reason)
        self._report(verdict)
        return verdict

    def _report(self, verdict: Verdict) -> None:
        if self.on_verdict is None:
            return
        try:
            self.on_verdict(verdict)
        except Exception:  # the log failing must not undo or block the command
            self.errors += 1
            log.exception("reporting a command verdict failed")


def make_command(
    action: str,
    *,
    issuer: str,
    session: str | None,
    msg_id: int | None = None,
    t: float | None = None,
    **params: Any,
) -> bytes:
    """A command as a therapist's tool sends it; msg_id defaults to Unix milliseconds, bumped
    when two commands fall in the same millisecond, so it increases across tool restarts too."""
    global _last_msg_id
    now = time.time() if t is None else t
    if msg_id is None:
        msg_id = _last_msg_id = max(int(now * 1000), _last_msg_id + 1)
    body = {
        "v": SCHEMA_VERSION,
        "type": "command",
        "session": session,
        "msg_id": msg_id,
        "t": round(now, 6),
        "issuer": issuer,
        "role": "therapist",
        "action": action,
        **params,
    }
    return json.dumps(body, separators=(",", ":")).encode()
