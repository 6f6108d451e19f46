"""Which path the per-block numeric steps take: the compiled kernels
(`feedback.processing.kernels`, numba) or the numpy/scipy reference they reproduce to the bit.

The kernels are loaded on first use, never at import: importing numba costs about 0.5 s
and `run_feedback.py --help`, the clinic logger or a filter design must not pay it. Without
numba, or with VMF_KERNELS=numpy in the environment, every step takes the numpy path, with
the same results. `reference_path()` forces the numpy path for the objects made inside it
(the benchmark and the tests compare both in one process).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

ENV = "VMF_KERNELS"  # "numpy": the reference path everywhere

_loaded: ModuleType | None = None
_tried = False
_forced_reference = 0


def kernels() -> ModuleType | None:
    """The compiled kernels module, or None for the numpy path."""
    global _loaded, _tried
    if _forced_reference or os.environ.get(ENV, "").lower() == "numpy":
        return None
    if not _tried:
        _tried = True
        try:
            _loaded = importlib.import_module("feedback.processing.kernels")
        except ImportError:  # numba not installed: the numpy path, same results
            _loaded = None
    return _loaded


@contextmanager
def reference_path() -> Iterator[None]:
    """Objects that pick their path inside this block take the numpy path."""
    global _forced_reference
    _forced_reference += 1
    try:
        yield
    finally:
        _forced_reference -= 1
