"""feedback.processing.lazy_signal gives what scipy.signal gives, to the bit, without importing
scipy.signal for the shipped settings at common rates (a replay's whole process: issue 12)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import signal as scipy_signal

from feedback.processing import lazy_signal
from feedback.processing.filters import mains_notch
from feedback.processing.sos_table import DESIGNS, SCIPY

ROOT = Path(__file__).resolve().parents[2]
# The table and the numpy copies serve only the scipy they were made with (`make lowest` runs an
# older one: everything then goes to scipy.signal, which the last test here checks).
mirrored = pytest.mark.skipif(not lazy_signal.MIRRORED, reason=f"scipy is not {SCIPY}, the table's")
Design = tuple[str, tuple[Any, ...], tuple[tuple[str, Any], ...], Any]
SECTIONS = [stored for name, _, _, stored in DESIGNS if name != "iirnotch"]  # not (b, a)


def table_mismatches(designs: tuple[Design, ...]) -> list[str]:
    """Entries that scipy does not design to the same bits."""
    bad = []
    for name, args, kwargs, stored in designs:
        want = np.asarray(getattr(scipy_signal, name)(*args, **dict(kwargs)))  # iirnotch: (b, a)
        got = np.array(stored, dtype=np.float64)
        if not (got.shape == want.shape and np.array_equal(got, want)):
            bad.append(f"{name}{args}{kwargs}")
    return bad


@mirrored
def test_every_stored_design_is_scipys_to_the_bit() -> None:
    assert len(DESIGNS) >= 50
    assert table_mismatches(DESIGNS) == []


def _nudged(design: Design, row: int, column: int) -> Design:
    """The design with one stored coefficient one ulp off."""
    name, args, kwargs, stored = design
    rows = [list(r) for r in stored]
    rows[row][column] = float(np.nextafter(rows[row][column], np.inf))
    return name, args, kwargs, tuple(tuple(r) for r in rows)


def _first(name: str) -> int:
    return next(i for i, d in enumerate(DESIGNS) if d[0] == name)


@mirrored
def test_the_table_check_catches_one_ulp() -> None:
    # One of each kind: a butter section, a notch's (b, a), a notch's section.
    for i, row, column in ((0, 0, 4), (_first("iirnotch"), 1, 2), (_first("tf2sos"), 0, 1)):
        name, args, kwargs, _ = DESIGNS[i]
        nudged = _nudged(DESIGNS[i], row, column)
        assert table_mismatches((nudged, *DESIGNS[1:5])) == [f"{name}{args}{kwargs}"]


def _scipys_notch(mains_hz: float, rate_hz: float) -> np.ndarray:
    """feedback.processing.filters.mains_notch, designed by scipy.signal alone."""
    harmonics = np.arange(mains_hz, 0.45 * rate_hz, mains_hz)
    return np.vstack([scipy_signal.tf2sos(*scipy_signal.iirnotch(f, 30.0, fs=rate_hz))
                      for f in harmonics])  # fmt: skip


def notch_mismatches() -> list[str]:
    """Table rates and mains where the station's notch (through the table) is not scipy's."""
    bad = []
    for rate in _make_sos_table().RATES:
        for mains in (50, 60):
            got, want = mains_notch(mains, rate), _scipys_notch(mains, rate)
            if not (got.shape == want.shape and np.array_equal(got, want)):
                bad.append(f"{mains} Hz at {rate} Hz")
    return bad


@mirrored
def test_the_mains_notch_comes_from_the_table_as_scipy_designs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    misses: list[str] = []
    monkeypatch.setattr(lazy_signal, "on_table_miss", lambda name, *_: misses.append(name))
    assert notch_mismatches() == [] and misses == []
    # Negative control: one coefficient of one stored notch section one ulp off.
    i = _first("tf2sos")
    name, args, kwargs, _ = nudged = _nudged(DESIGNS[i], 0, 0)
    key = lazy_signal.design_key(name, args, dict(kwargs))
    monkeypatch.setitem(lazy_signal._TABLE, key, nudged[3])
    assert notch_mismatches() != []


@mirrored
def test_the_table_covers_what_pipelines_ask_for() -> None:
    """The table is exactly what scripts/make_sos_table.py writes today: a setting or a call site
    that asks for a new design shows here (run the script)."""
    make_sos_table = _make_sos_table()
    calls = make_sos_table.wanted()
    assert make_sos_table.render(calls) == make_sos_table.TABLE.read_text()
    # Negative control: one design fewer is noticed.
    assert make_sos_table.render(calls[1:]) != make_sos_table.TABLE.read_text()


@mirrored
def test_a_design_not_in_the_table_is_scipys(monkeypatch: pytest.MonkeyPatch) -> None:
    misses: list[str] = []
    monkeypatch.setattr(lazy_signal, "on_table_miss", lambda name, *_: misses.append(name))
    got = lazy_signal.butter(4, (20.0, 450.0), btype="bandpass", fs=1234.5, output="sos")
    want = scipy_signal.butter(4, (20.0, 450.0), btype="bandpass", fs=1234.5, output="sos")
    assert np.array_equal(got, want) and misses == ["butter"]
    b, a = lazy_signal.iirnotch(50.0, 30.0, fs=1234.5)
    want_b, want_a = scipy_signal.iirnotch(50.0, 30.0, fs=1234.5)
    assert np.array_equal(b, want_b) and np.array_equal(a, want_a)
    # A stored design: the same numbers whether the order is 4 or 4.0, a tuple or a list.
    misses.clear()
    stored = lazy_signal.butter(4, [20.0, 450.0], btype="bandpass", fs=2000.0, output="sos")
    want = scipy_signal.butter(4, (20.0, 450.0), btype="bandpass", fs=2000.0, output="sos")
    assert np.array_equal(stored, want) and misses == []
    stored[0, 0] = 0.0  # a copy: the caller may write into it
    again = lazy_signal.butter(4, (20.0, 450.0), btype="bandpass", fs=2000.0, output="sos")
    assert np.array_equal(again, want)


def _make_sos_table() -> Any:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_sos_table  # type: ignore[import-not-found,unused-ignore]
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return make_sos_table


def _random_sos(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        return np.array(SECTIONS[int(rng.integers(len(SECTIONS)))])
    n = int(rng.integers(1, 5))
    return np.column_stack(
        [rng.normal(size=(n, 3)), np.ones(n), rng.uniform(-1.5, 1.5, n), rng.uniform(0, 0.9, n)]
    )


def _wrong_sosfreqz(sos: np.ndarray, worN: Any, fs: float) -> Any:
    """The same response, computed the usual textbook way (numpy's polyval, one fraction)."""
    w = np.asarray(worN, dtype=np.float64)
    z = np.exp(-2j * np.pi * w / fs)
    h = np.prod([np.polyval(r[2::-1], z) / np.polyval(r[:2:-1], z) for r in sos], axis=0)
    return w, h


def sosfreqz_mismatches(impl: Callable[..., Any], cases: int = 400) -> int:
    rng = np.random.default_rng(7)
    bad = 0
    for _ in range(cases):
        sos = _random_sos(rng)
        fs = float(rng.choice([250.0, 1000.0, 1024.0, 2000.0, 2 * np.pi]))
        f = rng.uniform(0, fs / 2, int(rng.integers(1, 6)))
        w1, h1 = scipy_signal.sosfreqz(sos, worN=f, fs=fs)
        w2, h2 = impl(sos, worN=f, fs=fs)
        bad += not (np.array_equal(w1, w2) and np.array_equal(h1, h2))
    return bad


def test_sosfreqz_is_scipys_to_the_bit() -> None:
    assert sosfreqz_mismatches(lazy_signal.sosfreqz) == 0
    assert sosfreqz_mismatches(_wrong_sosfreqz, 50) > 0  # the check can tell


def _textbook_welch(x: np.ndarray, fs: float, nperseg: int) -> Any:
    """The same estimate, written the usual way (vectorised, numpy's window and sums)."""
    hop = nperseg - nperseg // 2
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(nperseg) / nperseg)
    segs = np.lib.stride_tricks.sliding_window_view(x, nperseg)[::hop]
    segs = segs - segs.mean(axis=1, keepdims=True)
    p = np.abs(np.fft.rfft(segs * win, axis=1)) ** 2 / (fs * np.sum(win**2))
    p[:, 1 : -1 if nperseg % 2 == 0 else None] *= 2
    return np.fft.rfftfreq(nperseg, 1 / fs), p.mean(axis=0)


def welch_mismatches(impl: Callable[..., Any], cases: int = 600) -> int:
    rng = np.random.default_rng(11)
    bad = 0
    for i in range(cases):
        n = int(rng.integers(2, 6000))
        fs = float(rng.choice([50.0, 1000.0, 1024.0, 2000.0, 333.3]))
        x = rng.standard_normal(n) * rng.uniform(1e-3, 10) + rng.uniform(-1, 1)
        nperseg = min(256, n) if i % 3 else int(rng.integers(2, n + 1))
        f1, p1 = scipy_signal.welch(x, fs=fs, nperseg=nperseg)
        f2, p2 = impl(x, fs=fs, nperseg=nperseg)
        bad += not (np.array_equal(f1, f2) and np.array_equal(p1, p2))
    return bad


def test_welch_is_scipys_to_the_bit() -> None:
    assert welch_mismatches(lazy_signal.welch) == 0


def test_the_welch_check_tells_the_textbook_estimate_apart() -> None:
    x = np.random.default_rng(2).standard_normal(3000)
    _, want = scipy_signal.welch(x, fs=1000.0, nperseg=256)
    _, close = _textbook_welch(x, 1000.0, 256)
    assert np.allclose(close, want, rtol=1e-12, atol=0)  # the same estimate ...
    assert welch_mismatches(_textbook_welch, 30) > 0  # ... but not the same bits


def test_welch_outside_its_numpy_path_is_scipys() -> None:
    x = np.random.default_rng(3).standard_normal(1000)
    cases: tuple[tuple[tuple[np.ndarray], dict[str, Any]], ...] = (
        ((x.astype(np.float32),), {"fs": 1000.0, "nperseg": 256}),
        ((x,), {"fs": 1000.0, "nperseg": 256, "noverlap": 10}),
        ((x[:100],), {"fs": 1000.0, "nperseg": 256}),  # longer than the signal: scipy warns
        ((np.vstack([x, x]),), {"fs": 1000.0, "nperseg": 128}),
    )
    for args, kwargs in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f1, p1 = scipy_signal.welch(*args, **kwargs)
            f2, p2 = lazy_signal.welch(*args, **kwargs)
        assert np.array_equal(f1, f2) and np.array_equal(p1, p2) and p1.dtype == p2.dtype


def test_the_reference_cascade_is_scipys_sosfilt() -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        sos = _random_sos(rng)
        x = rng.standard_normal((2, 50))
        zi = rng.standard_normal((sos.shape[0], 2, 2))
        want, want_zi = scipy_signal.sosfilt(sos, x, axis=1, zi=zi)
        state = np.ascontiguousarray(zi.transpose(1, 0, 2))
        lazy_signal.reference_cascade(sos, x, state)
        assert np.array_equal(x, want) and np.array_equal(state.transpose(1, 0, 2), want_zi)


def test_the_kernel_loads_and_a_wrong_one_is_refused() -> None:
    kernel = lazy_signal.load_sos_kernel()
    assert kernel is not None and lazy_signal.kernel_agrees(kernel)

    def sloppy(sos: np.ndarray, x: np.ndarray, state: np.ndarray) -> None:
        kernel(sos, x, state)
        x[0, -1] = np.nextafter(x[0, -1], np.inf)  # one ulp, once

    def broken(sos: np.ndarray, x: np.ndarray, state: np.ndarray) -> None:
        raise TypeError("signature changed")

    assert not lazy_signal.kernel_agrees(sloppy)
    assert not lazy_signal.kernel_agrees(broken)


FRESH = """
import sys
import numpy as np
from config.loader import load_settings
from devices.base import SampleBlock
from feedback import app  # noqa: F401  (everything a station imports)
from feedback.pipeline import Pipeline
from feedback.processing.metrics import median_frequency
from feedback.processing.filters import SOS_KERNEL
rng = np.random.default_rng(0)
for rate, notch in ((1000.0, 0), (2000.0, 0), (1000.0, 50), (2000.0, 60)):
    settings = load_settings(environ={}, protocol="free", overrides={"processing.notch_hz": notch})
    pipe = Pipeline(settings, rate, ("VM", "VL"))
    for i in range(0, 4000, 500):
        pipe.process(SampleBlock(i, 0.0, rate, ("VM", "VL"), rng.standard_normal((2, 500))))
    median_frequency(rng.standard_normal(3000), rate)
print("loaded" if "scipy.signal" in sys.modules else "not loaded", SOS_KERNEL is not None)
import scipy.signal  # after the kernel was loaded on its own: the package still works
y = scipy.signal.sosfilt(scipy.signal.butter(2, 0.2, output="sos"), np.ones(10))
from scipy.signal._sosfilt import _sosfilt
print(_sosfilt is SOS_KERNEL, y.shape)
"""


@mirrored
def test_a_station_and_its_pipelines_do_not_import_scipy_signal() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FRESH], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "not loaded True"
    assert out[1] == "True (10,)"


def test_with_another_scipy_every_call_goes_to_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = lazy_signal.scipy_signal()

    class Spy:
        def __getattr__(self, name: str) -> Any:
            calls.append(name)
            return getattr(real, name)

    monkeypatch.setattr(lazy_signal, "MIRRORED", False)
    monkeypatch.setattr(lazy_signal, "scipy_signal", Spy)
    lazy_signal.butter(4, (20.0, 450.0), btype="bandpass", fs=2000.0, output="sos")  # stored
    lazy_signal.sosfreqz(np.array(DESIGNS[0][3]), worN=np.array([100.0]), fs=250.0)
    lazy_signal.welch(np.random.default_rng(0).standard_normal(512), fs=1000.0, nperseg=256)
    assert calls == ["butter", "sosfreqz", "welch"]
