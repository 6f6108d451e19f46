"""The firmware builds for its real targets with warnings as errors, fits them, and states the
same hard caps as the emulated firmware."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from vmf_c import FIRMWARE, build, require_tools

from firmware_bridge.emulator import STATUS_INTERVAL_S, EmulatedFirmware, FirmwareLimits
from firmware_bridge.examples import EXAMPLE_INFO

UNO_FLASH = 32 * 1024 - 512  # the Optiboot bootloader keeps the last 512 bytes
UNO_RAM = 2048


def size(tool: str, elf: Path) -> tuple[int, int, int]:
    out = subprocess.run([tool, str(elf)], capture_output=True, text=True, check=True).stdout
    text, data, bss = (int(x) for x in out.splitlines()[1].split()[:3])
    return text, data, bss


def test_avr_image_fits_an_arduino_uno_with_room_for_the_stack() -> None:
    elf = build("avr")
    text, data, bss = size("avr-size", elf)
    print(f"AVR ATmega328P: flash {text + data} B, RAM {data + bss} B")
    assert text + data < UNO_FLASH
    assert data + bss < UNO_RAM - 512  # the rest is stack: the deepest path uses ~150 B
    assert elf.with_suffix(".hex").exists()


def test_cortex_m_image_fits_a_stm32f103c8() -> None:
    elf = build("cortex_m")
    text, data, bss = size("arm-none-eabi-size", elf)
    print(f"Cortex-M3 STM32F103C8: flash {text + data} B, RAM {data + bss} B")
    assert text + data < 64 * 1024 and data + bss < 20 * 1024
    vectors = subprocess.run(
        ["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"^08000000 . vectors$", vectors, re.M)  # the table is where the MCU looks


def test_the_avr_build_refuses_a_rate_its_adc_cannot_reach(tmp_path: Path) -> None:
    require_tools("avr")
    proc = subprocess.run(
        ["make", "-s", "-C", str(FIRMWARE), "avr", f"BUILD={tmp_path}", "AVR_RATE=5000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "the ADC cannot convert" in proc.stderr


def test_warnings_are_errors(tmp_path: Path) -> None:
    """A core with an unused variable does not build: -Werror is really on."""
    require_tools("host")
    src = tmp_path / "core"
    subprocess.run(["cp", "-r", str(FIRMWARE / "core"), str(src)], check=True)
    device = src / "vmf_device.c"
    device.write_text(
        device.read_text().replace("    uint32_t step;", "    uint32_t step, unused;")
    )
    proc = subprocess.run(
        ["make", "-s", "-C", str(FIRMWARE), "host", f"BUILD={tmp_path}", f"CORE={src}/*.c"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "unused" in proc.stderr


def test_arduino_sketch_carries_the_current_sources_and_compiles(tmp_path: Path) -> None:
    require_tools("avr")
    sketch = FIRMWARE / "arduino" / "vm_feedback"
    for src in sorted((FIRMWARE / "core").iterdir()):
        assert (sketch / "src" / src.name).read_text() == src.read_text(), (
            f"{src.name} is stale: run make -C firmware arduino"
        )
    board = (sketch / "src" / "board_avr.c").read_text()
    assert board.endswith((FIRMWARE / "boards" / "avr" / "board_avr.c").read_text())
    # What the Arduino IDE does: the .ino as C++, src/*.c as C, its core's main() calling setup().
    (tmp_path / "main.cpp").write_text("void setup();\nint main() { setup(); return 0; }\n")
    flags = ["-mmcu=atmega328p", "-Os", "-DF_CPU=16000000UL", "-Wall", "-Wextra", "-Werror"]
    for cmd in (
        ["avr-g++", *flags, "-x", "c++", "-c", str(sketch / "vm_feedback.ino")],
        ["avr-g++", *flags, "-c", str(tmp_path / "main.cpp")],
    ):
        subprocess.run([*cmd, "-o", str(tmp_path / (Path(cmd[-1]).stem + ".o"))], check=True)
    sources = [str(p) for p in sorted((sketch / "src").glob("*.c"))]
    objects = [str(tmp_path / "vm_feedback.o"), str(tmp_path / "main.o")]
    out = ["-o", str(tmp_path / "s.elf")]
    subprocess.run(
        ["avr-gcc", *flags, "-std=gnu11", f"-I{sketch / 'src'}", *out, *objects, *sources],
        check=True,
    )


def config_value(name: str) -> int:
    text = (FIRMWARE / "core" / "vmf_config.h").read_text()
    match = re.search(rf"#define {name} (\d+)", text)
    assert match, name
    return int(match.group(1))


def test_the_c_caps_are_the_emulated_firmwares() -> None:
    lim = FirmwareLimits()
    fw = EmulatedFirmware(EXAMPLE_INFO, lambda n: None)  # type: ignore[arg-type,return-value]
    assert config_value("VMF_MAX_AMPLITUDE_DMA") == round(lim.max_amplitude_ma * 10)
    assert config_value("VMF_MAX_PULSE_WIDTH_US") == lim.max_pulse_width_us
    assert config_value("VMF_MIN_FREQUENCY_HZ") == lim.min_frequency_hz
    assert config_value("VMF_MAX_FREQUENCY_HZ") == lim.max_frequency_hz
    assert config_value("VMF_MAX_BURST_MS") == lim.max_burst_ms
    assert config_value("VMF_MIN_REST_MS") == lim.min_rest_ms
    assert config_value("VMF_WATCHDOG_MS") == round(fw.watchdog_s * 1000)
    assert config_value("VMF_STATUS_INTERVAL_MS") == round(STATUS_INTERVAL_S * 1000)
