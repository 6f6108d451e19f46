"""The terminal view's state as an output: each item overwrites what it changes (latest wins);
`run_terminal_view` (feedback.outputs.terminal) draws it at its own pace."""

from __future__ import annotations

from config.protocols import prescribed_reps
from feedback.outputs.base import BlockDone, Item, Policy, SessionEvent, SessionOpened, idle
from feedback.outputs.bodies import onset_state
from feedback.outputs.effort import EffortTracker
from feedback.outputs.terminal import ViewState


class ViewOutput:
    name = "view"
    policy = Policy.LATEST_WINS
    restartable = True

    def __init__(self, view: ViewState) -> None:
        self.view = view
        self._effort = EffortTracker()

    def offer(self, item: Item) -> None:
        if isinstance(item, BlockDone):
            self._block(item)
        elif isinstance(item, SessionEvent) and item.kind == "calibration":
            self.view.calibrated = True  # a mid-session calibration passed and is in use
        elif isinstance(item, SessionOpened):
            self._opened(item)

    async def run(self) -> None:
        await idle()

    async def drained(self, timeout_s: float) -> bool:
        return True

    def _opened(self, o: SessionOpened) -> None:
        s, v = o.settings, self.view
        v.patient, v.protocol = s.session.patient, s.protocol.name
        v.target_channel = s.target.channel
        v.band = (s.target.low_pct, s.target.high_pct)
        v.reps_total = prescribed_reps(s.protocol)
        v.reps_done = 0 if o.reps_counted else None
        v.group_delay_ms = o.group_delay_ms
        v.calibrated = s.calibration.calibrated
        v.calibration_source = s.calibration.source
        v.free = s.protocol.kind == "free"

    def _block(self, b: BlockDone) -> None:
        tick, v, st = b.tick, self.view, b.status
        ex, block = tick.exercise, tick.processed.block
        v.band = tick.band
        v.protocol, v.reps_total = tick.protocol, tick.reps_total
        v.pct_mvc = tick.pct_mvc
        env = tick.processed.envelope
        if env.shape[1]:
            v.envelope_mv = dict(zip(block.channels, env[:, -1].tolist(), strict=True))
        v.phase, v.holding, v.hold_progress = ex.phase.name.lower(), ex.holding, ex.hold_progress
        v.reps_done = ex.reps_done if b.reps_counted else None
        v.phase_left_s, v.session_left_s = ex.phase_left_s, ex.session_left_s
        v.rep_held = self._effort.update(v.phase, ex.phase_left_s, v.reps_done)
        v.free = b.free
        v.contractions, v.contracting = tick.contraction_count, tick.contracting
        v.vm_vl_ratio = tick.vm_vl_ratio
        v.lsi = tick.lsi
        v.onset = onset_state(tick)
        v.problems = tick.problems or {}
        if tick.contractions:
            v.last_contraction = tick.contractions[-1]
        v.link, v.gaps = st.link, st.gaps
        v.mqtt = "up" if st.mqtt_up else "down"
        v.mqtt_backlog = st.mqtt_backlog
