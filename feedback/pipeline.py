"""Wires the pure steps: SampleBlock → chain → quality, onsets, band → exercise → cues → `Tick`.

Synchronous and free of I/O: the session runner (feedback.session) owns the event loop and
fans each Tick out to the outputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from operator import attrgetter

import numpy as np

from config.protocols import prescribed_reps
from config.settings import ProtocolSettings, Settings
from devices.base import SampleBlock
from feedback.calibration import Calibration, CalibrationResult, CalibrationStatus
from feedback.cues import Cue, CueRules
from feedback.exercise import Exercise, ExerciseState, Phase, PhaseChanged
from feedback.processing import fused
from feedback.processing.activation import (
    ActivationBlock,
    ActivationDetector,
    BandDetector,
    Zone,
    any_true,
)
from feedback.processing.blanking import Blanker
from feedback.processing.block_step import BlockSteps
from feedback.processing.chain import EmgChain, ProcessedBlock
from feedback.processing.contraction_counter import ContractionCounter, CounterInput
from feedback.processing.metrics import Contraction, limb_symmetry_index
from feedback.processing.onset import OnsetBlock, OnsetDetector, Tkeo
from feedback.processing.quality import Flag, QualityBlock, SignalQuality, describe
from feedback.processing.records import record
from feedback.progression import BandRaised, Progression

# Enum members looked up once: an IntEnum/IntFlag attribute costs about a microsecond a time.
FLAT = int(Flag.FLAT)
BELOW = int(Zone.BELOW)
ZONES = tuple(Zone)
assert (int(Zone.BELOW), int(Zone.IN_BAND)) == (0, 1)  # the int8 zone from a bool row


@record
class Tick:
    processed: ProcessedBlock
    zone: np.ndarray  # per sample, target channel
    exercise: ExerciseState  # snapshot after this block
    cues: tuple[Cue, ...]
    pct_mvc: dict[str, float]  # per channel at the block's last sample
    vm_vl_ratio: float | None  # mean VM envelope / mean VL envelope over the block
    compute_s: float  # time spent in `Pipeline.process`
    quality: QualityBlock | None = None
    problems: dict[str, tuple[str, ...]] | None = None  # channel → reasons, at the block's end
    # The activation state (feedback.processing.activation.ActivationBlock, an OnsetBlock):
    # per channel active per sample, onset/offset events with the Hodges-Bui instant, rest,
    # reference and whether it is calibrated. `activation` is the same object, typed fully.
    onsets: OnsetBlock | None = None
    contractions: tuple[Contraction, ...] = ()  # counted (feedback.processing.contraction_counter)
    lsi: float | None = None  # limb symmetry index, bilateral mode only
    blanked: np.ndarray | None = None  # per sample: envelope held against stimulation artefact
    band: tuple[float, float] = (0.0, 0.0)  # target band (% MVC) in force at the block end
    band_raised: tuple[BandRaised, ...] = ()  # progression decisions made in this block
    protocol: str = ""  # the protocol in force at the block end
    reps_total: int = 0  # reps done before the protocol in force + its reps × sets
    sets: int = 1  # of the protocol in force
    switched_at: int | None = None  # sample index where a picked protocol took over, this block
    calibration: CalibrationStatus | None = None  # while calibrating mid-session
    calibrated: CalibrationResult | None = None  # a mid-session calibration finished here
    contracting: bool = False  # a contraction long enough to count is in progress
    contraction_count: int = 0  # contractions counted so far in the session
    activation: ActivationBlock | None = None


@record
class CueStep:
    """A block as far as its cues (`Pipeline.cue_step`): what the cues say, and what the rest of
    the block (`Pipeline.complete`) goes on from. The fields a cue's message shows beside it
    (exercise, band, reps_total) are the Tick's own values."""

    processed: ProcessedBlock
    zone: np.ndarray
    exercise: ExerciseState  # snapshot after this block
    cues: tuple[Cue, ...]
    band: tuple[float, float]
    reps_total: int
    quality: QualityBlock
    problems: dict[str, tuple[str, ...]]
    onsets: ActivationBlock
    blanked: np.ndarray
    band_raised: tuple[BandRaised, ...]
    switched_at: int | None
    calibration: CalibrationStatus | None
    calibrated: CalibrationResult | None
    compute_s: float  # so far
    # Each row's envelope sum (np.add.reduce) if the fused call made it: valid until the next
    # block (the fused call writes every block's into one array).
    env_sums: np.ndarray | None
    # False: no channel's activation is on anywhere in the block (the fused call knows);
    # None: not known, look.
    any_active: bool | None


# What dataclasses.replace(state, events=list(state.events)) does, without its per-call field
# inspection (a few microseconds a block): every field of ExerciseState is an init field, read
# in one C call.
_state_fields = attrgetter(*(f.name for f in fields(ExerciseState)))
assert all(f.init for f in fields(ExerciseState))


_warmed = False


def _warm_kernels(settings: Settings, rate_hz: float, channels: tuple[str, ...]) -> None:
    """Run a throwaway pipeline over a little noise, once per process, so that the compiled
    kernels are loaded from numba's cache, or compiled on a machine without one (see
    `compile_kernels` for how long), here rather than inside the first blocks of a session:
    20-sample float32 blocks through a baseline window and frames, then long float64 blocks that cut
    windows (the sliced layouts), then short float64 blocks (the fused block's other type).
    Once is enough: numba specialises a kernel by its arguments' types and layouts, not by
    the rate or the number of channels, so another
    device's pipeline (the station warms with the simulator's before the device opens) finds
    every kernel loaded."""
    global _warmed
    if _warmed:
        return
    _warmed = True
    pipe = Pipeline(settings, rate_hz, channels)
    n = round(rate_hz * (settings.onset.baseline_s + 0.2))
    noise = np.random.default_rng(0).standard_normal((len(channels), 2 * n + 200)) * 0.01
    single = noise.astype(np.float32)
    for i in range(0, n, 20):
        pipe.process(SampleBlock(i, 0.0, rate_hz, channels, single[:, i : i + 20]))
    for i in range(n, 2 * n, 333):
        pipe.process(SampleBlock(i, 0.0, rate_hz, channels, noise[:, i : min(i + 333, 2 * n)]))
    # Short float64 blocks too: the fused block (feedback.processing.block_step) is compiled
    # per sample type, and a device may deliver either.
    for i in range(2 * n, 2 * n + 200, 20):
        pipe.process(SampleBlock(i, 0.0, rate_hz, channels, noise[:, i : i + 20]))


def compile_kernels(settings: Settings | None = None) -> bool:
    """Fill numba's cache at install time (scripts/bootstrap.sh): the one compile of a fresh
    machine (15-20 s on the 2-core development machine) then happens there, not in a first
    session's or test's start; a station calls it before its device streams, so loading the
    kernels (1-3 s there since the fused block has two sample types) cannot overflow a device's
    buffer. False: no numba, the numpy path (nothing to compile)."""
    if settings is None:
        from config.loader import load_settings

        settings = load_settings(environ={})
    sim = settings.simulator
    if fused.kernels() is None:
        return False
    _warm_kernels(settings, sim.rate_hz, tuple(sim.channels))
    return True


@dataclass(frozen=True, slots=True)
class ProtocolSwitch:
    """A protocol picked mid-session, waiting for its safe boundary (`at`; None: next block)."""

    protocol: ProtocolSettings
    low_pct: float
    high_pct: float
    at: int | None


def resolve_target(channel: str, side: str, channels: tuple[str, ...]) -> str:
    """`VM` means `VM_R` on a bilateral device when the trained side is the right."""
    if channel in channels:
        return channel
    sided = f"{channel}_{side[0].upper()}"
    if sided in channels:
        return sided
    raise ValueError(f"target channel {channel!r} is not among the device's channels {channels}")


class Pipeline:
    def __init__(self, settings: Settings, rate_hz: float, channels: tuple[str, ...]) -> None:
        t = settings.target
        self.target = resolve_target(t.channel, settings.session.side, channels)
        self.channels = channels
        self.settings = settings
        self.chain = EmgChain(settings.processing, settings.calibration, rate_hz, channels)
        ms = rate_hz / 1000.0
        self.detector = BandDetector(
            t.low_pct,
            t.high_pct,
            t.hysteresis_pct,
            max(1, round(t.min_on_ms * ms)),
            max(1, round(t.min_off_ms * ms)),
        )
        self.quality = SignalQuality(settings.quality, rate_hz, len(channels))
        o = settings.onset
        self.tkeo = (
            Tkeo(len(channels), rate_hz, o.tkeo_lowpass_hz) if settings.processing.tkeo else None
        )
        self.onset = OnsetDetector(o, rate_hz, channels, self._rest_baseline(settings, channels))
        self.activation = ActivationDetector(
            settings.activation, rate_hz, channels, settings.calibration
        )
        c = settings.contractions
        self.counter = ContractionCounter(
            rate_hz,
            channels,
            self.target,
            min_on_s=c.min_on_s,
            merge_gap_s=c.merge_gap_s,
            pair_window_ms=o.pair_window_ms,
            calibrated=settings.calibration.calibrated,
            settle_level=self._settling_level,
        )
        self.exercise = Exercise(settings.protocol, rate_hz)
        # A % MVC band needs a measured MVC; the onset mode does not.
        self.cue_rules = CueRules(band=settings.calibration.calibrated or t.mode != "band")
        self._target = channels.index(self.target)
        vm, vl = self.target, self.target.replace("VM", "VL")
        self._vm = channels.index(vm) if vm.startswith("VM") else None
        self._vl = channels.index(vl) if vl in channels and vl != vm else None
        other = {"VM_L": "VM_R", "VM_R": "VM_L"}.get(self.target)
        self._other = channels.index(other) if other in channels else None
        # Hold the envelope for twice the chain's delay after a blank: it refills by then.
        tail = round(2 * self.chain.group_delay_ms * rate_hz / 1000)
        self.blanker = Blanker(len(channels), tail)
        self._settle = 2 * tail  # after a gap, onsets wait this long for the envelope to refill
        self.progression = Progression(settings.protocol.progression, t.low_pct, t.high_pct)
        self._band_changes: list[BandRaised] = []
        self._next_index: int | None = None  # where the next block should start
        self._protocol = settings.protocol
        self._reps_before = 0  # reps done under earlier protocols of this session
        self._reps_total = prescribed_reps(self._protocol)
        self._switch: ProtocolSwitch | None = None
        self._calibration: Calibration | None = None
        self._cal_end: int | None = None  # sample index where the running calibration ends
        kernels = fused.kernels()  # feedback.processing.fused
        self._compiled = kernels is not None
        # The usual block's numeric steps in one compiled call (not for the TKEO detector,
        # whose input is not the envelope).
        steps = (self.chain, self.quality, self.onset, self.activation, self.detector)
        self._steps = (
            BlockSteps(kernels, steps, self.blanker)
            if kernels is not None and self.tkeo is None and self.quality.fused_state() is not None
            else None
        )
        if self._compiled:
            _warm_kernels(settings, rate_hz, channels)

    @property
    def protocol(self) -> ProtocolSettings:
        """The protocol in force (`change_protocol` picks another)."""
        return self._protocol

    @property
    def reps_total(self) -> int:
        """Reps done before the protocol in force + its reps × sets (made when the protocol
        changes, not each block)."""
        return self._reps_total

    def finish(self) -> list[Contraction]:
        """The session ends: a contraction still in progress is counted (its end is the last
        active sample)."""
        return self.counter.finish()

    def change_protocol(self, protocol: ProtocolSettings, low_pct: float, high_pct: float) -> None:
        """A protocol picked mid-session (band already validated): it takes over at the end of
        the running work period, or with the next block when not in work, so a switch never
        cuts a work period (nor the stimulation that only fires in one)."""
        at = self.exercise.safe_switch_index()
        self._switch = ProtocolSwitch(protocol, low_pct, high_pct, at)

    @property
    def calibrating(self) -> bool:
        return self._calibration is not None

    def start_calibration(self) -> None:
        """Pause the exercise from the next block and calibrate (feedback.calibration) on it;
        the exercise resumes at the rest before its next work period. A calibration that
        passes its checks sets the chain's %MVC from the block after it ends."""
        if self._calibration is None:
            rate = self.exercise.rate_hz
            delay = self.chain.group_delay_ms
            self._calibration = Calibration(self.settings, rate, self.channels, delay)

    def _calibrate(
        self, first: int, processed: ProcessedBlock, zone: np.ndarray
    ) -> tuple[ExerciseState, CalibrationStatus, CalibrationResult | None]:
        """One block of the mid-session calibration: no effort counts while it runs."""
        cal = self._calibration
        assert cal is not None
        events: list[PhaseChanged] = []
        if self._cal_end is None:
            self._cal_end = first + sum(length for _, _, length in cal.plan)
            self.exercise.pause()
            events.append(PhaseChanged(Phase.CALIBRATING, self.exercise.state.period, first))
        status = cal.process(processed)
        cut = min(zone.shape[0], self._cal_end - first)
        zone[:cut] = Zone.BELOW
        if not cal.done:
            paused = replace(
                self.exercise.state, phase=Phase.CALIBRATING, holding=False, hold_progress=0.0
            )
            paused.phase_left_s, paused.events = status.step_left_s, list(events)
            return paused, status, None
        result, end = cal.result(), self._cal_end
        self._calibration, self._cal_end = None, None
        if not result.warnings:  # a failing calibration is neither stored nor used
            self.settings = result.apply(self.settings)
            self.chain.set_calibration(self.settings.calibration)
            rest = self._rest_baseline(self.settings, self.channels)
            if rest is not None:  # the onset rule's thresholds follow the new rest
                self.onset.use_baseline(*rest)
            self.activation.use_calibration(self.settings.calibration)
            self.counter.calibrated = self.cue_rules.band = True
        self.exercise.resume(end)
        state = self.exercise.process(end, zone[cut:])
        state.events = [*events, *state.events]
        return state, status, result

    def _switch_index(self, first: int, end: int) -> int | None:
        """Where in [first, end) the pending switch happens, if it does in this block."""
        sw = self._switch
        if sw is None or self._calibration is not None:  # a switch waits for the calibration
            return None
        at = first if sw.at is None else max(first, sw.at)
        return at if at < end else None

    def _exercise(self, first: int, zone: np.ndarray, at: int) -> ExerciseState:
        """The exercise over the block, handing over to the picked protocol at sample `at`."""
        sw, cut = self._switch, at - first
        assert sw is not None
        self._switch = None
        before = list(self.exercise.process(first, zone[:cut]).events) if cut else []
        old = self.exercise.state
        self._reps_before = old.reps_done
        self._protocol = sw.protocol
        self._reps_total = self._reps_before + prescribed_reps(sw.protocol)
        self.exercise = Exercise(sw.protocol, self.exercise.rate_hz, after=old)
        self.progression = Progression(sw.protocol.progression, sw.low_pct, sw.high_pct)
        state = self.exercise.process(at, zone[cut:])
        state.events = before + state.events
        return state

    def _rest_baseline(
        self, settings: Settings, channels: tuple[str, ...]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The calibration's rest statistics, when they cover every channel (and the detector
        reads the envelope, not the TKEO signal, whose scale is different)."""
        c = settings.calibration
        if settings.processing.tkeo or not all(ch in c.rest_sd_mv for ch in channels):
            return None
        mean = np.array([c.rest_mv.get(ch, 0.0) for ch in channels])
        return mean, np.array([c.rest_sd_mv[ch] for ch in channels])

    def process(self, block: SampleBlock) -> Tick:
        return self.complete(self.cue_step(block))

    def cue_step(self, block: SampleBlock) -> CueStep:
        """The block up to its cues: what a runner hands on first (a cue's latency is the
        product); `complete` must follow, before the next block, for the rest of the Tick."""
        t0 = time.perf_counter()
        # (block.end_index, without its two property calls)
        first = block.first_index
        end = first + block.data.shape[1]
        if self._next_index is not None and first != self._next_index:
            self.onset.gap(self._settle)  # a lost link: no onset or contraction spans the hole
            self.activation.gap(self._settle)
            self.counter.gap()
        self._next_index = end
        ti = self._target
        switch_at = None if self._switch is None else self._switch_index(first, end)
        if switch_at is not None:  # the new band from the switch sample; old raises are void
            sw = self._switch
            assert sw is not None
            self._band_changes = [BandRaised(sw.low_pct, sw.high_pct, switch_at, 0)]
        # Without a calibration a % MVC band would rest on a made-up MVC: a rep is then a
        # sustained activation (as in the onset mode), and no zone is cued (CueRules).
        banded = self.settings.target.mode == "band" and self.counter.calibrated
        zone = None
        if self._steps is None:
            fast = None
        else:  # (the zone in the same call, when the band holds for the whole block)
            changes = self._band_changes
            steady = banded and (not changes or changes[0].from_index >= end)
            fast = self._steps.run(block, ti if steady else None)
        if fast is not None:
            processed, held, quality, onsets, flagged, env_sums, zone, any_active = fast
        else:
            processed, held, quality, onsets, flagged = self._step_by_step(block)
            env_sums, any_active = None, None
        if zone is None and banded:
            zone = self._detect(processed.pct_mvc[ti], first)
        elif zone is None:
            # IN_BAND is 1 and BELOW 0: the bool row as int8 is that zone (np.where with enum
            # members costs ten times as much on a 20-sample block).
            zone = onsets.active[ti].astype(np.int8)
        if flagged:
            bad = quality.flags[ti] != 0
            zone[bad] = BELOW  # a bad signal never counts as effort
        cal_status, calibrated = None, None
        if self._calibration is not None:
            state, cal_status, calibrated = self._calibrate(first, processed, zone)
        elif switch_at is None:  # (the usual block: no wrapper call)
            state = self.exercise.process(first, zone)
        else:
            state = self._exercise(first, zone, switch_at)
        raised: list[BandRaised] = []
        if state.events:  # (the usual block has none: nothing to judge)
            # After a switch, the new protocol's progression judges only its own reps.
            mine = [e for e in state.events if switch_at is None or e.at_index >= switch_at]
            raised = self.progression.update(mine, self.exercise)
            self._band_changes.extend(raised)
        problems = (
            {c: describe(f) for c, f in zip(self.channels, quality.last.tolist(), strict=True) if f}
            if flagged
            else {}
        )
        withheld = None
        if self.target in problems:
            withheld = f"{self.target}: {', '.join(problems[self.target])}"
        last_zone = ZONES[int(zone[-1])] if zone.shape[0] else Zone.BELOW
        cues = self.cue_rules.update(state, last_zone, end - 1, block.t_arrival, withheld)
        # The state after this block, with its own events list (the live one is reused).
        snapshot = ExerciseState(*_state_fields(state))
        snapshot.events = list(state.events)
        return CueStep(
            processed,
            zone,
            snapshot,
            tuple(cues),
            (self.detector.low_pct, self.detector.high_pct),
            self._reps_total,
            quality,
            problems,
            onsets,
            held,
            tuple(raised),
            switch_at,
            cal_status,
            calibrated,
            time.perf_counter() - t0,
            env_sums,
            any_active,
        )

    def _step_by_step(
        self, block: SampleBlock
    ) -> tuple[ProcessedBlock, np.ndarray, QualityBlock, ActivationBlock, bool]:
        """The numeric steps one by one (the numpy path, or a block `BlockSteps` does not take):
        (processed, blanked, quality, activation, flagged)."""
        clean, held = self.blanker.zero(block)
        processed = self.blanker.hold(self.chain.process(clean), held)
        quality = self.quality.process(clean.data, processed.filtered)
        detect = processed.envelope if self.tkeo is None else self.tkeo.process(processed.filtered)
        flagged = any_true(quality.flags)  # usually not: then every sample is usable
        usable = (quality.flags & FLAT) == 0 if flagged else None
        env = processed.envelope
        # Both detectors test the envelope against their levels: its extremes found once.
        # (The ufunc reductions ndarray.min/max call, without their Python wrappers.)
        extremes = (
            (np.minimum.reduce(env, axis=1), np.maximum.reduce(env, axis=1))
            if env.shape[1] and not self._compiled  # (the compiled switch needs none)
            else None
        )
        hodges_bui = self.onset.process(
            block.first_index, detect, usable, extremes if self.tkeo is None else None
        )
        onsets = self.activation.process(block.first_index, env, hodges_bui, usable, extremes)
        return processed, held, quality, onsets, flagged

    def complete(self, step: CueStep) -> Tick:
        """The rest of the block after its cues (the contraction counter, the ratios): its
        Tick, the same as `process` gives."""
        t0 = time.perf_counter()
        processed, zone, onsets = step.processed, step.zone, step.onsets
        # `problems` names every channel with a flag up at the block's end: none named, none
        # up, and the ratios need not look at the flags.
        last = step.quality.last if step.problems else None
        first = processed.block.first_index
        contractions: list[Contraction] = []
        # The usual block at rest (no contraction open, no activation, no onset) changes
        # nothing in the counter: its input is not even made.
        counter = self.counter
        if (
            onsets.events
            or counter.open
            or (step.any_active is not False and any_true(onsets.active[self._target]))
        ):
            contractions = counter.process(self._counter_input(first, processed, zone, onsets))
            contracting = counter.contracting
        else:
            contracting = False  # (no contraction open: none long enough to count)
        n = processed.pct_mvc.shape[1]
        pct = dict(zip(self.channels, processed.pct_mvc[:, n - 1].tolist(), strict=True))
        protocol = self._protocol
        # Every field positional, in the order Tick declares them (keywords cost about a
        # microsecond a block; tests/feedback/test_pipeline_tick.py checks the order).
        return Tick(
            processed,
            zone,
            step.exercise,
            step.cues,
            pct,
            self._ratio(processed, last, step.env_sums),
            step.compute_s + time.perf_counter() - t0,
            step.quality,
            step.problems,
            onsets,
            tuple(contractions),
            None if self._other is None else self._lsi(processed, last),
            step.blanked,
            step.band,
            step.band_raised,
            protocol.name,
            step.reps_total,
            protocol.sets,
            step.switched_at,
            step.calibration,
            step.calibrated,
            contracting,
            counter.count,
            onsets,
        )

    def _counter_input(
        self, first: int, processed: ProcessedBlock, zone: np.ndarray, onsets: OnsetBlock
    ) -> CounterInput:
        """What the contraction counter reads: the target channel's activation state, and the
        zone only where a band exists (a % MVC band needs a calibration)."""
        band = self.settings.target.mode == "band" and self.counter.calibrated
        return CounterInput(
            first,
            onsets.active[self._target],
            processed.envelope,
            processed.pct_mvc,
            processed.filtered,
            zone if band else None,
            tuple((e.channel, e.at_index) for e in onsets.events if e.kind == "onset"),
        )

    def _settling_level(self, index: int) -> float | None:
        """The target's on level that judged sample `index`, when its reference is the running
        session one (the counter settles the first contraction against it), else None."""
        t = self._target
        levels = self.activation.on_level_at(index)
        if levels is None or bool(self.activation.calibrated[t]):
            return None
        return float(levels[t])

    def _ratio(
        self, processed: ProcessedBlock, flags: np.ndarray | None, sums: np.ndarray | None
    ) -> float | None:
        """`flags`: at the block's last sample, None when none is up; `sums`: each row's
        envelope sum (np.add.reduce), when known."""
        vm, vl = self._vm, self._vl
        if vm is None or vl is None or (flags is not None and (flags[vm] or flags[vl])):
            return None
        # Sums over the same count: the ratio of the means (np.mean is the sum / n, bit for bit).
        # (np.add.reduce: what ndarray.sum calls, without its Python wrapper.)
        env = processed.envelope
        n = env.shape[1]
        if not n:
            return None
        if sums is not None:
            num, den = float(sums[vm]), float(sums[vl]) / n
        else:
            num, den = float(np.add.reduce(env[vm])), float(np.add.reduce(env[vl])) / n
        return num / n / den if den > 0 else None

    def _lsi(self, processed: ProcessedBlock, flags: np.ndarray | None) -> float | None:
        me, other = self._target, self._other
        if other is None or (flags is not None and (flags[me] or flags[other])):
            return None
        return limb_symmetry_index(
            float(processed.pct_mvc[me].mean()), float(processed.pct_mvc[other].mean())
        )

    def set_band(self, low_pct: float, high_pct: float) -> None:
        """A therapist's adjustment: in force from the next block."""
        self.detector.set_band(low_pct, high_pct, self.detector.hysteresis_pct)

    def _detect(self, pct: np.ndarray, first: int) -> np.ndarray:
        """Band detection, switching band at the exact sample a progression step starts."""
        parts, pos, end = [], 0, first + pct.shape[0]
        while self._band_changes and self._band_changes[0].from_index < end:
            change = self._band_changes.pop(0)
            cut = max(pos, change.from_index - first)
            parts.append(self.detector.process(pct[pos:cut]))
            pos = cut
            self.set_band(change.low_pct, change.high_pct)
        parts.append(self.detector.process(pct[pos:]))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]
