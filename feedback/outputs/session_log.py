"""The local session log as an output: session, settings snapshot, reps, events and cues into
the SQLite `SessionStore` (its bounded queue and writer thread do the writing)."""

from __future__ import annotations

import asyncio

from feedback.outputs.base import (
    BlockDone,
    Item,
    Policy,
    RepDone,
    SessionClosed,
    SessionEvent,
    SessionOpened,
)
from feedback.outputs.bodies import cue_body
from feedback.outputs.session_store import SessionStore
from feedback.snapshot import local_settings


class SessionLogOutput:
    name = "session_log"
    policy = Policy.LOSSLESS
    restartable = True  # the queue outlives the writer task

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self._session = ""

    def offer(self, item: Item) -> None:
        store, sid = self.store, self._session
        if isinstance(item, BlockDone):
            for cue in item.tick.cues:
                store.add_event(sid, item.t, "cue", cue_body(cue, item.tick))
        elif isinstance(item, SessionEvent):
            store.add_event(sid, item.t, item.kind, item.detail)
        elif isinstance(item, RepDone):
            m = item.metrics
            if m["achieved"]:
                store.add_rep(sid, m["rep"], m["at_index"], item.t, m["time_to_band_s"])
        elif isinstance(item, SessionOpened):
            self._opened(item)
        elif isinstance(item, SessionClosed):
            store.end_session(sid, item.t, item.summary)

    def _opened(self, o: SessionOpened) -> None:
        self._session = o.session_id
        s = o.settings
        self.store.start_session(
            o.session_id,
            clinic=s.session.clinic,
            station=s.session.station,
            patient=s.session.patient,
            protocol=s.protocol.name,
            started_at=o.started_at,
            settings=local_settings(s),  # the clinic gets less: see feedback.snapshot
            device=o.device.as_dict(),
        )

    async def run(self) -> None:
        await self.store.run()

    async def drained(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self.store.flush(), timeout_s)
        except TimeoutError:
            return False
        return True
