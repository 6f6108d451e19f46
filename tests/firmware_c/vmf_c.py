"""Build helpers and a ctypes view of the C firmware core (firmware/core) for the tests.

`build(target)` runs `make -C firmware <target>` once per test session and returns the artefact;
a missing toolchain is `missing_service` (skip locally, fail under VMF_REQUIRE_SERVICES=1), with
the command that installs it. `CCore` drives the host build (boards/host/vmf_host.c) exactly as
a board would: bytes in, samples in, ticks, and the bytes it sends out.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from functools import cache
from pathlib import Path

from tests.conftest import missing_service

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
BUILD = FIRMWARE / "build"
DEPS = "run scripts/firmware-deps.sh as root (apt-get: gcc-avr avr-libc gcc-arm-none-eabi ...)"

TOOLS = {
    "host": ["cc"],
    "avr": ["avr-gcc", "avr-objcopy"],
    "cortex_m": ["arm-none-eabi-gcc", "arm-none-eabi-objcopy"],
    "sim": ["cc", "simavr"],
    "fuzz": ["clang"],
}
ARTEFACTS = {
    "host": "host/libvmf_host.so",
    "avr": "avr/vm_feedback.elf",
    "cortex_m": "cortex_m/vm_feedback.elf",
    "sim": "sim/vmf_sim",
    "fuzz": "fuzz/fuzz_core",
}


def require_tools(target: str) -> None:
    missing = [t for t in TOOLS[target] if shutil.which(t) is None]
    if target == "sim" and not Path("/usr/include/simavr/sim_avr.h").exists():
        missing.append("libsimavr-dev")
    if target == "avr" and not Path("/usr/lib/avr/include/avr/io.h").exists():
        missing.append("avr-libc")
    if target == "cortex_m" and not Path("/usr/lib/arm-none-eabi/lib/libc_nano.a").exists():
        missing.append("libnewlib-arm-none-eabi")
    if missing:
        missing_service(f"firmware target {target!r} needs {', '.join(missing)}: {DEPS}")


@cache
def build(target: str, **variables: str) -> Path:
    """`make -C firmware <target>` (variables as VAR=value); the artefact's path.

    Each set of variables builds in its own directory, so a test of another sample rate does
    not overwrite the default image other tests use."""
    require_tools(target)
    tag = "-".join(f"{k}={v}" for k, v in sorted(variables.items()))
    out = BUILD if not tag else BUILD / f"v-{tag}"
    args = ["make", "-s", "-C", str(FIRMWARE), target, f"BUILD={out}"]
    args += [f"{k}={v}" for k, v in variables.items()]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return out / ARTEFACTS[target]


class StimOutput(ctypes.Structure):
    _fields_ = [
        ("active", ctypes.c_uint8),
        ("channel", ctypes.c_uint8),
        ("amplitude_dma", ctypes.c_uint16),
        ("pulse_width_us", ctypes.c_uint16),
        ("frequency_hz", ctypes.c_uint16),
    ]


class Stats(ctypes.Structure):
    _fields_ = [
        ("frames_sent", ctypes.c_uint32),
        ("samples_sent", ctypes.c_uint32),
        ("samples_clipped", ctypes.c_uint32),
        ("samples_dropped", ctypes.c_uint32),
        ("frames_dropped", ctypes.c_uint32),
        ("host_frames_ok", ctypes.c_uint32),
        ("rx_errors", ctypes.c_uint32 * 8),
        ("commands_accepted", ctypes.c_uint32),
        ("commands_refused", ctypes.c_uint32),
        ("estops", ctypes.c_uint32),
        ("watchdog_trips", ctypes.c_uint32),
    ]


# enum vmf_rx_error, in order, by firmware_bridge ErrorKind value
RX_ERROR_KINDS = (
    "ok",
    "cobs",
    "crc",
    "oversize",
    "malformed",
    "unknown_type",
    "unsupported_version",
    "wrong_direction",
)


@cache
def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(build("host")))
    u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64
    ptr, cstr = ctypes.c_void_p, ctypes.c_char_p
    sigs: dict[str, tuple[object, list[object]]] = {
        "vmfh_init": (ctypes.c_int, [u32, cstr, u8, u32, u8, cstr, u32, u32]),
        "vmfh_device": (ptr, []),
        "vmfh_set_tx_seq": (None, [u16]),
        "vmfh_set_tx_limit": (None, [u32]),
        "vmfh_hello": (None, []),
        "vmfh_receive": (None, [ctypes.c_char_p, u16, u32]),
        "vmfh_poll": (None, [u32]),
        "vmfh_sample": (None, [ctypes.POINTER(ctypes.c_int16)]),
        "vmfh_set_contact": (None, [u8, u8]),
        "vmfh_set_battery": (None, [u8]),
        "vmfh_state": (u8, []),
        "vmfh_stats": (ctypes.POINTER(Stats), []),
        "vmfh_output": (None, [ctypes.POINTER(StimOutput)]),
        "vmfh_take": (u32, [ctypes.c_char_p, u32]),
        "vmf_send_device_info": (ctypes.c_int, [ptr]),
        "vmf_send_samples": (
            ctypes.c_int,
            [ptr, u32, u64, u8, u8, ctypes.POINTER(ctypes.c_int16)],
        ),
        "vmf_send_status": (ctypes.c_int, [ptr, u8, u8, u8, u32]),
        "vmf_send_u32": (ctypes.c_int, [ptr, u8, u32]),
        "vmf_send_refused": (ctypes.c_int, [ptr, u32, u8]),
        "vmf_send_empty": (ctypes.c_int, [ptr, u8]),
        "vmf_send_device_error": (ctypes.c_int, [ptr, u16, cstr]),
        "vmf_crc16": (u16, [ctypes.c_char_p, ctypes.c_size_t]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


class CCore:
    """The one device of the host build. Creating a CCore re-initialises it."""

    def __init__(
        self,
        rate_hz: int = 2000,
        roles: tuple[str, ...] = ("VM", "VL"),
        samples_per_frame: int = 20,
        lsb_nv: int = 195,
        adc_bits: int = 16,
        serial: str = "VMF-0042",
        version: tuple[int, int, int] = (1, 2, 3),
        now_ms: int = 0,
    ) -> None:
        self.lib = _lib()
        packed = version[0] << 16 | version[1] << 8 | version[2]
        rc = self.lib.vmfh_init(
            rate_hz,
            ",".join(roles).encode(),
            samples_per_frame,
            lsb_nv,
            adc_bits,
            serial.encode(),
            packed,
            now_ms,
        )
        if rc != 0:
            raise ValueError("configuration does not fit the host build")
        self.n_channels = len(roles)
        self.dev = self.lib.vmfh_device()

    def receive(self, data: bytes, now_ms: int) -> bytes:
        for i in range(0, len(data), 60000):
            self.lib.vmfh_receive(data[i : i + 60000], len(data[i : i + 60000]), now_ms)
        return self.take()

    def poll(self, now_ms: int) -> bytes:
        self.lib.vmfh_poll(now_ms)
        return self.take()

    def sample(self, values: list[int]) -> None:
        arr = (ctypes.c_int16 * len(values))(*values)
        self.lib.vmfh_sample(arr)

    def set_contact(self, channel: int, ok: bool) -> None:
        self.lib.vmfh_set_contact(channel, int(ok))

    def take(self) -> bytes:
        buf = ctypes.create_string_buffer(65536)
        n = self.lib.vmfh_take(buf, 65536)
        return buf.raw[:n]

    @property
    def state(self) -> int:
        return int(self.lib.vmfh_state())

    @property
    def stats(self) -> Stats:
        return self.lib.vmfh_stats().contents

    def rx_errors(self) -> dict[str, int]:
        counts = list(self.stats.rx_errors)
        return {kind: counts[i] for i, kind in enumerate(RX_ERROR_KINDS) if i and counts[i]}

    def output(self) -> StimOutput:
        out = StimOutput()
        self.lib.vmfh_output(ctypes.byref(out))
        return out

    def crc16(self, data: bytes) -> int:
        return int(self.lib.vmf_crc16(data, len(data)))
