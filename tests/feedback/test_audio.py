"""Audio cue generation as pure functions, the silent fallback without a device, and the real
PortAudio stream on ALSA's null device."""

from __future__ import annotations

import ctypes.util
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from feedback.exercise import ExerciseState, Phase, RepCompleted
from feedback.outputs.audio import RATE_HZ, AudioCues, chime, pitch_hz, tone
from tests.conftest import missing_service

ROOT = Path(__file__).resolve().parents[2]


def test_pitch_follows_activation_on_a_log_scale() -> None:
    assert pitch_hz(0) == 220.0 and pitch_hz(100) == 880.0
    assert pitch_hz(50) == pytest.approx(440.0)  # half way = one octave up
    assert pitch_hz(-5) == 220.0 and pitch_hz(250) == 880.0
    assert pitch_hz(30) < pitch_hz(31)


def test_tone_has_its_frequency_and_joins_without_a_click() -> None:
    a, phase = tone(440.0, 1000, 0.0)
    b, _ = tone(440.0, 1000, phase)
    whole, _ = tone(440.0, 2000, 0.0)
    np.testing.assert_allclose(np.r_[a, b], whole, atol=1e-5)
    spectrum = np.abs(np.fft.rfft(tone(440.0, RATE_HZ, 0.0)[0]))
    assert int(np.argmax(spectrum)) == 440  # 1 Hz bins over one second


def test_chime_decays_and_never_clips() -> None:
    c = chime()
    assert np.abs(c).max() <= 0.3
    assert np.abs(c[:2000]).max() > 10 * np.abs(c[-2000:]).max()


@dataclass
class FakeTick:
    exercise: ExerciseState
    pct_mvc: dict[str, float] = field(default_factory=dict)


def test_cues_render_tone_in_work_silence_at_rest_and_a_chime_per_rep() -> None:
    cues = AudioCues("VM")
    cues.on_tick(FakeTick(ExerciseState(phase=Phase.REST), {"VM": 40.0}))  # type: ignore[arg-type]
    assert not cues.render(512).any()
    work = ExerciseState(phase=Phase.WORK, events=[RepCompleted(1, 100, 0.5)])
    cues.on_tick(FakeTick(work, {"VM": 50.0}))  # type: ignore[arg-type]
    out = np.concatenate([cues.render(512) for _ in range(60)])
    assert cues.chimes == 1
    assert np.abs(out[:5000]).max() > 0.2  # tone plus chime
    tone_only, _ = tone(440.0, out.shape[0], 0.0)
    assert np.abs(out[-5000:] - tone_only[-5000:]).max() < 0.01  # chime over, tone goes on


def test_no_audio_device_runs_silent_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    try:
        import sounddevice as sd

        sd.query_devices(kind="output")
        pytest.skip("this machine has an audio output device")
    except Exception:
        pass
    cues = AudioCues("VM")
    with caplog.at_level(logging.INFO):
        cues.start()
        cues.on_tick(FakeTick(ExerciseState(phase=Phase.WORK), {"VM": 40.0}))  # type: ignore[arg-type]
        cues.on_tick(FakeTick(ExerciseState(phase=Phase.WORK), {"VM": 41.0}))  # type: ignore[arg-type]
    assert cues.silent_reason is not None
    assert (
        sum("running silent" in r.message and r.levelno == logging.INFO for r in caplog.records)
        == 1
    )
    cues.close()


NULL_ALSA = "pcm.!default { type null }\nctl.!default { type hw card 0 }\n"
PLAY = """
import json, sys, time
import numpy as np
from feedback.exercise import ExerciseState, Phase, RepCompleted
from feedback.outputs.audio import AudioCues

class Tick:
    def __init__(self, exercise, pct):
        self.exercise, self.pct_mvc = exercise, pct

class Counted(AudioCues):
    played = 0
    loudest = 0.0
    def _callback(self, outdata, frames, time_info, status):
        super()._callback(outdata, frames, time_info, status)
        self.played += frames
        self.loudest = max(self.loudest, float(np.abs(outdata).max()))

cues = Counted("VM")
cues.start()
cues.on_tick(Tick(ExerciseState(phase=Phase.WORK, events=[RepCompleted(1, 0, 0.5)]), {"VM": 50.0}))
time.sleep(0.5)
cues.close()
print(json.dumps({"silent": cues.silent_reason, "played": cues.played,
                  "loudest": cues.loudest, "chimes": cues.chimes}))
"""


def test_tone_and_chime_play_through_a_real_portaudio_stream(tmp_path: Path) -> None:
    """The real path: sounddevice → PortAudio → ALSA, on ALSA's null PCM (a sound card that
    plays nothing), in a child process because PortAudio reads the ALSA configuration once.
    Needs PortAudio (`apt-get install libportaudio2`; `.ci/run` installs it)."""
    if ctypes.util.find_library("portaudio") is None:
        missing_service("PortAudio not installed (apt-get install libportaudio2)")
    alsa = Path("/usr/share/alsa/alsa.conf")
    if not alsa.exists():
        missing_service("no ALSA configuration (/usr/share/alsa/alsa.conf; libasound2)")
    conf = tmp_path / "asound.conf"
    conf.write_text(NULL_ALSA)
    env = {**os.environ, "ALSA_CONFIG_PATH": f"{alsa}:{conf}", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PLAY], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["silent"] is None  # the stream opened: not the silent fallback
    assert result["played"] >= 2048  # PortAudio pulled buffers from the callback
    assert 0.2 < result["loudest"] <= 1.0 and result["chimes"] == 1  # tone + chime, no clip
