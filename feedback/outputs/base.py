"""The one interface between the session runner and everything it feeds.

The runner (feedback.session) processes a block and offers what happened, as items, to every
output in its list. An output:

- declares its `policy`: LATEST_WINS (a view: a newer item makes an older one worthless, so a
  slow consumer skips) or LOSSLESS (a log, a recording: every item must arrive);
- takes an item with `offer`, which never blocks (a put into a bounded queue, an assignment, a
  copy into a library's buffer). A lossless output whose queue is full raises `OutputFull`: the
  runner counts it per output and logs it, it is never a silent drop;
- does its own I/O in `run` (a writer thread, a network client), a task the station supervises;
- answers `drained(timeout_s)` at shutdown: True once all it was offered is written or sent.

Items are plain values made once per event or block, so no output reaches into the runner, the
pipeline, the device or another output for what it shows.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

if TYPE_CHECKING:
    from config.settings import Settings
    from devices.base import DeviceInfo, LinkStats
    from feedback.cues import Cue
    from feedback.exercise import ExerciseState
    from feedback.pipeline import Tick


class Policy(enum.Enum):
    LATEST_WINS = "latest_wins"
    LOSSLESS = "lossless"


class OutputFull(Exception):
    """A lossless output's bounded queue is full: the item was not taken (counted, logged)."""

    def __init__(self, output: str, capacity: int) -> None:
        super().__init__(f"output {output}: queue full ({capacity} items)")
        self.output = output
        self.capacity = capacity


@dataclass(frozen=True, slots=True)
class StationStatus:
    """The station's links and stimulation as of one block: built once per block by the runner,
    the same values for the view, the stream and the dashboard."""

    link: str = "connecting"
    gaps: int = 0
    protocol_errors: int = 0
    stim_state: str = "off"
    stim_bursts: int = 0
    mqtt_up: bool = False
    mqtt_backlog: int = 0

    @classmethod
    def of(
        cls, link: LinkStats, stim_state: str, stim_bursts: int, mqtt: MqttHealth | None
    ) -> Self:
        """The status from its sources' own answers, read once per block by the runner."""
        return cls(
            link=link.state.value,
            gaps=link.gaps,
            protocol_errors=link.protocol_errors,
            stim_state=stim_state,
            stim_bursts=stim_bursts,
            mqtt_up=mqtt is not None and mqtt.connected,
            mqtt_backlog=0 if mqtt is None else mqtt.backlog,
        )


class MqttHealth(Protocol):
    """What the station status says about the MQTT link (MqttPublisher has it)."""

    @property
    def connected(self) -> bool: ...
    @property
    def backlog(self) -> int: ...


@dataclass(frozen=True, slots=True)
class DeviceSummary:
    spec: str
    kind: str
    rate_hz: float
    channels: tuple[str, ...]
    firmware: str | None
    serial: str | None

    @classmethod
    def of(cls, info: DeviceInfo) -> Self:
        return cls(
            spec=info.spec,
            kind=info.kind,
            rate_hz=info.rate_hz,
            channels=tuple(info.channels),
            firmware=info.firmware_version,
            serial=info.serial,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "kind": self.kind,
            "rate_hz": self.rate_hz,
            "channels": list(self.channels),
            "firmware": self.firmware,
            "serial": self.serial,
        }


@dataclass(frozen=True, slots=True)
class SessionOpened:
    session_id: str
    started_at: float
    settings: Settings
    device: DeviceSummary
    target: str  # the channel the exercise follows
    group_delay_ms: float
    reps_counted: bool  # False: free practice, no reps
    reps_prescribed: int  # the protocol's total (config.protocols.prescribed_reps)
    pain_before: int | None
    montage: dict[str, Any] = field(default_factory=dict)  # feedback.placement.session_montage


@dataclass(frozen=True, slots=True)
class SessionEvent:
    kind: str
    detail: dict[str, Any]
    t: float


@dataclass(frozen=True, slots=True)
class RepDone:
    """A rep's metrics (feedback.rep_metrics), computed once for every output."""

    metrics: dict[str, Any]
    t: float


@dataclass(frozen=True, slots=True)
class CuesDue:
    """A block's cues, offered the moment they are decided: before the rest of the block's work
    (contractions, reps, the status) and before its `BlockDone`, whose Tick carries the same
    cues for the outputs that log or show them with the block. What a patient acts on (the MQTT
    cue messages) goes from here; `exercise`, `band` and `reps_total` are the Tick's values."""

    cues: tuple[Cue, ...]
    exercise: ExerciseState
    band: tuple[float, float]
    reps_total: int
    t: float


@dataclass(frozen=True, slots=True)
class BlockDone:
    tick: Tick
    status: StationStatus
    reps_counted: bool
    free: bool
    last_onset_ms: float | None  # VM–VL onset difference of the last contraction
    t: float


@dataclass(frozen=True, slots=True)
class SessionClosed:
    summary: dict[str, Any]
    pain_after: int | None
    t: float


Item = SessionOpened | SessionEvent | RepDone | CuesDue | BlockDone | SessionClosed


@runtime_checkable
class Output(Protocol):
    name: str
    policy: Policy
    restartable: bool  # a view (holds nothing of its own) may be restarted; a writer may not

    def offer(self, item: Item) -> None: ...

    async def run(self) -> None: ...

    async def drained(self, timeout_s: float) -> bool: ...


async def idle() -> None:
    """`run` of an output with no I/O of its own: waits to be cancelled."""
    await asyncio.Event().wait()


@dataclass(slots=True)
class Listener:
    """An output made of callbacks, for a bench or a test that watches the session."""

    on_tick: Callable[[Tick], None] | None = None
    on_rep: Callable[[dict[str, Any]], None] | None = None
    on_event: Callable[[SessionEvent], None] | None = None
    name: str = "listener"
    policy: Policy = Policy.LATEST_WINS
    restartable: bool = True
    items: int = field(default=0)

    def offer(self, item: Item) -> None:
        self.items += 1
        if isinstance(item, BlockDone) and self.on_tick is not None:
            self.on_tick(item.tick)
        elif isinstance(item, RepDone) and self.on_rep is not None:
            self.on_rep(item.metrics)
        elif isinstance(item, SessionEvent) and self.on_event is not None:
            self.on_event(item)

    async def run(self) -> None:
        await idle()

    async def drained(self, timeout_s: float) -> bool:
        return True
