"""The versioned MQTT topic tree and message envelope (documented in docs/mqtt.md)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

TOPIC_ROOT = "vmf/v1"
SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Topics:
    clinic: str
    station: str

    @property
    def base(self) -> str:
        return f"{TOPIC_ROOT}/{self.clinic}/{self.station}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def session(self) -> str:
        return f"{self.base}/session"

    @property
    def cue(self) -> str:
        return f"{self.base}/cue"

    @property
    def rep(self) -> str:
        return f"{self.base}/rep"

    @property
    def event(self) -> str:
        return f"{self.base}/event"

    @property
    def live(self) -> str:
        return f"{self.base}/live"

    @property
    def stream(self) -> str:
        """The binary live stream for remote viewers (feedback.outputs.stream); not logged."""
        return f"{self.base}/stream"

    @property
    def cmd(self) -> str:
        """Therapist commands to this station (the station reads, only therapists write)."""
        return f"{self.base}/cmd"

    @property
    def estop(self) -> str:
        """The emergency stop's own topic: only `emergency_stop` commands, handled first."""
        return f"{self.base}/cmd/estop"

    @property
    def ack(self) -> str:
        """The station's answer to each emergency stop, sent on the stop's own connection."""
        return f"{self.base}/ack"


class MessageNumberer:
    """Stamps every message of a session with the session id and a msg_id.

    Lossless messages count 1, 2, 3, ... without holes, so a receiver de-duplicates on
    (session, msg_id) and sees a hole as a loss. Live messages (latest wins, holes expected) have
    their own counter, so their dropped snapshots do not look like lost session messages.
    """

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self._next = 1
        self._next_live = 1

    def envelope(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        msg = self._stamp(kind, self._next)
        self._next += 1
        msg.update(body)
        return msg

    @property
    def sent(self) -> int:
        """Lossless messages numbered so far: the next one's msg_id minus one."""
        return self._next - 1

    def live_envelope(self, body: dict[str, Any]) -> dict[str, Any]:
        msg = self._stamp("live", self._next_live)
        self._next_live += 1
        msg.update(body)
        return msg

    def _stamp(self, kind: str, msg_id: int) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION,
            "type": kind,
            "session": self.session_id,
            "msg_id": msg_id,
            "t": round(time.time(), 6),
        }


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
