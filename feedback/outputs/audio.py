"""Audio cues through sounddevice (PortAudio): a tone whose pitch follows activation, and a
chime on every completed rep.

The sound is made in PortAudio's callback thread from two values the processing loop sets
(latest wins: the pitch; a counter: chimes to play), so audio can never stall processing. With
no PortAudio library or no output device the session runs silent and says so once.

The signal generation is pure numpy (`pitch_hz`, `tone`, `chime`), tested without a device.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from feedback.exercise import Phase, RepCompleted
from feedback.outputs.base import BlockDone, Item, Policy, idle
from feedback.pipeline import Tick

log = logging.getLogger(__name__)

RATE_HZ = 44_100
LOW_HZ, HIGH_HZ = 220.0, 880.0  # two octaves over 0–100 % MVC
TONE_LEVEL = 0.15
CHIME_S = 0.45


def pitch_hz(pct: float, max_pct: float = 100.0) -> float:
    """Activation to pitch on a musical (logarithmic) scale: equal steps sound equal."""
    x = min(max(pct / max_pct, 0.0), 1.0)
    return float(LOW_HZ * (HIGH_HZ / LOW_HZ) ** x)


def tone(
    freq_hz: float, n: int, phase: float, rate_hz: float = RATE_HZ
) -> tuple[np.ndarray, float]:
    """n samples of a sine at `freq_hz` starting at `phase` (radians); returns the next phase, so
    consecutive buffers join without a click when the pitch changes."""
    step = 2 * np.pi * freq_hz / rate_hz
    phases = phase + step * np.arange(n)
    return (TONE_LEVEL * np.sin(phases)).astype(np.float32), float((phase + step * n) % (2 * np.pi))


def chime(rate_hz: float = RATE_HZ) -> np.ndarray:
    """A short bell: two partials (a fifth apart) with an exponential decay and a 5 ms attack."""
    t = np.arange(round(CHIME_S * rate_hz)) / rate_hz
    env = np.exp(-t / 0.12) * np.minimum(1.0, t / 0.005)
    wave = np.sin(2 * np.pi * 1046.5 * t) + 0.6 * np.sin(2 * np.pi * 1568.0 * t)
    return (0.3 * env * wave / 1.6).astype(np.float32)


class AudioCues:
    """An output (latest wins: only the newest level is heard). `start()` opens the device or,
    failing that, goes silent (said once)."""

    name = "audio"
    policy = Policy.LATEST_WINS
    restartable = True

    def __init__(self, target_channel: str, rate_hz: int = RATE_HZ) -> None:
        self.target = target_channel
        self.rate_hz = rate_hz
        self.silent_reason: str | None = None
        self.chimes = 0
        self._pitch: float | None = None  # None: no tone (not in a work period)
        self._phase = 0.0
        self._chime = chime(rate_hz)
        self._chime_pos: int | None = None
        self._pending_chimes = 0
        self._lock = threading.Lock()
        self._stream: Any = None

    def start(self) -> None:
        try:
            import sounddevice as sd

            self._stream = sd.OutputStream(
                samplerate=self.rate_hz, channels=1, dtype="float32", callback=self._callback
            )
            self._stream.start()
        except Exception as exc:  # no PortAudio, no device, device busy: all mean silence
            self.silent_reason = f"{type(exc).__name__}: {exc}"
            # Not a fault: most stations have no speaker set up. app.py tells the user once.
            log.info("no audio device: running silent (%s)", self.silent_reason)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None

    def offer(self, item: Item) -> None:
        if isinstance(item, BlockDone):
            self.on_tick(item.tick)

    async def run(self) -> None:
        await idle()  # PortAudio's own thread plays

    async def drained(self, timeout_s: float) -> bool:
        return True

    def on_tick(self, tick: Tick) -> None:
        ex = tick.exercise
        working = ex.phase is Phase.WORK
        self._pitch = pitch_hz(tick.pct_mvc.get(self.target, 0.0)) if working else None
        reps = sum(isinstance(e, RepCompleted) for e in ex.events)
        if reps:
            with self._lock:
                self._pending_chimes += reps
            self.chimes += reps

    def render(self, n: int) -> np.ndarray:
        """The next n output samples (what the PortAudio callback plays)."""
        pitch = self._pitch
        if pitch is None:
            out = np.zeros(n, dtype=np.float32)
        else:
            out, self._phase = tone(pitch, n, self._phase, self.rate_hz)
        with self._lock:
            if self._chime_pos is None and self._pending_chimes:
                self._pending_chimes -= 1
                self._chime_pos = 0
        if self._chime_pos is not None:
            part = self._chime[self._chime_pos : self._chime_pos + n]
            out[: part.shape[0]] += part
            self._chime_pos += n
            if self._chime_pos >= self._chime.shape[0]:
                self._chime_pos = None
        return out

    def _callback(self, outdata: np.ndarray, frames: int, _time: object, _status: object) -> None:
        outdata[:, 0] = self.render(frames)
