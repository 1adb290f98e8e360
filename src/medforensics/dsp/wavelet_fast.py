"""The periodic Daubechies transform of :mod:`medforensics.dsp.wavelet`, computed by PyWavelets.

Same coefficients as :func:`medforensics.dsp.wavelet.wavedec2` / ``waverec2`` (same filters,
same periodic boundary, same sample alignment, same subband order), computed by PyWavelets'
compiled filter bank in the input's precision. PyWavelets convolves where the NumPy version
correlates, and its periodic mode aligns the samples differently (by an offset that depends
on the filter length); the filters are therefore given reversed, and every level's input and
outputs are rolled by that offset, which makes the coefficients equal to those of the NumPy
version up to rounding (checked in the tests).

All functions are pure; float32 input gives float32 output (float64 otherwise).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pywt

from medforensics.dsp.wavelet import Subbands, daubechies_filters
from medforensics.errors import ConfigError, InvalidArrayError

_MODE = "periodization"


@lru_cache(maxsize=16)
def _wavelet(wavelet: str | int) -> pywt.Wavelet:
    h, g = daubechies_filters(wavelet)
    return pywt.Wavelet(f"medforensics-{wavelet}",
                        filter_bank=(h[::-1].tolist(), g[::-1].tolist(), h.tolist(), g.tolist()))


@lru_cache(maxsize=16)
def _shifts(wavelet: str | int) -> tuple[int, int]:
    """(input roll, output roll) aligning PyWavelets' periodic mode with the NumPy transform."""
    n = len(daubechies_filters(wavelet)[0]) // 2  # vanishing moments
    return (-1, 1 - n // 2) if n % 2 == 0 else (0, -(n - 1) // 2)


def _float(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x)
    return a if a.dtype == np.float32 else a.astype(np.float64, copy=False)


def _roll(x: np.ndarray, s: int) -> np.ndarray:
    return np.roll(x, (s, s), axis=(0, 1)) if s else x


def dwt2_fast(x: np.ndarray, wavelet: str | int = "db4") -> tuple[np.ndarray, Subbands]:
    """One level, as :func:`medforensics.dsp.wavelet.dwt2`.

    Args:
        x: float array (H, W), H and W even.
        wavelet: see :func:`medforensics.dsp.wavelet.daubechies_filters`.

    Returns:
        ``(approx, (dh, dv, dd))``, each (H/2, W/2), in the input's precision.

    Raises:
        InvalidArrayError: not 2-D or odd size.
        ConfigError: unknown wavelet.
    """
    a = _float(x)
    if a.ndim != 2 or a.shape[0] % 2 or a.shape[1] % 2:
        raise InvalidArrayError(f"dwt2 needs a 2-D array with even sides, got {a.shape}")
    si, so = _shifts(wavelet)
    ca, (ch, cv, cd) = pywt.dwt2(_roll(a, si), _wavelet(wavelet), mode=_MODE)
    return _roll(ca, so), (_roll(ch, so), _roll(cv, so), _roll(cd, so))


def idwt2_fast(approx: np.ndarray, details: Subbands, wavelet: str | int = "db4") -> np.ndarray:
    """Inverse of :func:`dwt2_fast`: the (H, W) array in the coefficients' precision."""
    a = _float(approx)
    si, so = _shifts(wavelet)
    d = tuple(_roll(_float(b).astype(a.dtype, copy=False), -so) for b in details)
    out = pywt.idwt2((_roll(a, -so), d), _wavelet(wavelet), mode=_MODE)
    return _roll(out.astype(a.dtype, copy=False), -si)


def wavedec2_fast(x: np.ndarray, levels: int, wavelet: str | int = "db4"
                  ) -> tuple[np.ndarray, list[Subbands]]:
    """Multi-level decomposition, as :func:`medforensics.dsp.wavelet.wavedec2`.

    Args:
        x: float array (H, W); H and W divisible by ``2**levels``.
        levels: number of levels (>= 1).
        wavelet: see :func:`medforensics.dsp.wavelet.daubechies_filters`.

    Returns:
        ``(approx, details)``, ``details[0]`` the finest level; the input's precision.

    Raises:
        InvalidArrayError: sides not divisible by ``2**levels``.
        ConfigError: ``levels < 1`` or unknown wavelet.
    """
    if levels < 1:
        raise ConfigError(f"levels must be >= 1, got {levels}")
    a = _float(x)
    step = 2 ** levels
    if a.ndim != 2 or a.shape[0] % step or a.shape[1] % step:
        raise InvalidArrayError(f"wavedec2 with {levels} levels needs a 2-D array with sides "
                                f"divisible by {step}, got {a.shape}")
    details: list[Subbands] = []
    for _ in range(levels):
        a, d = dwt2_fast(a, wavelet)
        details.append(d)
    return a, details


def waverec2_fast(approx: np.ndarray, details: list[Subbands], wavelet: str | int = "db4"
                  ) -> np.ndarray:
    """Inverse of :func:`wavedec2_fast` (``details[0]`` finest)."""
    a = _float(approx)
    for d in reversed(details):
        a = idwt2_fast(a, d, wavelet)
    return a
