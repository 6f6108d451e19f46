"""The scipy.signal functions this project calls, without importing scipy.signal unless a call
needs it: importing it costs about 0.6 s of CPU (scipy parses and rewrites ~800 docstrings,
and pulls in scipy.stats), a third of a headless replay's whole process.

- `butter`, `iirnotch`, `tf2sos`: the designs a pipeline asks for with the shipped settings at
  common rates, the 50 and 60 Hz mains notch included, are in `sos_table` (made by scipy;
  tests/feedback/test_lazy_signal.py checks every entry against scipy to the bit); any other
  design asks scipy.
- `sosfreqz` at given frequencies and `welch` with its defaults on 1-D float64: numpy doing the
  same operations, in the same order, as scipy 1.17 (the same test checks them to the bit on
  thousands of random cases); other arguments go to scipy.
- `load_sos_kernel`: scipy's own C cascade behind `sosfilt`, loaded from its extension file
  without the package `__init__`, and used only if it reproduces a Python cascade exactly.
- everything else (`sosfilt`, `lfilter`): scipy.signal, imported on first use.

The table and the numpy copies are used only with the scipy they were checked against
(`sos_table.SCIPY`; scipy itself is imported anyway, by the kernel): with any other version
every call goes to scipy.signal, as before, until the table is made again with it
(scripts/make_sos_table.py) and the tests pass.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import scipy

from feedback.processing.sos_table import DESIGNS, SCIPY

SosKernel = Callable[[np.ndarray, np.ndarray, np.ndarray], None]
Design = tuple[str, tuple[Any, ...], tuple[tuple[str, Any], ...]]

# Called with (name, args, kwargs) for a design the table lacks (scripts/make_sos_table.py
# records them); None normally.
on_table_miss: Callable[[str, tuple[Any, ...], dict[str, Any]], None] | None = None


MIRRORED = scipy.__version__ == SCIPY  # False: every call goes to scipy.signal


def scipy_signal() -> ModuleType:
    return importlib.import_module("scipy.signal")


def _frozen(value: Any) -> Any:
    """A hashable form of a design argument in which 4 and 4.0, or a list and an array of the
    same numbers, are the same key (scipy designs the same filter from them)."""
    if isinstance(value, str | bool) or value is None:
        return value
    if isinstance(value, np.ndarray | list | tuple):
        return tuple(_frozen(v) for v in np.asarray(value, dtype=np.float64).ravel())
    return float(value)


def design_key(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Design:
    return name, tuple(_frozen(a) for a in args), tuple(sorted(kwargs.items()))


_TABLE: dict[Design, Any] = {
    design_key(name, args, dict(kwargs)): result for name, args, kwargs, result in DESIGNS
}


def _designed(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        stored = _TABLE.get(design_key(name, args, kwargs)) if MIRRORED else None
    except (TypeError, ValueError):  # an argument the table cannot key: scipy decides
        stored = None
    if stored is None:
        if on_table_miss is not None:
            on_table_miss(name, args, kwargs)
        return getattr(scipy_signal(), name)(*args, **kwargs)
    if name == "iirnotch":  # (b, a)
        return tuple(np.array(part, dtype=np.float64) for part in stored)
    return np.array(stored, dtype=np.float64)


def butter(*args: Any, **kwargs: Any) -> Any:
    return _designed("butter", args, kwargs)


def iirnotch(*args: Any, **kwargs: Any) -> Any:
    return _designed("iirnotch", args, kwargs)


def tf2sos(*args: Any, **kwargs: Any) -> Any:
    return _designed("tf2sos", args, kwargs)


def sosfilt(*args: Any, **kwargs: Any) -> Any:
    return scipy_signal().sosfilt(*args, **kwargs)


def lfilter(*args: Any, **kwargs: Any) -> Any:
    return scipy_signal().lfilter(*args, **kwargs)


def _polyval(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    # scipy.signal._polyutils.npp_polyval (tensor=False): Horner from the highest power.
    c0 = np.broadcast_to(np.asarray(c[-1], dtype=np.result_type(c, x)), x.shape)
    for i in range(2, c.shape[0] + 1):
        c0 = c[-i] + c0 * x
    return c0


def sosfreqz(sos: np.ndarray, worN: Any = 512, whole: bool = False, fs: float = 2 * np.pi) -> Any:
    """scipy's `sosfreqz` (`freqz_sos`); numpy when `worN` lists the frequencies."""
    sos = np.asarray(sos)
    if (
        not MIRRORED
        or whole
        or not isinstance(worN, np.ndarray | list | tuple)
        or sos.ndim != 2
        or sos.shape[0] == 0
        or sos.shape[1] != 6
        or sos.dtype != np.float64
        or not np.all(sos[:, 3] == 1.0)
    ):
        return scipy_signal().sosfreqz(sos, worN=worN, whole=whole, fs=fs)
    fs = float(fs)
    h: Any = 1.0
    w = np.atleast_1d(np.asarray(worN, dtype=np.float64))
    for row in sos:
        b, a = row[:3], row[3:]
        wr = 2 * np.pi * w / fs  # scipy's freqz, section by section
        zm1 = np.exp(-1j * wr)
        h *= _polyval(zm1, b) / _polyval(zm1, a)
        w_out = wr * (fs / (2 * np.pi))
    return w_out, h


def _hann_periodic(m: int) -> np.ndarray:
    # scipy.signal.windows.general_cosine(m, [0.5, 0.5], sym=False), term by term.
    fac = np.linspace(-np.pi, np.pi, m + 1)[:-1]
    w = np.zeros(m)
    for k, a in enumerate((0.5, 0.5)):
        w += a * np.cos(k * fac)
    return w


def welch(x: Any, fs: float = 1.0, nperseg: int | None = None, **kwargs: Any) -> Any:
    """scipy's `welch`; numpy for 1-D float64 with the defaults (periodic Hann, half overlap,
    constant detrend, density, one-sided, mean) and `nperseg` at most the length."""
    x = np.asarray(x)
    if not MIRRORED or kwargs or x.ndim != 1 or x.dtype != np.float64 or nperseg is None:
        return scipy_signal().welch(x, fs=fs, nperseg=nperseg, **kwargs)
    n, nperseg = x.shape[0], int(nperseg)
    if not 1 < nperseg <= n:
        return scipy_signal().welch(x, fs=fs, nperseg=nperseg)
    # As scipy 1.17's csd through ShortTimeFFT: the window scaled to a density first (a Python
    # `sum`, as there), each segment's mean removed, then the one-sided periodogram.
    noverlap = nperseg // 2
    hop = nperseg - noverlap
    t = 1 / float(fs)
    win = _hann_periodic(nperseg)
    win = win * (1 / np.sqrt(sum(win.real**2 + win.imag**2) / t))
    n_seg = (n - noverlap) // hop
    spec = np.zeros((nperseg // 2 + 1, n_seg), dtype=complex)
    for p in range(n_seg):
        seg = x[p * hop : p * hop + nperseg]
        seg = seg - np.mean(seg, -1, keepdims=True)
        spec[:, p] = np.fft.rfft(seg * win.conj(), n=nperseg, axis=-1)
    pxx = spec.real**2 + spec.imag**2
    pxx[1 : -1 if nperseg % 2 == 0 else None, :] *= 2
    pxx = pxx.mean(axis=-1) if n_seg > 1 else pxx.reshape(pxx.shape[:-1])
    return np.fft.rfftfreq(nperseg, t), pxx


def _extension(name: str) -> ModuleType:
    """A compiled submodule of scipy without running its package's `__init__`.

    It goes into `sys.modules` under its own name, so that importing the package later uses
    this module object rather than initialising the extension a second time (which a compiled
    module may refuse). The package, imported later, then lacks it as an attribute:
    `from scipy.signal._sosfilt import ...` works, `scipy.signal._sosfilt` does not."""
    if name in sys.modules or name.rpartition(".")[0] in sys.modules:
        return importlib.import_module(name)
    top = importlib.util.find_spec(name.partition(".")[0])
    if top is None or not top.submodule_search_locations:
        raise ImportError(name)
    parts = name.split(".")[1:]
    for root in top.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(root, *parts[:-1], parts[-1] + suffix)
            if path.is_file():
                loader = importlib.machinery.ExtensionFileLoader(name, str(path))
                spec = importlib.util.spec_from_file_location(name, path, loader=loader)
                if spec is None:
                    raise ImportError(name)
                module = importlib.util.module_from_spec(spec)
                loader.exec_module(module)
                sys.modules[name] = module
                return module
    raise ImportError(name)


# A 2-section band-pass (scipy's butter(2, (20, 450), 'bandpass', fs=2000)) and a test signal.
_CHECK_SOS = (
    (0.23130797944426512, 0.46261595888853024, 0.23130797944426512, 1.0, -0.2286884193544206,
     0.20031197735137138),
    (1.0, -2.0, 1.0, 1.0, -1.9114061789087695, 0.915460900670784),
)  # fmt: skip


def reference_cascade(sos: np.ndarray, x: np.ndarray, state: np.ndarray) -> None:
    """Direct form II transposed, section after section, in Python: what scipy's `_sosfilt`
    computes, operation for operation (x (channels, n) and state (channels, sections, 2) in
    place)."""
    for c in range(x.shape[0]):
        for i in range(x.shape[1]):
            cur = float(x[c, i])
            for s in range(sos.shape[0]):
                b0, b1, b2, _, a1, a2 = (float(v) for v in sos[s])
                new = b0 * cur + float(state[c, s, 0])
                state[c, s, 0] = b1 * cur - a1 * new + float(state[c, s, 1])
                state[c, s, 1] = b2 * cur - a2 * new
                cur = new
            x[c, i] = cur


def kernel_agrees(kernel: SosKernel) -> bool:
    sos = np.array(_CHECK_SOS)
    x = np.sin(np.arange(128.0).reshape(2, 64) * 0.7) * 3.0 + 0.25
    state = np.zeros((2, sos.shape[0], 2))
    want_x, want_state = x.copy(), state.copy()
    reference_cascade(sos, want_x, want_state)
    try:
        kernel(sos, x, state)
    except (TypeError, ValueError):
        return False
    return bool(np.array_equal(x, want_x) and np.array_equal(state, want_state))


def load_sos_kernel() -> SosKernel | None:
    """scipy's C second-order-section cascade, if it loads and agrees with the Python one."""
    try:
        kernel: SosKernel = _extension("scipy.signal._sosfilt")._sosfilt
    except (ImportError, AttributeError, OSError):
        return None
    return kernel if kernel_agrees(kernel) else None
