"""A short libFuzzer run on the core (ASan + UBSan): hostile bytes never crash it and never drive
the output stage outside the caps, the watchdog, contact or a latched stop (the harness asserts
those after every step: firmware/fuzz/fuzz_core.c). `make -C firmware fuzz-run` runs longer.

Negative control: the same harness on a core built with a 80 mA cap aborts on a 70 mA command.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from vmf_c import FIRMWARE, build, require_tools

FUZZ_SECONDS = int(os.environ.get("VMF_FUZZ_SECONDS", "20"))


def executions(output: str) -> int:
    match = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    assert match, output[-2000:]
    return int(match.group(1))


@pytest.mark.slow
def test_fuzzed_byte_streams_never_crash_or_exceed_the_caps(tmp_path: Path) -> None:
    fuzzer = build("fuzz")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    proc = subprocess.run(
        [
            str(fuzzer),
            f"-max_total_time={FUZZ_SECONDS}",
            "-print_final_stats=1",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
            str(FIRMWARE / "fuzz" / "seeds"),
        ],
        capture_output=True,
        text=True,
        timeout=FUZZ_SECONDS + 120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = executions(proc.stderr)
    print(f"fuzz executions: {runs} in {FUZZ_SECONDS} s")
    assert runs > 10_000
    assert not list(tmp_path.glob("crash-*"))


def test_control_the_harness_catches_a_core_with_a_looser_cap(tmp_path: Path) -> None:
    require_tools("fuzz")
    core = tmp_path / "core"
    shutil.copytree(FIRMWARE / "core", core)
    config = core / "vmf_config.h"
    text, n = re.subn(
        r"#define VMF_MAX_AMPLITUDE_DMA \S+",
        "#define VMF_MAX_AMPLITUDE_DMA 800u",
        config.read_text(),
    )
    assert n == 1
    config.write_text(text)
    binary = tmp_path / "fuzz_control"
    sources = [str(p) for p in sorted(core.glob("*.c"))]
    subprocess.run(
        [
            *("clang", "-g", "-O1", "-fsanitize=fuzzer,address", "-DVMF_MAX_CHANNELS=4"),
            *(f"-I{core}", "-o", str(binary), *sources, str(FIRMWARE / "fuzz" / "fuzz_core.c")),
        ],
        check=True,
        timeout=180,
    )
    proc = subprocess.run(
        [str(binary), str(FIRMWARE / "fuzz" / "control_amplitude_700")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    real = subprocess.run(
        [str(build("fuzz")), str(FIRMWARE / "fuzz" / "control_amplitude_700")],
        capture_output=True,
        timeout=60,
    )
    assert real.returncode == 0  # the shipped core refuses that command
    assert "invariant failed: out.amplitude_dma <= 600" in proc.stderr
