"""Orthogonal Daubechies wavelet transforms in plain NumPy (periodic boundary).

The filters are computed by spectral factorisation, so any number of vanishing moments
(1 = Haar, 2 = "db2"/D4, 4 = "db4", 8 taps) is available without a wavelet library. The
transform is the classic periodic two-channel filter bank: analysis and synthesis are exact
inverses (orthogonal) for every even length, so energy is preserved and white noise of
variance s^2 stays white with variance s^2 in every subband. Callers that need less
boundary wrap-around pad the image symmetrically first (see ``residuals.wavelet_noise``).

All functions are pure; arrays are float64.
"""

from __future__ import annotations

from functools import lru_cache
from math import comb, sqrt

import numpy as np

from medforensics.errors import ConfigError, InvalidArrayError

Subbands = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Detail subbands of one level: (horizontal-detail, vertical-detail, diagonal-detail)."""

_NAMED = {"haar": 1, "db1": 1, "db2": 2, "db3": 3, "db4": 4, "db5": 5, "db6": 6, "db8": 8}


@lru_cache(maxsize=16)
def _daubechies(n_moments: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if n_moments == 1:
        h = np.array([1.0, 1.0]) / sqrt(2.0)
    else:
        # P(y) = sum_k C(N-1+k, k) y^k with y = sin^2(w/2) = (2 - z - 1/z) / 4.
        p = [comb(n_moments - 1 + k, k) for k in range(n_moments)]
        ys = np.roots(p[::-1])
        zs = []
        for y in ys:
            b = 2.0 - 4.0 * y  # z^2 - b z + 1 = 0, roots are reciprocal; keep |z| < 1
            disc = np.sqrt(b * b - 4.0 + 0j)
            r1, r2 = (b + disc) / 2.0, (b - disc) / 2.0
            zs.append(r1 if abs(r1) < 1.0 else r2)
        poly = np.poly(zs) if zs else np.array([1.0])
        for _ in range(n_moments):
            poly = np.convolve(poly, [1.0, 1.0])
        h = np.real(poly)[::-1]
        h = h * (sqrt(2.0) / h.sum())
    g = np.array([(-1) ** k * h[len(h) - 1 - k] for k in range(len(h))])
    return tuple(float(v) for v in h), tuple(float(v) for v in g)


def daubechies_filters(wavelet: str | int = "db4") -> tuple[np.ndarray, np.ndarray]:
    """Low-pass and high-pass analysis filters of an orthogonal Daubechies wavelet.

    Args:
        wavelet: ``"haar"``, ``"db1"`` ... ``"db8"`` or the number of vanishing moments (1-10).

    Returns:
        ``(h, g)``: float64 arrays of length ``2 * n_moments``; ``sum(h) == sqrt(2)``,
        ``sum(h**2) == 1``, ``g[k] = (-1)**k h[L-1-k]``.

    Raises:
        ConfigError: unknown wavelet name or unsupported order.
    """
    n = _NAMED.get(wavelet) if isinstance(wavelet, str) else int(wavelet)
    if n is None or not 1 <= n <= 10:
        raise ConfigError(f"unknown wavelet {wavelet!r}; use 'haar', 'db2'..'db8' or 1..10")
    h, g = _daubechies(n)
    return np.array(h), np.array(g)


def _analysis_axis0(x: np.ndarray, h: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[0]
    base = np.arange(0, n, 2)
    a = np.zeros((n // 2,) + x.shape[1:])
    d = np.zeros_like(a)
    for k in range(len(h)):
        xs = x[(base + k) % n]
        a += h[k] * xs
        d += g[k] * xs
    return a, d


def _synthesis_axis0(a: np.ndarray, d: np.ndarray, h: np.ndarray, g: np.ndarray) -> np.ndarray:
    n = 2 * a.shape[0]
    base = np.arange(0, n, 2)
    x = np.zeros((n,) + a.shape[1:])
    for k in range(len(h)):
        x[(base + k) % n] += h[k] * a + g[k] * d  # indices distinct for fixed k
    return x


def dwt2(x: np.ndarray, wavelet: str | int = "db4") -> tuple[np.ndarray, Subbands]:
    """One level of the periodic orthogonal 2-D wavelet transform.

    Args:
        x: float array of shape (H, W) with H and W even.
        wavelet: see :func:`daubechies_filters`.

    Returns:
        ``(approx, (dh, dv, dd))``, each of shape (H/2, W/2): approximation, horizontal
        detail (high-pass across rows), vertical detail (high-pass across columns), diagonal.

    Raises:
        InvalidArrayError: not 2-D or odd size.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] % 2 or x.shape[1] % 2:
        raise InvalidArrayError(f"dwt2 needs a 2-D array with even sides, got {x.shape}")
    h, g = daubechies_filters(wavelet)
    lo, hi = _analysis_axis0(x.T, h, g)  # along columns (axis 1 of x)
    ll, lh = _analysis_axis0(lo.T, h, g)
    hl, hh = _analysis_axis0(hi.T, h, g)
    return ll, (lh, hl, hh)


def idwt2(approx: np.ndarray, details: Subbands, wavelet: str | int = "db4") -> np.ndarray:
    """Inverse of :func:`dwt2`: returns the (H, W) float64 array."""
    h, g = daubechies_filters(wavelet)
    lh, hl, hh = details
    lo = _synthesis_axis0(np.asarray(approx, dtype=np.float64), lh, h, g)
    hi = _synthesis_axis0(hl, hh, h, g)
    return _synthesis_axis0(lo.T, hi.T, h, g).T


def wavedec2(x: np.ndarray, levels: int, wavelet: str | int = "db4"
             ) -> tuple[np.ndarray, list[Subbands]]:
    """Multi-level decomposition.

    Args:
        x: float array (H, W); H and W must be divisible by ``2**levels``.
        levels: number of levels (>= 1).
        wavelet: see :func:`daubechies_filters`.

    Returns:
        ``(approx, details)`` where ``details[0]`` is the finest level.

    Raises:
        InvalidArrayError: sides not divisible by ``2**levels``.
        ConfigError: ``levels < 1``.
    """
    if levels < 1:
        raise ConfigError(f"levels must be >= 1, got {levels}")
    x = np.asarray(x, dtype=np.float64)
    step = 2 ** levels
    if x.ndim != 2 or x.shape[0] % step or x.shape[1] % step:
        raise InvalidArrayError(f"wavedec2 with {levels} levels needs a 2-D array with sides "
                                f"divisible by {step}, got {x.shape}")
    details: list[Subbands] = []
    a = x
    for _ in range(levels):
        a, d = dwt2(a, wavelet)
        details.append(d)
    return a, details


def waverec2(approx: np.ndarray, details: list[Subbands], wavelet: str | int = "db4"
             ) -> np.ndarray:
    """Inverse of :func:`wavedec2` (``details[0]`` finest)."""
    a = approx
    for d in reversed(details):
        a = idwt2(a, d, wavelet)
    return a
