"""Reconnect backoff with full jitter, the one implementation every reconnecting client uses."""

from __future__ import annotations

import random
import re
from pathlib import Path

from devices.backoff import Backoff

ROOT = Path(__file__).resolve().parents[2]


def test_delays_are_uniform_below_a_growing_capped_ceiling() -> None:
    b = Backoff(initial_s=0.2, max_s=5.0, rng=random.Random(1))
    ceilings, delays = [], []
    for _ in range(12):
        ceilings.append(b.ceiling_s)
        delays.append(b.next())
    assert ceilings[:6] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0] and set(ceilings[5:]) == {5.0}
    assert all(0.0 <= d < c for d, c in zip(delays, ceilings, strict=True))
    b.reset()
    assert b.ceiling_s == 0.2


def test_a_thousand_stations_do_not_retry_in_lock_step() -> None:
    """After a broker restart every station fails at once; with full jitter their retries
    spread over the whole window instead of arriving together."""
    firsts = [Backoff(initial_s=1.0, max_s=1.0, rng=random.Random(i)).next() for i in range(1000)]
    per_100ms = [sum(1 for f in firsts if k / 10 <= f < (k + 1) / 10) for k in range(10)]
    assert max(per_100ms) < 150  # about 100 in every tenth of the window
    fixed = {min(1.0, 0.2 * 2**4) for _ in range(1000)}  # the old schedule: one instant
    assert len(fixed) == 1


def test_every_reconnecting_client_uses_it() -> None:
    clients = ["devices/link.py", "feedback/outputs/mqtt_publisher.py",
               "feedback/clinic/redial.py", "feedback/dashboard/remote.py"]  # fmt: skip
    for path in clients:
        text = (ROOT / path).read_text()
        assert re.search(r"from devices.backoff import Backoff\b", text), path
        # the broker or device reconnect loop waits what Backoff says
        assert re.search(r"backoff\.next\(\)", text), path
    # the logger's two paho connections pace their reconnects through redial.py
    for path in ("feedback/clinic/intake.py", "feedback/clinic/receipt_link.py"):
        assert re.search(r"\bRedial\(", (ROOT / path).read_text()), path
