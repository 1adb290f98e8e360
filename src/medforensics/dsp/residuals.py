"""Noise residuals: W = I - F(I) with an edge-preserving denoiser F, and their clean-up.

The residual carries the sensor's fixed pattern (gain non-uniformity "PRNU", column/row
offsets, defects) plus random noise and whatever scene content the denoiser missed.

Which step to use when:

* :func:`noise_residual` with ``method="wavelet"`` (default): Mihcak-style locally adaptive
  Wiener filter on the detail subbands of an orthogonal wavelet transform (the denoiser of
  Lukas-Fridrich-Goljan PRNU work). Best content suppression.
  ``method="local_wiener"``: the same minimum-variance Wiener rule in the pixel domain with
  box windows; leaves clearly more scene content in the residual (on smooth
  anatomy-like content the residual correlates ~0.67 with the true noise vs ~0.93).
* :func:`zero_mean_rows_cols`: subtract column means, then row means. Removes the "linear
  pattern" (row/column readout offsets, line artefacts) that is largely shared by all
  detectors of the same design and would otherwise make different units correlate. Apply
  to every residual and every reference pattern used for *unit* identification (default
  in :func:`noise_residual`). Note that it also removes unit-specific column/row offsets;
  for unit identification the 2-D gain pattern is the reliable, unit-unique part. When
  part of the image is clipped (collimator, saturation) pass the usable-pixel ``mask``:
  the means are then taken over usable pixels, otherwise a column pattern such as
  anti-scatter-grid lines survives inside the field.
* :func:`wiener_fft`: Wiener filtering of the Fourier magnitude; flattens spectral peaks,
  i.e. periodic artefacts (anti-scatter-grid lines, JPEG 8x8 blocking, periodic readout
  interference) shared by many devices. Apply to *reference patterns* (done in
  :mod:`medforensics.source.units`), not to every query residual (it costs an FFT and the
  query's periodic content is decorrelated from a cleaned pattern anyway).
* :func:`highpass_residual`: fixed linear prediction-error filters (second-order
  differences, Ker-Boehme 3x3, SRM 5x5) for features, noise-level maps and CNN inputs.

All functions are pure; images are real arrays of shape (H, W) holding stored values
(any range, e.g. 12-16-bit); outputs are float32 of the same shape unless stated.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from scipy import ndimage

from medforensics.dsp._checks import as_image, same_shape
from medforensics.dsp.wavelet import daubechies_filters
from medforensics.dsp.wavelet_fast import wavedec2_fast, waverec2_fast
from medforensics.errors import ConfigError

DEFAULT_WINDOWS: tuple[int, ...] = (3, 5, 7, 9)

HIGHPASS_KERNELS: dict[str, np.ndarray] = {
    # second-order prediction errors x[j-1] - 2 x[j] + x[j+1] (horizontal / vertical)
    "d2h": np.array([[1.0, -2.0, 1.0]]),
    "d2v": np.array([[1.0], [-2.0], [1.0]]),
    "laplacian": np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]),
    # Ker-Boehme 3x3: prediction error of a pixel from its 8 neighbours
    "kb": np.array([[-1.0, 2.0, -1.0], [2.0, -4.0, 2.0], [-1.0, 2.0, -1.0]]) / 4.0,
    # SRM "square 5x5" third-order residual
    "srm5": np.array([[-1.0, 2.0, -2.0, 2.0, -1.0],
                      [2.0, -6.0, 8.0, -6.0, 2.0],
                      [-2.0, 8.0, -12.0, 8.0, -2.0],
                      [2.0, -6.0, 8.0, -6.0, 2.0],
                      [-1.0, 2.0, -2.0, 2.0, -1.0]]) / 12.0,
}


def robust_std(x: np.ndarray) -> float:
    """Median-absolute-deviation estimate of the standard deviation of ``x`` (any shape).

    Returns ``1.4826 * median(|x - median(x)|)``; 0.0 for an empty array.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def estimate_sigma(image: np.ndarray) -> float:
    """Global noise standard deviation (Donoho): robust std of the finest diagonal
    Haar subband, which holds almost no scene content.

    Coefficients of perfectly flat 2x2 blocks are left out: they come from clipped regions
    (collimator, saturation, burned-in background), which would otherwise drive the median
    to 0 in images that are largely clipped.

    Args:
        image: (H, W) real array, H, W >= 2.

    Returns:
        sigma in the image's units (stored values); 0.0 when every 2x2 block is flat. For
        signal-dependent (Poisson) noise this is a typical value over the image.
    """
    img = as_image(image, min_size=2, dtype=np.float32 if np.asarray(image).dtype
                   == np.float32 else np.float64)
    img = img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2]
    # finest Haar diagonal detail of each 2 x 2 block, ((x00 - x01) - (x10 - x11)) / 2,
    # in float64 from the block's four samples (no full-size float64 copy of the image)
    x00, x01 = img[0::2, 0::2], img[0::2, 1::2]
    x10, x11 = img[1::2, 0::2], img[1::2, 1::2]
    hh = (x00.astype(np.float64) - x01) - (x10.astype(np.float64) - x11)
    hh *= 0.5
    flat = (x00 == x01) & (x10 == x11) & (x00 == x10)
    return robust_std(hh[~flat])


def wiener_noise_part(x: np.ndarray, noise_var: float,
                      windows: Sequence[int] = DEFAULT_WINDOWS,
                      mode: str = "reflect") -> np.ndarray:
    """Noise part of ``x`` under a locally adaptive (minimum-variance) Wiener model.

    For each position the signal variance is ``max(mean(x^2 over window) - noise_var, 0)``,
    minimised over the window sizes (Mihcak et al.); the result is
    ``x * noise_var / (signal_var + noise_var)``: ~x where x looks like noise, ~0 on edges.

    Args:
        x: zero-mean coefficients (wavelet subband, Fourier magnitude ...), shape (h, w).
        noise_var: noise variance (> 0) in the units of ``x`` squared.
        windows: odd box sizes.
        mode: boundary mode for ``scipy.ndimage.uniform_filter``.

    Returns:
        array of ``x``'s shape: float32 for float32 ``x``, else float64.
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        x = x.astype(np.float64, copy=False)
    if noise_var <= 0:
        return np.zeros_like(x)
    energy = x * x
    sig = None
    for w in windows:
        v = ndimage.uniform_filter(energy, size=int(w), mode=mode)
        sig = v if sig is None else np.minimum(sig, v, out=sig)
    assert sig is not None
    nv = x.dtype.type(noise_var)
    sig -= nv
    np.maximum(sig, 0, out=sig)
    sig += nv
    np.divide(nv, sig, out=sig)
    sig *= x
    return sig


def _pad_for_levels(img: np.ndarray, levels: int, n_taps: int
                    ) -> tuple[np.ndarray, tuple[int, int]]:
    step = 2 ** levels
    margin = step
    out_shape = []
    for n in img.shape:
        m = max(n + 2 * margin, step * n_taps)
        out_shape.append(-(-m // step) * step)
    pads = [(margin, s - n - margin) for s, n in zip(out_shape, img.shape)]
    # symmetric padding may need several passes when the pad is longer than the image
    out = img
    while any(p[0] > 0 or p[1] > 0 for p in pads):
        step_pads = [(min(p[0], out.shape[i]), min(p[1], out.shape[i])) for i, p in enumerate(pads)]
        out = np.pad(out, step_pads, mode="symmetric")
        pads = [(p[0] - s[0], p[1] - s[1]) for p, s in zip(pads, step_pads)]
    return out, (margin, margin)


TILE_MARGIN = 128
"""Context (px, a multiple of 16) around each tile of :func:`wavelet_noise` when tiled."""


def wavelet_noise(image: np.ndarray, sigma: float, *, levels: int = 4, wavelet: str = "db4",
                  windows: Sequence[int] = DEFAULT_WINDOWS, tile: int | None = None,
                  margin: int = TILE_MARGIN) -> np.ndarray:
    """Noise component of an image by wavelet-domain adaptive Wiener filtering.

    Each detail subband of a ``levels``-level orthogonal decomposition is replaced by its
    Wiener noise part (:func:`wiener_noise_part` with variance ``sigma**2``); the
    approximation band is set to zero (it is scene). The image is padded symmetrically
    to a multiple of ``2**levels`` first and the result cropped back. The transform is
    :mod:`medforensics.dsp.wavelet_fast` (PyWavelets) in float32.

    With ``tile`` the image is processed in ``tile`` x ``tile`` pieces, each with ``margin``
    pixels of its neighbours as context (clipped at the image border), so the working memory
    is that of one piece whatever the image size. The pieces sit on the same dyadic grid as
    the whole image (``tile`` and ``margin`` are rounded up to multiples of ``2**levels``);
    the result differs from the untiled one only through the boundary handling of each
    piece's context (see the tests for the measured difference).

    Args:
        image: (H, W) real array, H, W >= 2.
        sigma: noise standard deviation in stored-value units (> 0).
        levels: decomposition levels (4 is standard).
        wavelet: see :func:`medforensics.dsp.wavelet.daubechies_filters`.
        windows: box sizes of the local variance estimate.
        tile: side of the pieces in px, or None (default) for the whole image at once.
        margin: context around each piece in px.

    Returns:
        float32 array (H, W): the residual W = I - F(I).

    Raises:
        InvalidArrayError: not 2-D, too small or non-finite.
        ConfigError: ``tile`` < 1 or ``margin`` < 0.
    """
    img = as_image(image, min_size=2, dtype=np.float32)
    step = 2 ** levels
    if tile is not None:
        if tile < 1 or margin < 0:
            raise ConfigError(f"tile must be >= 1 and margin >= 0, got {tile}, {margin}")
        t = -(-int(tile) // step) * step
        m = -(-int(margin) // step) * step
        H, W = img.shape
        if H > t or W > t:
            out = np.empty(img.shape, dtype=np.float32)
            for r0 in range(0, H, t):
                for c0 in range(0, W, t):
                    r1, c1 = min(r0 + t, H), min(c0 + t, W)
                    y0, x0 = max(r0 - m, 0), max(c0 - m, 0)
                    ctx = img[y0:min(r1 + m, H), x0:min(c1 + m, W)]
                    res = wavelet_noise(ctx, sigma, levels=levels, wavelet=wavelet,
                                        windows=windows)
                    out[r0:r1, c0:c1] = res[r0 - y0:r1 - y0, c0 - x0:c1 - x0]
            return out

    n_taps = len(daubechies_filters(wavelet)[0])
    padded, (r0, c0) = _pad_for_levels(img, levels, n_taps)
    approx, details = wavedec2_fast(padded, levels, wavelet)
    del padded
    nv = float(sigma) ** 2
    for i, d in enumerate(details):
        details[i] = tuple(wiener_noise_part(b, nv, windows) for b in d)  # type: ignore[assignment]
    approx[...] = 0.0
    res = waverec2_fast(approx, details, wavelet)
    return np.ascontiguousarray(res[r0:r0 + img.shape[0], c0:c0 + img.shape[1]])


def denoise_local_wiener(image: np.ndarray, sigma: float,
                         windows: Sequence[int] = DEFAULT_WINDOWS) -> np.ndarray:
    """Pixel-domain minimum-variance local Wiener denoiser F(I).

    For each window size the local mean and variance are computed with box filters; per
    pixel the window with the smallest variance is used and
    ``F = mean + max(var - sigma^2, 0) / var * (I - mean)``.

    Args:
        image: (H, W) real array.
        sigma: noise standard deviation (stored-value units).
        windows: odd box sizes.

    Returns:
        float64 array (H, W), the denoised image.
    """
    img = as_image(image, min_size=2)
    best_var = np.full(img.shape, np.inf)
    best_mean = np.zeros(img.shape)
    for w in windows:
        m = ndimage.uniform_filter(img, size=int(w), mode="reflect")
        v = np.maximum(ndimage.uniform_filter(img * img, size=int(w), mode="reflect") - m * m, 0.0)
        take = v < best_var
        best_var = np.where(take, v, best_var)
        best_mean = np.where(take, m, best_mean)
    nv = float(sigma) ** 2
    sig = np.maximum(best_var - nv, 0.0)
    gain = np.divide(sig, sig + nv, out=np.ones_like(sig), where=(sig + nv) > 0)
    return best_mean + gain * (img - best_mean)


def zero_mean_rows_cols(w: np.ndarray, mask: np.ndarray | None = None, *,
                        iterations: int = 3) -> np.ndarray:
    """Remove column means, then row means: every row and every column sums to zero.

    With a ``mask`` the means are taken over the usable pixels only and the unusable ones
    are set to 0. This matters when large regions are clipped (collimator, saturation):
    averaging their zeros into the column means would leave a scaled copy of any column
    pattern (e.g. anti-scatter grid lines) inside the field and a negative copy outside.
    Masked means do not decouple, so the two steps are alternated ``iterations`` times
    (rows are exactly zero-mean afterwards, columns very nearly).

    Args:
        w: (H, W) residual or pattern.
        mask: optional (H, W) bool, True = usable pixel.
        iterations: alternations of the masked column/row steps (ignored without mask).

    Returns:
        float32 array (H, W).

    Raises:
        InvalidArrayError: bad array or mask shape.
    """
    a = np.array(as_image(w, "residual", dtype=np.float32), dtype=np.float32, copy=True)
    if mask is None:
        a -= a.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
        a -= a.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
        return a
    m = np.asarray(mask, dtype=bool)
    same_shape(a, m, "residual, mask")
    np.multiply(a, m, out=a)
    n_col = np.maximum(m.sum(axis=0), 1).astype(np.float64)
    n_row = np.maximum(m.sum(axis=1), 1).astype(np.float64)
    for _ in range(max(1, iterations)):
        a -= (a.sum(axis=0, dtype=np.float64) / n_col).astype(np.float32)[None, :]
        np.multiply(a, m, out=a)
        a -= (a.sum(axis=1, dtype=np.float64) / n_row).astype(np.float32)[:, None]
        np.multiply(a, m, out=a)
    return a


def wiener_fft(w: np.ndarray, sigma: float | None = None,
               windows: Sequence[int] = DEFAULT_WINDOWS) -> np.ndarray:
    """Suppress periodic artefacts: adaptive Wiener filtering of the Fourier magnitude.

    The spectrum magnitude (scaled by ``1/sqrt(H*W)``, so white noise of std s has
    magnitudes of rms s) is passed through :func:`wiener_noise_part` with noise variance
    ``sigma**2``; isolated peaks far above that level (periodic patterns) are shrunk to the
    noise level, the phase is kept.

    Args:
        w: (H, W) residual or reference pattern.
        sigma: expected rms of the white part; default: the standard deviation of ``w``.
        windows: box sizes over the (wrapped) spectrum.

    Returns:
        float32 array (H, W).
    """
    a = as_image(w, "residual")
    f = np.fft.fft2(a)
    mag = np.abs(f) / np.sqrt(a.size)
    s = float(np.std(a)) if sigma is None else float(sigma)
    if s <= 0:
        return a.astype(np.float32)
    mag_f = wiener_noise_part(mag, s * s, windows, mode="wrap")
    scale = np.divide(mag_f, mag, out=np.zeros_like(mag), where=mag > 0)
    return np.real(np.fft.ifft2(f * scale)).astype(np.float32)


def noise_residual(image: np.ndarray, *, method: Literal["wavelet", "local_wiener"] = "wavelet",
                   sigma: float | None = None, levels: int = 4, wavelet: str = "db4",
                   zero_mean: bool = True, fft_filter: bool = False,
                   mask: np.ndarray | None = None, tile: int | None = None) -> np.ndarray:
    """Noise residual W = I - F(I) of one image (see module docstring for the options).

    Args:
        image: (H, W) real array of stored values, H, W >= 2.
        method: ``"wavelet"`` (default) or ``"local_wiener"``.
        sigma: noise std for the Wiener rule; default :func:`estimate_sigma` of the image.
        levels, wavelet: wavelet denoiser settings.
        zero_mean: apply :func:`zero_mean_rows_cols` (with ``mask``).
        fft_filter: apply :func:`wiener_fft`.
        mask: optional (H, W) bool, True = usable; unusable pixels (clipped) are 0 in the
            result and left out of the row/column means.
        tile: compute the wavelet denoiser in pieces of this side (bounded working memory;
            see :func:`wavelet_noise`); None = the whole image at once.

    Returns:
        float32 array (H, W), zero-mean, in stored-value units.

    Raises:
        InvalidArrayError: not 2-D, smaller than 2x2, non-finite values, bad mask shape.
        ConfigError: unknown method.
    """
    img = as_image(image, min_size=2, dtype=np.float32 if np.asarray(image).dtype
                   == np.float32 else np.float64)
    s = estimate_sigma(img) if sigma is None else float(sigma)
    if s <= 0:  # perfectly flat or noise-free image: nothing to separate
        s = max(float(np.std(img, dtype=np.float64)) * 1e-3, 1e-6)
    if method == "wavelet":
        res = wavelet_noise(img, s, levels=levels, wavelet=wavelet, tile=tile)
    elif method == "local_wiener":
        res = img - denoise_local_wiener(img.astype(np.float64), s)
    else:
        raise ConfigError(f"unknown residual method {method!r}; use 'wavelet' or 'local_wiener'")
    if zero_mean:
        out = zero_mean_rows_cols(res, mask)
    else:
        if mask is not None:
            m = np.asarray(mask, dtype=bool)
            same_shape(res, m, "image, mask")
            res = np.where(m, res - (res[m].mean() if m.any() else 0.0), 0.0)
        else:
            res = res - res.mean()
        out = res.astype(np.float32)
    if fft_filter:
        out = wiener_fft(out)
    return out


def highpass_residual(image: np.ndarray, kind: str = "kb", *, normalize: bool = False
                      ) -> np.ndarray:
    """Linear prediction-error residual (fixed high-pass filter, symmetric boundary).

    Args:
        image: (H, W) real array.
        kind: one of :data:`HIGHPASS_KERNELS` (``"d2h"``, ``"d2v"`` second-order
            differences, ``"laplacian"``, ``"kb"`` Ker-Boehme 3x3, ``"srm5"``).
        normalize: divide by the kernel's L2 norm, so that white noise of std s gives a
            residual of std s (what noise-level estimators want).

    Returns:
        float32 array (H, W).

    Raises:
        ConfigError: unknown kind.
    """
    if kind not in HIGHPASS_KERNELS:
        raise ConfigError(f"unknown high-pass kernel {kind!r}; one of {sorted(HIGHPASS_KERNELS)}")
    k = HIGHPASS_KERNELS[kind]
    img = as_image(image, min_size=max(k.shape))
    r = ndimage.correlate(img, k, mode="mirror")
    if normalize:
        r = r / float(np.sqrt((k * k).sum()))
    return r.astype(np.float32)
