"""Seeded random streams of the simulator: every draw is reproducible from its indices.

A stream is ``numpy.random.default_rng((seed, purpose, indices...))``; ``purpose`` keeps the
streams of different quantities (a unit's gain pattern, an image's noise, ...) independent, so
that adding a device or an image never changes the draws of another.
"""

from __future__ import annotations

import numpy as np

# purposes of random streams (first entries of every seed sequence)
T_MFR, T_MODEL, T_UNIT, T_GAIN, T_COL, T_ROW, T_DEFECT = 11, 12, 13, 21, 22, 23, 24
T_DESIGN = 14
T_ASSIGN, T_PATIENT, T_STUDY, T_IMAGE, T_NOISE = 31, 32, 33, 34, 35
T_LOOK_IMAGE, T_LOOK_MATRIX = 51, 52


def stream(*key: int) -> np.random.Generator:
    """Generator seeded by ``key`` (each entry taken modulo 2**32)."""
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]))
