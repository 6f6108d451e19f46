"""Audio cue generation as pure functions, and the silent fallback without PortAudio."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pytest

from feedback.exercise import ExerciseState, Phase, RepCompleted
from feedback.outputs.audio import RATE_HZ, AudioCues, chime, pitch_hz, tone


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
