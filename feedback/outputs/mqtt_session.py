"""The session's MQTT messages: their bodies (docs/mqtt.md), built from the runner's items and
handed to the publisher, whose outbox and queues do the sending (feedback.outputs.mqtt_publisher).

Session messages (status, session_start, event, rep, cue, session_end) are numbered in one
sequence (`MessageNumberer`); live snapshots go on the latest-wins lane at `mqtt.live_hz`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from feedback.contraction_report import CONTRACT_V1_CUE_KINDS
from feedback.outputs.base import (
    BlockDone,
    CuesDue,
    Item,
    Policy,
    RepDone,
    SessionClosed,
    SessionEvent,
    SessionOpened,
)
from feedback.outputs.bodies import cue_body, onset_state
from feedback.outputs.topics import MessageNumberer, Topics
from feedback.snapshot import published_device, published_settings

if TYPE_CHECKING:
    # Annotations only: aiomqtt and paho are imported where a publisher is built (app).
    from feedback.outputs.mqtt_publisher import MqttPublisher


class MqttSessionOutput:
    name = "mqtt"
    policy = Policy.LOSSLESS  # session messages; live snapshots go on the publisher's live lane
    restartable = True  # the outbox and the queue outlive the task

    def __init__(self, publisher: MqttPublisher, topics: Topics, live_hz: float) -> None:
        self.publisher = publisher
        self.topics = topics
        self._live_period = 1.0 / live_hz
        self._next_live = 0.0
        self.numberer: MessageNumberer | None = None

    def offer(self, item: Item) -> None:
        if isinstance(item, CuesDue):
            self._cues(item)
        elif isinstance(item, BlockDone):
            self._block(item)
        elif isinstance(item, SessionEvent):
            self._message(self.topics.event, item.kind, item.detail)
        elif isinstance(item, RepDone):
            self._message(self.topics.rep, "rep", item.metrics)
        elif isinstance(item, SessionOpened):
            self._opened(item)
        elif isinstance(item, SessionClosed):
            self._closed(item)

    async def run(self) -> None:
        await self.publisher.run()

    async def drained(self, timeout_s: float) -> bool:
        return await self.publisher.flush(timeout_s)

    def _message(self, topic: str, kind: str, body: dict[str, Any]) -> None:
        assert self.numberer is not None, "a session message before session_start"
        self.publisher.publish(topic, self.numberer.envelope(kind, body))

    def _status(self, state: str) -> None:
        assert self.numberer is not None
        envelope = self.numberer.envelope("status", {"state": state})
        self.publisher.publish(self.topics.status, envelope, retain=True)

    def _opened(self, o: SessionOpened) -> None:
        self.numberer = MessageNumberer(o.session_id)
        self.publisher.begin_session(o.session_id)  # named in the station's last will
        s = o.settings
        self._status("in_session")
        self._message(
            self.topics.session,
            "session_start",
            {
                "patient": s.session.patient,
                "side": s.session.side,
                "protocol": s.protocol.name,
                "device": published_device(o.device.as_dict()),
                "settings": published_settings(s),
                "envelope_group_delay_ms": round(o.group_delay_ms, 1),
                "reps_prescribed": s.protocol.reps if o.reps_counted else None,
                "reps_counted": o.reps_counted,  # false: free practice, reps_prescribed moot
                "pain_before": o.pain_before,
                "montage": o.montage,  # feedback.placement
            },
        )

    def _cues(self, due: CuesDue) -> None:
        # Only from here, not again from the block's Tick: a cue leaves before the block's rest.
        for cue in due.cues:
            if cue.kind in CONTRACT_V1_CUE_KINDS:
                self._message(self.topics.cue, "cue", cue_body(cue, due))

    def _block(self, b: BlockDone) -> None:
        tick = b.tick
        now = time.monotonic()
        if now < self._next_live:
            return
        self._next_live = now + self._live_period
        assert self.numberer is not None
        ex, block = tick.exercise, tick.processed.block
        onset_ms = b.last_onset_ms
        body = {
            "pct_mvc": {k: round(v, 2) for k, v in tick.pct_mvc.items()},
            "vm_vl_ratio": None if tick.vm_vl_ratio is None else round(tick.vm_vl_ratio, 3),
            "phase": ex.phase.name.lower(),
            "holding": ex.holding,
            "reps": ex.reps_done if b.reps_counted else None,
            "reps_counted": b.reps_counted,
            "contractions": tick.contraction_count,
            "index": block.end_index - 1,
            "t_sample": round(block.t_arrival, 6),
            "lsi": None if tick.lsi is None else round(tick.lsi, 1),
            "onset": onset_state(tick),
            "vm_vl_onset_ms": None if onset_ms is None else round(onset_ms, 1),
        }
        self.publisher.publish_live(self.topics.live, self.numberer.live_envelope(body))

    def _closed(self, c: SessionClosed) -> None:
        assert self.numberer is not None
        # The end message cannot count its own delivery: the summary the clinic stores says
        # how many session messages came before it (msg_id 1..n), a completeness check.
        summary = {**c.summary, "messages_before_end": self.numberer.sent}
        self.publisher.discard_live()
        self._message(
            self.topics.session, "session_end", {"summary": summary, "pain_after": c.pain_after}
        )
        self._status("idle")
