"""What every kernel module shares: the jit options and numpy's summation constants."""

from __future__ import annotations

import numba
from numba import njit

# numpy's PW_BLOCKSIZE: up to this many values are summed with eight accumulators.
PAIRWISE_BLOCK = 128
# feedback.processing.onset's: the MAD of normal values times this estimates their SD;
# points this many robust SDs above the median are no rest (onset imports them from here
# only when compiled; a test checks the two agree).
MAD_TO_SD = 1.4826
OUTLIER_SPREADS = 5.0
# onset's too: a rest window whose on-threshold is below this share of the one in force
# replaces it.
RELEARN_RATIO = 0.5
# feedback.processing.quality.Flag's bits as the kernels write and read them (the kernels
# import nothing from outside this package; a test checks the two agree).
FLAT, CLIP, MAINS, MOTION = 1, 2, 4, 8

# Compiled once per machine and cached on disk; nogil: a station's other threads run meanwhile.
jit = njit(cache=True, nogil=True)


def numba_version() -> str:
    return str(numba.__version__)
