"""Calibration from a reference recording (`--calibrate-from PATH`): rest and MVC per channel
from an MVC trial, or any recording of maximal efforts, made on this system or another.

The recording is read as the `replay:` device reads it (same formats and `channels=` mapping)
and goes through the same envelope chain as a session, without any calibration. Then, per
channel and over the whole recording (after the filters' settling time):
- MVC = the peak of the envelope's `mvc_window_ms` moving average (as the guided calibration);
- rest = mean and SD of the envelope over its quietest REST_WINDOW_S (the lowest moving
  average): a reference trial has no announced rest step, but it has pauses.
Each channel passes the guided calibration's quality check (feedback.calibration). A reference
recording often holds muscles that made no maximal effort (the hamstrings in a knee extension
trial): those channels are left out, with the reason, and the calibration is refused only when
the trained muscle (`[target] channel`) fails the check or is not in the recording. The result
is stored in the patient profile in the same form as a guided one, so a later session uses it
exactly as it would use a guided one.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from config.settings import CalibrationSettings, Settings
from devices.base import DeviceError
from devices.registry import open_device, split_spec
from feedback.calibration import SETTLE_S, CalibrationResult, quality_warnings
from feedback.processing.chain import EmgChain

REST_WINDOW_S = 1.0  # the shortest rest the guided calibration allows (calibration.rest_s)


def replay_spec(path_or_spec: str) -> str:
    """`FILE` or `replay:FILE?channels=...` → a replay spec read as fast as possible."""
    spec = path_or_spec if path_or_spec.startswith("replay:") else f"replay:{path_or_spec}"
    _, _, options = split_spec(spec)
    if "speed" not in options:
        spec += ("&" if "?" in spec else "?") + "speed=max"
    return spec


def moving_mean(x: np.ndarray, width: int) -> np.ndarray:
    """Mean of each run of `width` samples along the last axis ('valid' part only)."""
    c = np.cumsum(np.pad(x, ((0, 0), (1, 0))), axis=1)
    out: np.ndarray = (c[:, width:] - c[:, :-width]) / width
    return out


def from_envelope(
    envelope: np.ndarray,
    rate_hz: float,
    channels: tuple[str, ...],
    settings: Settings,
    *,
    group_delay_ms: float = 0.0,
    reference: str = "",
) -> CalibrationResult:
    """Rest and MVC per channel from a whole recording's envelope (n_channels, n), in mV."""
    c = settings.calibration
    env = envelope[:, round(SETTLE_S * rate_hz) :].astype(np.float64)
    mvc_w = max(1, round(c.mvc_window_ms / 1000.0 * rate_hz))
    rest_w = round(REST_WINDOW_S * rate_hz)
    if env.shape[1] < max(mvc_w, rest_w) * 2:
        raise ValueError(
            f"{reference or 'the recording'} is too short to calibrate from: it needs at least "
            f"{2 * max(mvc_w, rest_w) / rate_hz + SETTLE_S:.1f} s"
        )
    mvc = moving_mean(env, mvc_w).max(axis=1)
    quiet = moving_mean(env, rest_w).argmin(axis=1)
    rest = np.array([env[i, q : q + rest_w].mean() for i, q in enumerate(quiet)])
    sd = np.array([env[i, q : q + rest_w].std() for i, q in enumerate(quiet)])
    warnings = quality_warnings(channels, rest, sd, mvc)
    failed = {ch for ch in channels if any(w.startswith(f"{ch}: ") for w in warnings)}
    target = trained_channel(settings, channels)
    refused = [w for w in warnings if w.startswith(f"{target}: ")] if target else []
    if target is None:
        refused = [f"{settings.target.channel}: not in the recording ({', '.join(channels)})"]
    keep = [i for i, ch in enumerate(channels) if ch not in failed or ch == target]
    chans = [channels[i] for i in keep]
    rest, sd, mvc = rest[keep], sd[keep], mvc[keep]
    return CalibrationResult(
        patient=settings.session.patient,
        side=settings.session.side,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        rate_hz=rate_hz,
        channels=chans,
        rest_mean_mv={ch: float(rest[i]) for i, ch in enumerate(chans)},
        rest_sd_mv={ch: float(sd[i]) for i, ch in enumerate(chans)},
        mvc_mv={ch: float(mvc[i]) for i, ch in enumerate(chans)},
        trial_peaks_mv={ch: [float(mvc[i])] for i, ch in enumerate(chans)},
        processing=settings.processing.model_dump(mode="json"),
        group_delay_ms=group_delay_ms,
        warnings=refused,
        method="recording",
        reference=reference,
        left_out=[w for w in warnings if w not in refused],
    )


def trained_channel(settings: Settings, channels: tuple[str, ...]) -> str | None:
    """The recording's channel for the trained muscle (`VM`, or `VM_R` on a bilateral one)."""
    from feedback.pipeline import resolve_target

    try:
        return resolve_target(settings.target.channel, settings.session.side, channels)
    except ValueError:
        return None


async def calibrate_from(path_or_spec: str, settings: Settings) -> CalibrationResult:
    """Read the whole recording through the session's envelope chain and calibrate from it."""
    spec = replay_spec(path_or_spec)
    device = open_device(spec, settings)
    info = device.info
    chain = EmgChain(
        settings.processing, CalibrationSettings(mvc_mv={}), info.rate_hz, info.channels
    )
    parts = []
    async with device:
        async for block in device.blocks():
            parts.append(chain.process(block).envelope)
    if not parts:
        raise DeviceError(f"calibrate-from: {spec} holds no samples")
    _, target, _ = split_spec(spec)
    return from_envelope(
        np.concatenate(parts, axis=1),
        info.rate_hz,
        info.channels,
        settings,
        group_delay_ms=chain.group_delay_ms,
        reference=Path(target).name,
    )
