"""Display-rate decimation shared by the local dashboard's ring and the remote live stream.

Raw EMG keeps the largest excursion in each bin (spikes and artefacts stay visible), the envelope
the bin mean, the blanking mask whether any sample in the bin was blanked.
"""

from __future__ import annotations

import numpy as np


def decimate(
    raw: np.ndarray, env: np.ndarray, blank: np.ndarray, factor: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_ch, n = raw.shape
    bins = raw.reshape(n_ch, n // factor, factor)
    pick = np.abs(bins).argmax(axis=2)
    raw_d = np.take_along_axis(bins, pick[..., None], axis=2)[..., 0]
    env_d: np.ndarray = env.reshape(n_ch, n // factor, factor).mean(axis=2)
    blank_d: np.ndarray = np.asarray(blank.reshape(n // factor, factor).any(axis=1))
    return raw_d.astype(np.float32), env_d.astype(np.float32), blank_d
