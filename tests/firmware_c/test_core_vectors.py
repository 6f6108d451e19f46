"""The C firmware core (host build, through ctypes) against the shared vectors in
firmware/vectors/frames.json: the same file the Python bridge and the emulated firmware pass.

Negative controls: a core built with a looser amplitude cap, and one whose watchdog is longer,
fail the scenarios (the build is redone with -D overrides, so the check is on compiled code).
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import scenario
from vmf_c import FIRMWARE, CCore, build, require_tools

from firmware_bridge import Connection, Role, SampleFrame, StimState
from firmware_bridge.examples import load_vectors, message_from_json

VECTORS = load_vectors()
TYPE_IDS = {"StimAck": 0x21, "Heartbeat": 0x30, "EmergencyStopAck": 0x41}
REASONS = {"TOO_SOON": 5}


def core() -> CCore:
    build("host")
    return CCore()


# -- every device message, byte for byte --------------------------------------------------------


def c_encode(c: CCore, vector: dict[str, Any]) -> bytes:
    lib, dev, f = c.lib, c.dev, vector["fields"]
    lib.vmfh_set_tx_seq(vector["seq"])
    kind = vector["type"]
    if kind == "DeviceInfo":
        lib.vmf_send_device_info(dev)
    elif kind == "SampleFrame":
        chans = f["samples"]
        flat = [chans[ch][s] for s in range(len(chans[0])) for ch in range(len(chans))]
        arr = (ctypes.c_int16 * len(flat))(*flat)
        lib.vmf_send_samples(
            dev, f["sample_counter"], f["device_time_us"], len(chans), len(chans[0]), arr
        )
    elif kind == "Status":
        mask = sum(1 << i for i, ok in enumerate(f["contact_ok"]) if ok)
        state = StimState[f["stim_state"]]
        lib.vmf_send_status(dev, f["battery_pct"], state, len(f["contact_ok"]), mask)
    elif kind in ("StimAck", "Heartbeat"):
        lib.vmf_send_u32(dev, TYPE_IDS[kind], f.get("command_id", f.get("counter")))
    elif kind == "StimRefused":
        lib.vmf_send_refused(dev, f["command_id"], REASONS[f["reason"]])
    elif kind == "EmergencyStopAck":
        lib.vmf_send_empty(dev, TYPE_IDS[kind])
    elif kind == "DeviceError":
        lib.vmf_send_device_error(dev, f["code"], f["message"].encode())
    else:
        raise AssertionError(kind)
    return c.take()


DEVICE_MESSAGES = [v for v in VECTORS["messages"] if v["from"] == "device"]
HOST_MESSAGES = [v for v in VECTORS["messages"] if v["from"] == "host"]


@pytest.mark.parametrize("vector", DEVICE_MESSAGES, ids=lambda v: v["type"])
def test_core_encodes_each_device_message_to_the_vector_bytes(vector: dict[str, Any]) -> None:
    assert c_encode(core(), vector).hex(" ") == vector["wire"]


def test_core_crc_is_ccitt_false() -> None:
    assert core().crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize("vector", HOST_MESSAGES, ids=lambda v: v["type"])
def test_core_understands_each_host_message(vector: dict[str, Any]) -> None:
    c = core()
    host = Connection(Role.HOST)
    host.receive_data(c.receive(bytes.fromhex(vector["wire"]), 0))
    replies = [type(e).__name__ for e in host.events()]
    assert c.stats.host_frames_ok == 1 and c.rx_errors() == {}
    expected = {
        "StimCommand": "StimAck",
        "Heartbeat": "Heartbeat",
        "EmergencyStop": "EmergencyStopAck",
        "EmergencyStopClear": "Status",
        "InfoRequest": "DeviceInfo",
    }[vector["type"]]
    assert expected in replies, replies
    if vector["type"] == "StimCommand":  # the decoded fields reach the output stage
        out, cmd = c.output(), message_from_json(vector)
        assert out.active and out.channel == cmd.channel  # type: ignore[union-attr]
        assert out.pulse_width_us == cmd.pulse_width_us  # type: ignore[union-attr]
        assert out.frequency_hz == cmd.frequency_hz  # type: ignore[union-attr]


@pytest.mark.parametrize("whole", [True, False], ids=["whole", "byte-by-byte"])
@pytest.mark.parametrize(
    "vector", [v for v in VECTORS["invalid"] if v["to"] != "host"], ids=lambda v: v["name"]
)
def test_core_classifies_each_invalid_vector(vector: dict[str, Any], whole: bool) -> None:
    c = core()
    wire = bytes.fromhex(vector["wire"])
    chunks = [wire] if whole else [wire[i : i + 1] for i in range(len(wire))]
    for chunk in chunks:
        c.receive(chunk, 0)
    errors = [k for k in vector["expect"] if k[0].islower()]
    assert c.rx_errors() == {k: errors.count(k) for k in set(errors)}
    assert c.stats.host_frames_ok == len(vector["expect"]) - len(errors)


# -- stimulation scenarios ----------------------------------------------------------------------


class Compiled:
    def __init__(self, c: CCore) -> None:
        self.c = c

    def receive(self, data: bytes, now_ms: int) -> bytes:
        return self.c.receive(data, now_ms)

    def poll(self, now_ms: int) -> bytes:
        return self.c.poll(now_ms)

    def set_contact(self, channel: int, ok: bool) -> None:
        self.c.set_contact(channel, ok)

    def state(self) -> StimState:
        return StimState(self.c.state)

    def output(self) -> dict[str, float]:
        out = self.c.output()
        if not out.active:
            return {"amplitude_ma": 0.0}
        return {
            "amplitude_ma": out.amplitude_dma / 10,
            "pulse_width_us": out.pulse_width_us,
            "frequency_hz": out.frequency_hz,
        }


@pytest.mark.parametrize("case", VECTORS["scenarios"], ids=lambda s: s["name"])
def test_core_runs_each_scenario(case: dict[str, Any]) -> None:
    scenario.run(Compiled(core()), case)


# -- samples ------------------------------------------------------------------------------------


def test_core_frames_samples_with_counters_times_and_clipping() -> None:
    c = CCore(rate_hz=2000, samples_per_frame=20, adc_bits=10)
    host = Connection(Role.HOST)
    values = [[i, -i * 3] for i in range(100)]
    for v in values:
        c.sample(v)
        host.receive_data(c.poll(0))
    frames = [e for e in host.events() if isinstance(e, SampleFrame)]
    assert [f.sample_counter for f in frames] == [0, 20, 40, 60, 80]
    assert [f.device_time_us for f in frames] == [0, 10_000, 20_000, 30_000, 40_000]
    got = [s for f in frames for s in f.samples.T.tolist()]
    want = [[a, max(b, -512)] for a, b in values]  # 10-bit: clipped to -512..511
    assert got == want
    assert c.stats.samples_clipped == sum(1 for _, b in values if b < -512)
    assert host.stats.sample_gaps == 0


def test_core_overrun_shows_up_as_a_gap_and_a_device_error() -> None:
    c = CCore(samples_per_frame=10)
    c.lib.vmfh_set_tx_limit(0)  # the UART is full: blocks pile up
    host = Connection(Role.HOST)
    for _ in range(40):
        c.sample([1, 2])
        c.poll(0)
    c.lib.vmfh_set_tx_limit(65536)
    for _ in range(10):
        c.sample([1, 2])
        host.receive_data(c.poll(1))
    events = list(host.events())
    frames = [e for e in events if isinstance(e, SampleFrame)]
    assert [f.sample_counter for f in frames] == [0, 40]  # 10..39 were lost, and say so
    assert host.stats.sample_gaps == 1 and host.stats.samples_lost == 30
    assert any(type(e).__name__ == "DeviceError" for e in events)
    assert c.stats.samples_dropped == 30


@pytest.mark.parametrize("rate", [500, 1000, 1500, 2000, 3000, 4000, 4800])
def test_core_device_time_rounds_like_the_emulator(rate: int) -> None:
    c = CCore(rate_hz=rate, samples_per_frame=7)
    host = Connection(Role.HOST)
    for _ in range(7 * 50):
        c.sample([0, 0])
        host.receive_data(c.poll(0))
    frames = [e for e in host.events() if isinstance(e, SampleFrame)]
    assert [f.device_time_us for f in frames] == [
        round(f.sample_counter * 1e6 / rate) for f in frames
    ]
    info = Connection(Role.HOST)
    info.receive_data(
        c.receive(Connection(Role.HOST).send(message_from_json({"type": "InfoRequest"})), 0)
    )
    (device_info,) = [e for e in info.events() if type(e).__name__ == "DeviceInfo"]
    assert device_info.sample_rate_hz == rate  # type: ignore[union-attr]


# -- negative controls: compiled with the wrong numbers, the same checks fail ------------------


def control_lib(tag: str, cap: str, value: str) -> Path:
    """The host build from a copy of the core whose `cap` in vmf_config.h is `value`."""
    require_tools("host")
    out = FIRMWARE / "build" / f"control-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(FIRMWARE / "core", out)
    shutil.copy(FIRMWARE / "boards" / "host" / "vmf_host.c", out)
    config = out / "vmf_config.h"
    text, n = re.subn(rf"#define {cap} \S+", f"#define {cap} {value}", config.read_text())
    assert n == 1, cap
    config.write_text(text)
    lib = out / "libvmf_host.so"
    sources = [str(p) for p in sorted(out.glob("*.c"))]
    cmd = ["cc", "-O1", "-fPIC", "-shared", "-std=c99", "-DVMF_MAX_CHANNELS=8", "-o", str(lib)]
    subprocess.run([*cmd, "-DVMF_MAX_SAMPLES_PER_FRAME=64", *sources], check=True, timeout=120)
    return lib


@pytest.mark.parametrize(
    ("tag", "cap", "value", "case"),
    [
        ("amp", "VMF_MAX_AMPLITUDE_DMA", "800u", "amplitude over the cap"),
        (
            "wd",
            "VMF_WATCHDOG_MS",
            "300ul",
            "watchdog stops a burst 250 ms after the last host frame",
        ),
    ],
)
def test_control_a_core_built_with_looser_limits_fails(
    tag: str, cap: str, value: str, case: str
) -> None:
    lib_path = control_lib(tag, cap, value)
    import vmf_c

    real = vmf_c._lib
    try:
        lib = ctypes.CDLL(str(lib_path))
        vmf_c._lib = lambda: _typed(lib, real())  # type: ignore[assignment]
        c = CCore()
        with pytest.raises(AssertionError):
            scenario.run(Compiled(c), next(s for s in VECTORS["scenarios"] if s["name"] == case))
    finally:
        vmf_c._lib = real  # type: ignore[assignment]


def _typed(lib: ctypes.CDLL, like: ctypes.CDLL) -> ctypes.CDLL:
    """Give `lib` the ctypes signatures of the real build's functions."""
    for name in dir(like):
        if name.startswith("vmf"):
            fn, ref = getattr(lib, name), getattr(like, name)
            fn.restype, fn.argtypes = ref.restype, ref.argtypes
    return lib
