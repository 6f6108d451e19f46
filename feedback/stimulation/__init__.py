"""EMG-triggered stimulation: pure interlocks and controller, and the async driver that sends."""

from feedback.stimulation.controller import (
    Abort,
    BurstEnded,
    EStop,
    Fire,
    Rearm,
    Refused,
    StimAction,
    StimController,
    TickView,
)
from feedback.stimulation.interlock import LinkView, Refusal, StimInterlock, Verdict

__all__ = [
    "Abort",
    "BurstEnded",
    "EStop",
    "Fire",
    "LinkView",
    "Rearm",
    "Refusal",
    "Refused",
    "StimAction",
    "StimController",
    "StimInterlock",
    "TickView",
    "Verdict",
]
