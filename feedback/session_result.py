"""What a session amounts to: the counts, the timing, the link and the contractions, as the
station's JSON report and the `session_end` summary give them."""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from devices.base import LinkStats
from feedback.block_timing import BlockTiming

REPORT_CONTRACTIONS = 100  # ~30 kB of contraction metrics in the report and session_end


def new_session_id() -> str:
    return time.strftime("S%Y%m%d-%H%M%S-") + secrets.token_hex(3)


@dataclass(slots=True)
class SessionResult:
    session_id: str
    samples: int = 0
    blocks: int = 0
    reps: int | None = 0  # None: no protocol with reps was followed (free practice, a replay)
    time_in_target_s: float = 0.0
    duration_s: float = 0.0
    cues: int = 0
    compute_us: BlockTiming = field(default_factory=BlockTiming)  # constant memory, any length
    link: LinkStats | None = None
    group_delay_ms: float = 0.0
    mqtt_published: int = 0
    mqtt_backlog: int = 0
    stopped_by: str = "duration"
    # The newest contractions for the report and session_end (each one is also its own event):
    # all of them made a 4-hour session_end ~420 kB, past the clinic's 64 kB message limit.
    contractions: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=REPORT_CONTRACTIONS)
    )
    contractions_total: int = 0
    contraction_rule: dict[str, Any] = field(default_factory=dict)
    contractions_offline: dict[str, Any] | None = None  # the non-causal second pass
    calibration: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] | None = None
    outputs_refused: dict[str, int] = field(default_factory=dict)  # OutputFull per output

    def report(self) -> dict[str, Any]:
        link = self.link or LinkStats()
        return {
            "session_id": self.session_id,
            "samples": self.samples,
            "blocks": self.blocks,
            "gaps": link.gaps,
            "samples_lost": link.samples_lost,
            "protocol_errors": link.protocol_errors,
            "samples_before_info": link.samples_before_info,
            "reconnects": link.reconnects,
            "link_down_s": round(link.down_s, 3),
            "reps": self.reps,
            "time_in_target_s": round(self.time_in_target_s, 3),
            "duration_s": round(self.duration_s, 3),
            "cues": self.cues,
            "block_compute_us_p50": round(self.compute_us.percentile(50), 1),
            "block_compute_us_p99": round(self.compute_us.percentile(99), 1),
            "envelope_group_delay_ms": round(self.group_delay_ms, 1),
            "mqtt_published": self.mqtt_published,
            "mqtt_backlog_at_end": self.mqtt_backlog,
            "stopped_by": self.stopped_by,
            "calibration": self.calibration,
            "contractions": self.contractions_total,  # live: causal, as the session saw them
            "contraction_rule": self.contraction_rule,
            "contraction_metrics": list(self.contractions),  # the newest REPORT_CONTRACTIONS
            "contractions_offline": self.contractions_offline,
            "record": self.record,
            "outputs_refused": dict(self.outputs_refused),
        }
