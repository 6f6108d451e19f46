"""The settings tree. Every bound here is a clinical or hardware limit, not a guess at taste.

Ranges are written as pydantic constraints so that a bad value is rejected with the field name,
the value and the allowed range before anything starts (see `config.loader`).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from config.names import PATIENT_ID, PSEUDONYM, check_patient_id

__all__ = ["PATIENT_ID", "PSEUDONYM", "check_patient_id"]  # re-exported for the settings' users
CHANNEL_ROLE = r"^[A-Z]{2,4}(_[LR])?$"
Pseudonym = Annotated[str, StringConstraints(pattern=PSEUDONYM)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SessionSettings(_Section):
    clinic: str = Field("clinic-demo", pattern=PSEUDONYM)
    station: str = Field("station-1", pattern=PSEUDONYM)
    patient: str = "P-0001"
    side: Literal["left", "right"] = "right"
    # Pain (0–10 numeric rating scale) the patient reports before the session; the score after it
    # comes from a therapist command (`stop` with pain_after, or `pain`). None: not asked.
    pain_before: int | None = Field(None, ge=0, le=10)

    @field_validator("patient", mode="before")
    @classmethod
    def _pseudonymous_patient(cls, v: object) -> object:
        # VMF_SESSION__PATIENT=1234 is parsed as a TOML number; a plain integer reads back the
        # same as text (TOML refuses leading zeros, so "0042" stays text).
        return (
            check_patient_id(str(v) if isinstance(v, int) else v) if isinstance(v, int | str) else v
        )


class DeviceSettings(_Section):
    spec: str = "sim"
    block_ms: float = Field(10.0, ge=1.0, le=100.0)


class SimulatorSettings(_Section):
    rate_hz: float = Field(2000.0, ge=500.0, le=10_000.0)
    channels: tuple[str, ...] = Field(("VM", "VL"), min_length=1, max_length=8)
    mvc_rms_mv: float = Field(0.5, gt=0.0, le=5.0)
    contraction_pct: float = Field(45.0, ge=0.0, le=100.0)
    vm_vl_onset_delay_ms: float = Field(30.0, ge=-200.0, le=200.0)
    vl_to_vm_ratio: float = Field(1.0, gt=0.0, le=5.0)
    baseline_noise_uv: float = Field(5.0, ge=0.0, le=200.0)
    mains_hz: Literal[0, 50, 60] = 0
    mains_mv: float = Field(0.02, ge=0.0, le=1.0)
    # The contraction script. Unless set here (config file, VMF_SIMULATOR__*), the timing and
    # the level follow the exercise protocol and target band (config.protocols.simulator_script).
    first_rest_s: float = Field(1.3, ge=0.0, le=61.0)
    contract_s: float = Field(4.0, gt=0.0, le=120.0)
    relax_s: float = Field(6.0, gt=0.0, le=301.0)
    reps_per_set: int = Field(0, ge=0, le=200)  # 0: contractions never pause for a set rest
    set_rest_s: float = Field(0.0, ge=0.0, le=601.0)  # relaxation after each set's last one
    ramp_s: float = Field(0.3, ge=0.0, le=5.0)
    seed: int = 1

    @model_validator(mode="after")
    def _roles_are_known(self) -> SimulatorSettings:
        bad = [c for c in self.channels if not re.fullmatch(CHANNEL_ROLE, c)]
        if bad:
            raise ValueError(f"channel roles must look like VM, VL or VM_L; got {bad}")
        return self


class ProcessingSettings(_Section):
    highpass_hz: float = Field(20.0, ge=5.0, le=50.0)
    lowpass_hz: float = Field(450.0, ge=100.0, le=1000.0)
    bandpass_order: int = Field(4, ge=2, le=8)
    notch_hz: Literal[0, 50, 60] = 0
    envelope: Literal["rms", "lowpass"] = "rms"
    rms_window_ms: float = Field(100.0, ge=10.0, le=500.0)
    envelope_lowpass_hz: float = Field(6.0, ge=1.0, le=50.0)
    envelope_lowpass_order: int = Field(2, ge=1, le=6)
    tkeo: bool = False  # Teager-Kaiser conditioning of the onset detector's input


class OnsetSettings(_Section):
    """Hodges-Bui onset: envelope above rest mean + k·SD for hold_ms; off below mean + off_k·SD
    for min_off_ms. The rest statistics come from the calibration, else from the first
    baseline_s of the session (which must then start at rest, as the protocol's ready time does)."""

    k_sd: float = Field(3.0, ge=1.0, le=30.0)
    off_k_sd: float = Field(2.0, ge=0.5, le=30.0)
    hold_ms: float = Field(25.0, ge=1.0, le=1000.0)
    min_off_ms: float = Field(100.0, ge=1.0, le=5000.0)
    baseline_s: float = Field(1.0, ge=0.2, le=60.0)
    pair_window_ms: float = Field(300.0, ge=10.0, le=2000.0)
    tkeo_lowpass_hz: float = Field(50.0, ge=5.0, le=200.0)

    @model_validator(mode="after")
    def _off_below_on(self) -> OnsetSettings:
        if self.off_k_sd > self.k_sd:
            raise ValueError(f"off_k_sd ({self.off_k_sd}) must not exceed k_sd ({self.k_sd})")
        return self


class ActivationSettings(_Section):
    """Whether a muscle is active, referenced to amplitude (feedback.processing.activation).

    Active from the moment the envelope has stayed for min_on_ms above BOTH on_rest_ratio × rest
    AND rest + on_fraction × (reference − rest); inactive once it has stayed for min_off_ms
    below the lower pair (off_*). Rest is a running low percentile of the envelope; the
    reference is the calibrated MVC, or without a calibration a running session peak."""

    # "auto": the calibrated MVC where the calibration measured the channel's rest (every
    # calibration does; the configured default mvc_mv alone is no calibration), else the
    # session reference. "mvc": trust calibration.mvc_mv as configured. "session": always
    # the running session reference.
    reference: Literal["auto", "mvc", "session"] = "auto"
    on_rest_ratio: float = Field(4.0, ge=1.2, le=50.0)
    on_fraction: float = Field(0.2, ge=0.0, le=0.9)
    off_rest_ratio: float = Field(3.0, ge=1.0, le=50.0)
    off_fraction: float = Field(0.15, ge=0.0, le=0.9)
    min_on_ms: float = Field(25.0, ge=0.0, le=2000.0)
    min_off_ms: float = Field(200.0, ge=0.0, le=5000.0)
    rest_window_s: float = Field(20.0, ge=2.0, le=600.0)
    rest_percentile: float = Field(10.0, ge=1.0, le=50.0)
    rest_floor_uv: float = Field(1.0, ge=0.0, le=1000.0)
    frame_ms: float = Field(50.0, ge=5.0, le=1000.0)
    reference_window_ms: float = Field(500.0, ge=50.0, le=5000.0)
    reference_half_life_s: float = Field(60.0, ge=1.0, le=3600.0)
    onset_lookback_ms: float = Field(500.0, ge=0.0, le=5000.0)

    @model_validator(mode="after")
    def _off_below_on(self) -> ActivationSettings:
        if self.off_rest_ratio > self.on_rest_ratio or self.off_fraction > self.on_fraction:
            raise ValueError(
                f"off_rest_ratio ({self.off_rest_ratio}) and off_fraction ({self.off_fraction}) "
                f"must not exceed on_rest_ratio ({self.on_rest_ratio}) and on_fraction "
                f"({self.on_fraction}): the switch needs hysteresis"
            )
        if self.reference_window_ms < self.frame_ms:
            raise ValueError(
                f"reference_window_ms ({self.reference_window_ms}) must be at least frame_ms "
                f"({self.frame_ms})"
            )
        return self


class QualitySettings(_Section):
    flat_uv: float = Field(0.5, ge=0.0, le=50.0)
    flat_ms: float = Field(50.0, ge=2.0, le=5000.0)
    clip_mv: float = Field(15.0, gt=0.0, le=1000.0)
    mains_hz: Literal[50, 60] = 50
    mains_ratio: float = Field(0.8, gt=0.0, le=1.0)
    mains_min_uv: float = Field(10.0, ge=0.0, le=1000.0)
    motion_ratio: float = Field(3.0, gt=0.0, le=100.0)
    motion_min_mv: float = Field(0.2, ge=0.0, le=100.0)
    smooth_ms: float = Field(100.0, ge=5.0, le=2000.0)
    hold_ms: float = Field(500.0, ge=0.0, le=10_000.0)


CalibrationSource = Literal[
    "placeholder", "configured", "simulator", "profile", "guided", "recording"
]


class CalibrationSettings(_Section):
    # Envelope value (mV) at 100 % MVC per channel role. Replaced by a real calibration; the
    # defaults match the simulator so that the demo is meaningful before anyone calibrates.
    mvc_mv: dict[str, float] = Field(default_factory=lambda: {"VM": 0.5, "VL": 0.5})
    rest_mv: dict[str, float] = Field(default_factory=dict)
    rest_sd_mv: dict[str, float] = Field(default_factory=dict)
    # Guided calibration (--calibrate) and the patient profile that stores its result.
    profile_dir: str = ""  # "" = profiles/ in the user data directory
    rest_s: float = Field(5.0, ge=1.0, le=60.0)
    mvc_trials: int = Field(3, ge=1, le=10)
    mvc_s: float = Field(5.0, ge=1.0, le=30.0)
    mvc_rest_s: float = Field(30.0, ge=0.0, le=300.0)
    mvc_window_ms: float = Field(500.0, ge=50.0, le=2000.0)
    # Where mvc_mv comes from. "placeholder": nobody measured it (the shipped defaults on a real
    # or replayed device): % MVC is then not shown as such and the band cue waits for a
    # calibration. Set by the program (feedback.calibration_flow), not usually by hand.
    source: CalibrationSource = "configured"

    @property
    def calibrated(self) -> bool:
        return self.source != "placeholder"

    @model_validator(mode="after")
    def _positive(self) -> CalibrationSettings:
        for role, v in self.mvc_mv.items():
            if not 0.0 < v <= 10.0:
                raise ValueError(f"mvc_mv[{role}] = {v} must be > 0 and ≤ 10 mV")
        return self


class TargetSettings(_Section):
    channel: str = Field("VM", pattern=CHANNEL_ROLE)
    low_pct: float = Field(30.0, ge=1.0, le=100.0)
    high_pct: float = Field(60.0, ge=2.0, le=150.0)
    hysteresis_pct: float = Field(3.0, ge=0.0, le=20.0)
    mode: Literal["band", "onset"] = "band"  # onset: active by the [activation] rule
    min_on_ms: float = Field(20.0, ge=0.0, le=2000.0)
    min_off_ms: float = Field(20.0, ge=0.0, le=2000.0)

    def with_band(self, low_pct: float, high_pct: float) -> TargetSettings:
        """This target with another band, through the same constraints as the config file: the
        one check for a band change from any source (dashboard, MQTT command). Raises pydantic's
        ValidationError, which names the field and the allowed range."""
        return TargetSettings.model_validate(
            {**self.model_dump(), "low_pct": low_pct, "high_pct": high_pct}
        )

    @model_validator(mode="after")
    def _band_is_ordered(self) -> TargetSettings:
        if self.high_pct <= self.low_pct + self.hysteresis_pct:
            raise ValueError(
                f"target band high_pct ({self.high_pct}) must exceed low_pct + hysteresis_pct "
                f"({self.low_pct + self.hysteresis_pct})"
            )
        return self


class ProgressionSettings(_Section):
    """Raise the band when the patient holds it for `after_reps` reps in a row (0: never)."""

    after_reps: int = Field(0, ge=0, le=50)
    step_pct: float = Field(5.0, gt=0.0, le=20.0)  # both edges move up by this
    max_high_pct: float = Field(100.0, ge=2.0, le=150.0)  # the upper edge never passes this


class ProtocolSettings(_Section):
    name: str = "demo"
    # "timed": work/rest periods and reps; "free": no timeline and no reps (free practice, a
    # replay): the session counts contractions instead (see [contractions]).
    kind: Literal["timed", "free"] = "timed"
    title: str = ""  # shown to the therapist; the name is what the session records
    ready_s: float = Field(1.0, ge=0.0, le=60.0)
    work_s: float = Field(5.0, gt=0.5, le=120.0)
    rest_s: float = Field(5.0, ge=0.0, le=300.0)
    hold_s: float = Field(2.0, gt=0.0, le=60.0)
    reps: int = Field(10, ge=1, le=200)  # per set
    sets: int = Field(1, ge=1, le=10)
    set_rest_s: float = Field(60.0, ge=0.0, le=600.0)  # replaces rest_s after a set's last rep
    progression: ProgressionSettings = ProgressionSettings()

    @model_validator(mode="after")
    def _hold_fits(self) -> ProtocolSettings:
        if self.hold_s > self.work_s:
            raise ValueError(f"hold_s ({self.hold_s}) cannot exceed work_s ({self.work_s})")
        return self


class ContractionSettings(_Section):
    """What counts as one contraction (feedback.processing.contraction_counter): activation
    sustained for at least min_on_s, dips shorter than merge_gap_s merged into it."""

    min_on_s: float = Field(0.5, ge=0.05, le=30.0)
    merge_gap_s: float = Field(0.3, ge=0.0, le=5.0)


class MqttSettings(_Section):
    broker: str = "embedded"
    live_hz: float = Field(10.0, gt=0.0, le=100.0)
    stream_hz: float = Field(10.0, ge=0.0, le=50.0)  # binary stream for remote dashboards; 0: off
    therapist_id: str = Field("", pattern=r"^([A-Za-z0-9_-]{1,32})?$")  # remote dashboard issuer
    keepalive_s: int = Field(10, ge=2, le=600)
    outbox: str = ""  # SQLite store-and-forward file; "" = outbox.sqlite3 in the user data dir
    # Credentials and TLS: from the config file or VMF_MQTT__* variables, never from argv.
    username: str = ""
    password: SecretStr = SecretStr("")
    tls_ca: str = ""  # CA file that signed the broker's certificate (turns TLS on)
    tls_cert: str = ""  # client certificate, if the broker asks for one
    tls_key: str = ""
    # Therapist ids whose commands this station obeys (after the broker's ACL has let them in).
    therapists: tuple[Pseudonym, ...] = ()
    command_max_age_s: float = Field(30.0, gt=0.0, le=3600.0)
    # Keep a session message in the outbox while the broker reports that nobody subscribes to
    # it (MQTT 5), e.g. until the clinic logger is back after a broker restart.
    hold_without_subscriber: bool = True
    # Keep each session message until the clinic logger's receipt says it is stored (external
    # broker; docs/mqtt.md). Off: deleted on the broker's PUBACK, which a broker crash can lose.
    receipts: bool = True
    receipt_timeout_s: float = Field(5.0, gt=0.0, le=600.0)  # then probe with the oldest again

    @field_validator("username", "password", mode="before")
    @classmethod
    def _text(cls, v: object) -> object:
        # VMF_MQTT__PASSWORD=1234 is parsed as a TOML number; a password is always text.
        return str(v) if isinstance(v, int | float) else v


class LslSettings(_Section):
    publish: bool = False  # envelope, activation and event markers as LSL streams (LabRecorder)
    prefix: str = Field("vmf", pattern=PSEUDONYM)  # <prefix>-envelope, -activation, -events


class StorageSettings(_Section):
    db: str = ""  # empty: sessions.sqlite3 in the user's data directory


def _a_number(value: object) -> object:
    """Before the range checks: NaN passes no comparison, so "should be ≤ 60" would be the
    message; say what is wrong instead."""
    number = value
    if isinstance(value, str):  # "nan" from an environment variable or a quoted TOML value
        try:
            number = float(value)
        except ValueError:
            return value  # not numeric text: the field's own type check names it
    if isinstance(number, float) and math.isnan(number):
        raise ValueError("is not a number (NaN); a stimulation setting must be a real value")
    if isinstance(number, float) and math.isinf(number):
        raise ValueError("is infinite; a stimulation setting must be a real value")
    return value


class StimulationLimits(_Section):
    """Hard caps for EMG-triggered NMES. IEC 60601-2-10 style bounds; the firmware has its own."""

    enabled: bool = False
    max_amplitude_ma: float = Field(40.0, gt=0.0, le=60.0)
    max_pulse_width_us: int = Field(400, ge=50, le=400)
    min_frequency_hz: int = Field(20, ge=1, le=100)
    max_frequency_hz: int = Field(60, ge=1, le=100)
    max_burst_s: float = Field(5.0, gt=0.0, le=10.0)
    min_rest_s: float = Field(5.0, ge=1.0, le=600.0)
    max_bursts_per_session: int = Field(60, ge=1, le=500)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers(cls, v: object) -> object:
        return _a_number(v)

    def violations(
        self, amplitude_ma: float, pulse_width_us: int, frequency_hz: int, burst_s: float
    ) -> list[str]:
        """Every cap a burst breaks, named with its value and the limit (empty: within caps)."""
        out = []
        if not 0.0 <= amplitude_ma <= self.max_amplitude_ma:
            out.append(f"amplitude {amplitude_ma} mA > {self.max_amplitude_ma} mA")
        if not 1 <= pulse_width_us <= self.max_pulse_width_us:
            out.append(f"pulse width {pulse_width_us} µs > {self.max_pulse_width_us} µs")
        if not self.min_frequency_hz <= frequency_hz <= self.max_frequency_hz:
            out.append(
                f"frequency {frequency_hz} Hz outside "
                f"{self.min_frequency_hz}–{self.max_frequency_hz} Hz"
            )
        if not 0.0 < burst_s <= self.max_burst_s:
            out.append(f"burst {burst_s} s outside 0–{self.max_burst_s} s")
        return out

    @model_validator(mode="after")
    def _frequency_order(self) -> StimulationLimits:
        if self.min_frequency_hz > self.max_frequency_hz:
            raise ValueError("min_frequency_hz must not exceed max_frequency_hz")
        return self


class StimBurstSettings(_Section):
    """The burst the host asks for when EMG triggers it; must sit inside `StimulationLimits`."""

    channel: int = Field(0, ge=0, le=7)  # stimulation channel = electrode channel index
    amplitude_ma: float = Field(20.0, ge=0.0, le=60.0)
    pulse_width_us: int = Field(300, ge=50, le=400)
    frequency_hz: int = Field(50, ge=1, le=100)
    ramp_up_s: float = Field(0.5, ge=0.0, le=3.5)
    hold_s: float = Field(2.0, ge=0.0, le=10.0)
    ramp_down_s: float = Field(0.5, ge=0.0, le=3.5)
    trigger_fraction: float = Field(0.8, gt=0.0, le=1.5)  # of the band's lower edge
    stale_after_s: float = Field(0.2, ge=0.02, le=1.0)  # no samples this long stops a burst
    blank_margin_ms: float = Field(150.0, ge=0.0, le=1000.0)  # EMG blanked past the burst end

    @field_validator("*", mode="before")
    @classmethod
    def _numbers(cls, v: object) -> object:
        return _a_number(v)

    @property
    def burst_s(self) -> float:
        return self.ramp_up_s + self.hold_s + self.ramp_down_s


class RecordingSettings(_Section):
    """The EDF+/BDF+ record (`--record`, feedback.outputs.recorder; docs/recording.md).

    EDF stores 16-bit samples; at 0.5 µV per step that is ±16.384 mV. "auto" writes EDF when the
    declared input range fits that and BDF (24 bit) when it would clip, so no sample the device
    can deliver is ever clamped by the file format."""

    format: Literal["edf", "bdf", "auto"] = "auto"
    range_mv: float = Field(16.384, gt=0.0, le=1000.0)  # ± the device's input range, mV


# SENIAM recommendations (Hermens et al. 2000; seniam.org "sensor locations"), worded without
# a "/" (the session_start test reads one as a leaked file path).
SENIAM_VM = (
    "80 % on the line between the anterior superior iliac spine and the joint space in front "
    "of the anterior border of the medial ligament"
)
SENIAM_VL = (
    "two thirds of the way on the line from the anterior superior iliac spine to the lateral "
    "side of the patella"
)


class ElectrodePlacement(_Section):
    """Where one bipolar electrode pair sat, in SENIAM's terms."""

    muscle: str = Field(..., min_length=1, max_length=64)
    location: str = Field("", max_length=300)
    orientation: str = Field("in the direction of the muscle fibres", max_length=200)
    inter_electrode_mm: float = Field(20.0, gt=0.0, le=100.0)  # SENIAM: 20 mm
    electrode_size_mm: float = Field(10.0, gt=0.0, le=50.0)  # SENIAM: at most 10 mm
    material: str = Field("AgAgCl", max_length=32)
    kind: str = Field("surface", max_length=32)


class PlacementSettings(_Section):
    """The montage: per channel role (VM, VL, ...) where its electrodes sat; a patient profile's
    "placement" entry overrides this (feedback.placement). Carried into session_start and the
    record headers."""

    scheme: str = Field("SENIAM", max_length=32)
    skin_preparation: str = Field("shaved, lightly abraded, cleaned with alcohol", max_length=200)
    reference: str = Field("on or around the ankle (malleolus) of the same leg", max_length=200)
    electrodes: dict[str, ElectrodePlacement] = Field(
        default_factory=lambda: {
            "VM": ElectrodePlacement(
                muscle="vastus medialis",
                location=SENIAM_VM,
                orientation="almost perpendicular to the line ASIS - medial knee joint space",
            ),
            "VL": ElectrodePlacement(muscle="vastus lateralis", location=SENIAM_VL),
        }
    )

    @field_validator("electrodes")
    @classmethod
    def _roles(cls, v: dict[str, ElectrodePlacement]) -> dict[str, ElectrodePlacement]:
        bad = [r for r in v if not re.fullmatch(CHANNEL_ROLE, r)]
        if bad:
            raise ValueError(f"placement roles must look like VM, VL or VM_L; got {bad}")
        return v


class Settings(_Section):
    session: SessionSettings = SessionSettings()
    device: DeviceSettings = DeviceSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    processing: ProcessingSettings = ProcessingSettings()
    calibration: CalibrationSettings = CalibrationSettings()
    onset: OnsetSettings = OnsetSettings()
    activation: ActivationSettings = ActivationSettings()
    quality: QualitySettings = QualitySettings()
    target: TargetSettings = TargetSettings()
    protocol: ProtocolSettings = ProtocolSettings()
    contractions: ContractionSettings = ContractionSettings()
    mqtt: MqttSettings = MqttSettings()
    storage: StorageSettings = StorageSettings()
    lsl: LslSettings = LslSettings()
    stimulation: StimulationLimits = StimulationLimits()
    stim_burst: StimBurstSettings = StimBurstSettings()
    recording: RecordingSettings = RecordingSettings()
    placement: PlacementSettings = PlacementSettings()

    @model_validator(mode="after")
    def _burst_within_limits(self) -> Settings:
        b = self.stim_burst
        bad = self.stimulation.violations(
            b.amplitude_ma, b.pulse_width_us, b.frequency_hz, b.burst_s
        )
        if self.stimulation.enabled and bad:
            raise ValueError("stim_burst exceeds [stimulation] hard caps: " + "; ".join(bad))
        return self
