"""Median and tail figures the way the notes quote them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def summary(values: Sequence[float], unit: str) -> dict[str, float | int | str]:
    a = np.asarray(values, dtype=float)
    return {
        "unit": unit,
        "n": int(a.size),
        "p50": round(float(np.percentile(a, 50)), 2),
        "p90": round(float(np.percentile(a, 90)), 2),
        "p99": round(float(np.percentile(a, 99)), 2),
        "max": round(float(a.max()), 2),
    }
