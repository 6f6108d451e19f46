"""Reconnect delays: exponential with full jitter, the one implementation every reconnecting
client uses (device links, the station's MQTT publisher, the clinic logger, remote dashboards).

Full jitter (the delay is drawn uniformly between 0 and the exponential ceiling) keeps a clinic's
stations from retrying in lock-step after a broker restart: with a fixed schedule, every station
that lost the broker at the same moment comes back at the same moments, and the broker meets
the whole clinic at once on every retry. It lives in `devices/` because processing, outputs and
the clinic side may import `devices`, never the other way round (DESIGN.md, the one-way river).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """`next()` is the delay before the next retry: uniform in [0, ceiling), where the ceiling
    starts at `initial_s` and grows ×`factor` per failure up to `max_s`; `reset()` after a
    success. `rng` is injectable so that tests can seed it."""

    initial_s: float = 0.1
    max_s: float = 2.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    @property
    def ceiling_s(self) -> float:
        return min(self.max_s, self.initial_s * self.factor ** min(self.failures, 64))

    def next(self) -> float:
        ceiling = self.ceiling_s
        self.failures += 1
        return self.rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.failures = 0
