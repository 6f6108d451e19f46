"""Station side of the live stream: decimates every tick into a pending buffer and, `hz` times a
second, packs it into one `StreamPacket` offered to the publisher's latest-wins lane."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from feedback.outputs.base import BlockDone, Item, Policy, SessionOpened, idle
from feedback.outputs.decimate import decimate
from feedback.outputs.stream import DISPLAY_HZ, MAX_SAMPLES, StreamPacket, encode
from feedback.pipeline import Tick

if TYPE_CHECKING:
    # Annotations only: aiomqtt and paho are imported where a publisher is built (app).
    from feedback.outputs.mqtt_publisher import MqttPublisher


@dataclass(frozen=True, slots=True)
class StreamIdentity:
    """What stays fixed in a session and goes into every packet."""

    session: str
    channels: tuple[str, ...]
    target: str
    protocol: str
    patient: str
    mvc_mv: tuple[float, ...]
    reps_total: int
    sets: int


class StreamSource:
    def __init__(self, identity: StreamIdentity, rate_hz: float, hz: float) -> None:
        self.identity = identity
        self.rate_hz = rate_hz
        self.factor = max(1, round(rate_hz / DISPLAY_HZ))
        self.period_s = 1.0 / hz
        self._next_due = 0.0
        self._counter = 0
        n_ch = len(identity.channels)
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending = 0  # display samples in _parts
        self._first: int | None = None  # device index of the first pending display sample
        self._carry = (np.zeros((n_ch, 0), np.float32),) * 2 + (np.zeros(0, bool),)
        self._carry_index = 0  # device index of the carry's first sample
        self.last: Tick | None = None
        self.bytes_sent = 0
        self.packets = 0

    def add(self, tick: Tick) -> None:
        """Per block: decimate into the pending buffer (a few µs)."""
        block = tick.processed.block
        if self._carry[0].shape[1] == 0:
            self._carry_index = block.first_index
        blank = tick.blanked if tick.blanked is not None else np.zeros(block.n_samples, bool)
        raw = np.concatenate([self._carry[0], tick.processed.filtered], axis=1)
        env = np.concatenate([self._carry[1], tick.processed.envelope], axis=1)
        blanked = np.concatenate([self._carry[2], blank])
        whole = raw.shape[1] // self.factor * self.factor
        if whole:
            if self._first is None:
                self._first = self._carry_index
            part = decimate(raw[:, :whole], env[:, :whole], blanked[:whole], self.factor)
            self._parts.append(part)
            self._pending += whole // self.factor
        self._carry = (raw[:, whole:], env[:, whole:], blanked[whole:])
        self._carry_index += whole
        self.last = tick

    def due(self, now: float) -> bool:
        if now < self._next_due or not self._pending:
            return False
        self._next_due = now + self.period_s
        return True

    def packet(self, **status: Any) -> bytes:
        """Pack what is pending (at most the newest 10 s) and start afresh."""
        tick = self.last
        assert tick is not None and self._first is not None
        raw = np.concatenate([p[0] for p in self._parts], axis=1)
        env = np.concatenate([p[1] for p in self._parts], axis=1)
        blanked = np.concatenate([p[2] for p in self._parts])
        first = self._first
        if raw.shape[1] > MAX_SAMPLES:  # a stalled connection: keep the newest, say where it starts
            first += (raw.shape[1] - MAX_SAMPLES) * self.factor
            raw, env, blanked = raw[:, -MAX_SAMPLES:], env[:, -MAX_SAMPLES:], blanked[-MAX_SAMPLES:]
        self._parts, self._pending, self._first = [], 0, None
        self._counter += 1
        data = encode(self._build(tick, first, raw, env, blanked, status))
        self.bytes_sent += len(data)
        self.packets += 1
        return data

    def _build(
        self,
        tick: Tick,
        first: int,
        raw: np.ndarray,
        env: np.ndarray,
        blanked: np.ndarray,
        status: dict[str, Any],
    ) -> StreamPacket:
        ident, ex = self.identity, tick.exercise
        # The protocol in force comes with the tick (a picked protocol may switch mid-session).
        protocol, sets, reps_total = (
            (tick.protocol, tick.sets, tick.reps_total)
            if tick.protocol
            else (ident.protocol, ident.sets, ident.reps_total)
        )
        return StreamPacket(
            counter=self._counter, first_index=first, rate_hz=self.rate_hz,
            decimation=self.factor, t_sample=tick.processed.block.t_arrival,
            session=ident.session, channels=ident.channels,
            target=ident.channels.index(ident.target), protocol=protocol,
            patient=ident.patient, band=tick.band, phase=ex.phase.name.lower(),
            holding=ex.holding, link_up=status.get("link", "up") == "up",
            hold_progress=ex.hold_progress, set_no=ex.set_no, sets=sets,
            reps_done=ex.reps_done, reps_total=reps_total, phase_left_s=ex.phase_left_s,
            gaps=int(status.get("gaps", 0)), protocol_errors=int(status.get("protocol_errors", 0)),
            stim_state=str(status.get("stim_state", "off")),
            stim_bursts=int(status.get("stim_bursts", 0)), vm_vl_ratio=tick.vm_vl_ratio,
            pct_mvc=tuple(tick.pct_mvc.get(c, 0.0) for c in ident.channels),
            mvc_mv=ident.mvc_mv, envelope=env.astype(np.float16), raw=raw.astype(np.float16),
            blanked=blanked,
        )  # fmt: skip


class StreamOutput:
    """The binary live stream for remote dashboards as an output: every block is decimated into
    the pending buffer; `hz` times a second a packet goes on the publisher's latest-wins lane."""

    name = "stream"
    policy = Policy.LATEST_WINS
    restartable = True

    def __init__(self, publisher: MqttPublisher, topic: str, hz: float) -> None:
        self.publisher = publisher
        self.topic = topic
        self.hz = hz
        self.source: StreamSource | None = None

    def offer(self, item: Item) -> None:
        if isinstance(item, BlockDone) and self.source is not None:
            self._block(item)
        elif isinstance(item, SessionOpened):
            s, d = item.settings, item.device
            identity = StreamIdentity(
                session=item.session_id,
                channels=d.channels,
                target=item.target,
                protocol=s.protocol.name,
                patient=s.session.patient,
                # 0 (unknown) without a calibration: a viewer would scale to % MVC by it
                mvc_mv=tuple(
                    s.calibration.mvc_mv.get(c, 0.0) if s.calibration.calibrated else 0.0
                    for c in d.channels
                ),
                reps_total=item.reps_prescribed,
                sets=s.protocol.sets,
            )
            self.source = StreamSource(identity, d.rate_hz, self.hz)

    def _block(self, b: BlockDone) -> None:
        assert self.source is not None
        self.source.add(b.tick)
        if self.source.due(time.monotonic()):
            st = b.status
            packet = self.source.packet(
                link=st.link,
                gaps=st.gaps,
                protocol_errors=st.protocol_errors,
                stim_state=st.stim_state,
                stim_bursts=st.stim_bursts,
            )
            self.publisher.publish_live_bytes(self.topic, packet)

    async def run(self) -> None:
        await idle()  # the publisher's own task sends

    async def drained(self, timeout_s: float) -> bool:
        return True
