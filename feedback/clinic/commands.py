"""Therapist commands: validated and authorised on the station before anything acts on them.

Gates, in order (each refusal is logged and published as a `command_result` event):
1. the broker's ACL: only therapist accounts may publish to `.../cmd` (deploy/mosquitto/acl);
2. the JSON Schema (`schemas/command.json`): shape, ranges, no unknown fields;
3. `role` is `therapist` and `issuer` is on this station's allow-list (`mqtt.therapists`);
4. freshness and replay: `t` within `max_age_s` of the station's clock, `msg_id` greater than
   the last one accepted from that issuer;
5. the command names the running session (start: none may be running).

`emergency_stop` is the exception that fails safe: once authorised (gates 1–3) it acts whatever
its age, session or msg_id, because stopping is never the dangerous direction.

The `CommandBus` is how the rest of the station reacts: callbacks per action, plus an
`asyncio.Event` for the emergency stop that the stimulation controller can wait on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from feedback.clinic.validation import InvalidMessage, check
from feedback.outputs.topics import SCHEMA_VERSION, Topics

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], None]
ACTIONS = ("start", "stop", "change_band", "emergency_stop", "pain")
_last_msg_id = 0


class CommandBus:
    def __init__(self) -> None:
        self.emergency_stop = asyncio.Event()
        self._handlers: defaultdict[str, list[Handler]] = defaultdict(list)

    def on(self, action: str, handler: Handler) -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown command action {action!r}; known: {ACTIONS}")
        self._handlers[action].append(handler)

    def dispatch(self, command: dict[str, Any]) -> None:
        action = command["action"]
        if action == "emergency_stop":
            self.emergency_stop.set()  # first, before any handler could fail
        for handler in self._handlers[action]:
            try:
                handler(command)
            except Exception:  # one broken subscriber must not keep the others from stopping
                log.exception("handler for %s failed", action)


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: bool
    reason: str
    action: str | None = None
    issuer: str | None = None
    msg_id: int | None = None


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
        self._last_msg_id: dict[str, int] = {}
        self.accepted = 0
        self.refused = 0

    def handle(self, payload: bytes) -> Verdict:
        try:
            body = check(self.topic, payload).body
        except InvalidMessage as exc:
            return self._verdict(Verdict(False, f"invalid command: {exc.reason}"))
        action, issuer, msg_id = body["action"], body["issuer"], body["msg_id"]
        reason = self._refusal(body)
        verdict = Verdict(reason is None, reason or "accepted", action, issuer, msg_id)
        if verdict.accepted:
            self._last_msg_id[issuer] = max(msg_id, self._last_msg_id.get(issuer, 0))
            self.bus.dispatch(body)
        return self._verdict(verdict)

    def _refusal(self, body: dict[str, Any]) -> str | None:
        issuer, action = body["issuer"], body["action"]
        if issuer not in self.therapists:
            return f"issuer {issuer!r} is not on this station's therapist list"
        if action == "emergency_stop":
            return None
        age = self.clock() - float(body["t"])
        if abs(age) > self.max_age_s:
            return f"stale or future command: {age:.1f} s old (limit {self.max_age_s} s)"
        if body["msg_id"] <= self._last_msg_id.get(issuer, 0):
            return f"replayed: msg_id {body['msg_id']} not above {self._last_msg_id[issuer]}"
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
        else:
            self.refused += 1
            log.warning("command refused: %s", verdict.reason)
        if self.on_verdict is not None:
            self.on_verdict(verdict)
        return verdict


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
