"""The compact live stream for remote viewers: binary packets on `vmf/v1/<clinic>/<station>/stream`.

About 10 times a second the station packs what it has processed since the last packet: per
channel the envelope (bin mean) and the band-passed EMG (the largest excursion of each bin, so
spikes stay visible) at the display rate (200 Hz), as float16, behind a fixed 64-byte header with
the state a therapist's view needs. Every packet is self-describing (session id, channel roles,
MVC), so a dashboard that attaches in the middle of a session draws from its first packet on.
The byte layout is documented, with a decoded hex example, in docs/mqtt.md.

Latest wins (QoS 0): a packet the connection has not sent yet is replaced by the next one; the
viewer sees the hole in `first_index` (and in `counter`). Nothing here blocks: `add` decimates a
block into a small pending buffer (a few µs), `packet` packs it (tens of µs).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"VMFS"
VERSION = 1
DISPLAY_HZ = 200.0
MAX_SAMPLES = 2000  # per channel in one packet: 10 s at the display rate (catch-up after a stall)
PHASES = ("ready", "work", "rest", "done", "calibrating")
STIM_STATES = ("off", "armed", "stimulating", "estop")
FLAG_HOLDING, FLAG_LINK_UP = 0x01, 0x02

# magic, version, channels, target channel, flags, counter, first index, rate, decimation, n,
# t_sample
HEAD = struct.Struct("<4sBBBBIQfHHd")
# band low/high, phase, stim state, hold progress (0–200 = 0–100 %), set, sets, (pad),
# reps done, reps total, phase left (0.1 s), gaps, protocol errors, stim bursts, VM:VL (NaN: none)
STATE = struct.Struct("<ffBBBBBxHHHHHHe")
FIXED = HEAD.size + STATE.size  # 64


class StreamError(ValueError):
    """A packet that is not a v1 stream packet (wrong magic, version, length or contents)."""


@dataclass(frozen=True, slots=True)
class StreamPacket:
    counter: int  # 1, 2, 3, ... per session; a hole is a packet dropped (latest wins)
    first_index: int  # device sample index of the first raw sample of the first bin
    rate_hz: float  # device rate
    decimation: int  # device samples per display sample
    t_sample: float  # host time (Unix s) the newest sample's bytes arrived
    session: str
    channels: tuple[str, ...]
    target: int  # index into channels
    protocol: str
    patient: str  # pseudonymous id
    band: tuple[float, float]  # % MVC
    phase: str
    holding: bool
    link_up: bool
    hold_progress: float  # 0..1
    set_no: int
    sets: int
    reps_done: int
    reps_total: int
    phase_left_s: float
    gaps: int
    protocol_errors: int
    stim_state: str
    stim_bursts: int
    vm_vl_ratio: float | None
    pct_mvc: tuple[float, ...]  # per channel, at the newest sample
    mvc_mv: tuple[float, ...]  # per channel (0: unknown)
    envelope: np.ndarray  # (channels, n) float16, mV
    raw: np.ndarray  # (channels, n) float16, mV
    blanked: np.ndarray  # (n,) bool: envelope held against stimulation artefact

    @property
    def display_hz(self) -> float:
        return self.rate_hz / self.decimation

    @property
    def n(self) -> int:
        return int(self.envelope.shape[1])


def _u16(v: float) -> int:
    return max(0, min(0xFFFF, round(v)))


def _u8(v: float) -> int:
    return max(0, min(0xFF, round(v)))


def encode(p: StreamPacket) -> bytes:
    c, n = len(p.channels), p.n
    text = "|".join((p.session, ",".join(p.channels), p.protocol, p.patient)).encode("ascii")
    if len(text) > 255 or c > 255:
        raise StreamError("session/channel/protocol/patient text longer than 255 bytes")
    flags = (FLAG_HOLDING if p.holding else 0) | (FLAG_LINK_UP if p.link_up else 0)
    head = HEAD.pack(
        MAGIC, VERSION, c, p.target, flags, p.counter & 0xFFFFFFFF, p.first_index,
        p.rate_hz, p.decimation, n, p.t_sample,
    )  # fmt: skip
    state = STATE.pack(
        p.band[0], p.band[1], PHASES.index(p.phase), STIM_STATES.index(p.stim_state),
        _u8(p.hold_progress * 200), _u8(p.set_no), _u8(p.sets), _u16(p.reps_done),
        _u16(p.reps_total), _u16(p.phase_left_s * 10), _u16(p.gaps), _u16(p.protocol_errors),
        _u16(p.stim_bursts), math.nan if p.vm_vl_ratio is None else p.vm_vl_ratio,
    )  # fmt: skip
    per_channel = np.asarray([p.pct_mvc, p.mvc_mv], dtype="<f2")
    bits = np.packbits(p.blanked.astype(bool), bitorder="little")
    return b"".join(
        (
            head,
            state,
            bytes((len(text),)),
            text,
            per_channel.tobytes(),
            np.ascontiguousarray(p.envelope, dtype="<f2").tobytes(),
            np.ascontiguousarray(p.raw, dtype="<f2").tobytes(),
            bits.tobytes(),
        )
    )


def decode(data: bytes) -> StreamPacket:
    """The packet in `data`, or StreamError: bytes from the network never raise anything else."""
    try:
        return _decode(bytes(data))
    except StreamError:
        raise
    except Exception as exc:  # struct, unicode, numpy: whatever the bytes provoke
        raise StreamError(f"undecodable packet: {type(exc).__name__}: {exc}"[:300]) from None


def _decode(data: bytes) -> StreamPacket:
    if len(data) < FIXED + 1:
        raise StreamError(f"{len(data)} bytes is shorter than the {FIXED + 1}-byte header")
    magic, version, c, target, flags, counter, first, rate, dec, n, t_sample = HEAD.unpack_from(
        data
    )
    if magic != MAGIC or version != VERSION:
        raise StreamError(f"not a v{VERSION} stream packet (magic {magic!r}, version {version})")
    low, high, phase, stim, hold, set_no, sets, reps, total, left, gaps, perr, bursts, ratio = (
        STATE.unpack_from(data, HEAD.size)
    )
    at = FIXED + 1
    end_text = at + data[FIXED]
    want = end_text + 2 * c * 2 + 2 * c * n * 2 + (n + 7) // 8
    if len(data) != want or phase >= len(PHASES) or stim >= len(STIM_STATES) or target >= c:
        raise StreamError(f"{len(data)} bytes where the header implies {want}, or a bad code")
    fields = data[at:end_text].decode("ascii").split("|")
    if len(fields) != 4:
        raise StreamError(f"text has {len(fields)} fields, not session|channels|protocol|patient")
    session, roles, protocol, patient = fields
    channels = tuple(roles.split(",")) if roles else ()
    if len(channels) != c or not (math.isfinite(rate) and rate > 0) or dec < 1:
        raise StreamError(f"{len(channels)} channel names for {c} channels, or a bad rate")
    per_channel = np.frombuffer(data, "<f2", 2 * c, end_text).reshape(2, c)
    at = end_text + 4 * c
    env = np.frombuffer(data, "<f2", c * n, at).reshape(c, n)
    raw = np.frombuffer(data, "<f2", c * n, at + 2 * c * n).reshape(c, n)
    bits = np.frombuffer(data, np.uint8, (n + 7) // 8, at + 4 * c * n)
    blanked = np.unpackbits(bits, count=n, bitorder="little").astype(bool)
    return StreamPacket(
        counter=counter, first_index=first, rate_hz=rate, decimation=dec, t_sample=t_sample,
        session=session, channels=channels, target=target,
        protocol=protocol, patient=patient, band=(low, high), phase=PHASES[phase],
        holding=bool(flags & FLAG_HOLDING), link_up=bool(flags & FLAG_LINK_UP),
        hold_progress=hold / 200, set_no=set_no, sets=sets, reps_done=reps, reps_total=total,
        phase_left_s=left / 10, gaps=gaps, protocol_errors=perr, stim_state=STIM_STATES[stim],
        stim_bursts=bursts, vm_vl_ratio=None if math.isnan(ratio) else float(ratio),
        pct_mvc=tuple(float(v) for v in per_channel[0]),
        mvc_mv=tuple(float(v) for v in per_channel[1]),
        envelope=env, raw=raw, blanked=blanked,
    )  # fmt: skip
