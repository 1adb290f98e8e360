"""Noise-level estimation: block noise-level maps and a Poisson-Gaussian noise fit.

* :func:`noise_level_map`: robust (MAD) standard deviation of a normalised high-pass
  residual in non-overlapping blocks. Spliced or retouched regions often have a noise level
  that differs from the rest of the image, so the map is a feature for forgery
  localisation; on an untouched detector image it follows the signal-dependent noise.
* :func:`residual_strips`: the high-pass residual of :func:`dsp.residuals.highpass_residual`
  computed in horizontal strips (bit-identical, but the float64 working copies are one strip
  at a time: what keeps a 4000 x 5000 image's forgery analysis within its memory budget).
* :func:`fit_poisson_gaussian`: fits ``var = a * mean + b`` (photon/quantum noise plus
  electronic noise) from block means and block noise variances. ``a`` is the gain-like
  slope, ``b`` the signal-independent variance; both are optional per-image features
  (devices / processing chains differ in them).

Images are real arrays of shape (H, W) in stored-value units; pure functions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from medforensics.dsp._checks import as_image
from medforensics.dsp.residuals import HIGHPASS_KERNELS, highpass_residual
from medforensics.errors import ConfigError, InvalidArrayError

_MAD_TO_STD = 1.4826
#: default strip height (rows) of the strip-wise computations
STRIP_ROWS = 512


def residual_strips(image: np.ndarray, kind: str = "kb", *, normalize: bool = False,
                    rows: int = STRIP_ROWS) -> np.ndarray:
    """:func:`~medforensics.dsp.residuals.highpass_residual`, computed strip by strip.

    Each strip of ``rows`` rows is filtered together with the kernel's reach of rows above
    and below (the image's own mirror boundary only at its true top and bottom), so the
    result equals the whole-image residual exactly, while the float64 temporaries cover one
    strip instead of the whole image.

    Args:
        image: (H, W) real array (any dtype; float32 stays uncopied).
        kind: high-pass kernel name (``residuals.HIGHPASS_KERNELS``).
        normalize: divide by the kernel's L2 norm (see ``highpass_residual``).
        rows: strip height in rows (>= 1).

    Returns:
        float32 array (H, W).

    Raises:
        InvalidArrayError: image not 2-D or smaller than the kernel.
        ConfigError: unknown kernel or ``rows < 1``.
    """
    if kind not in HIGHPASS_KERNELS:
        raise ConfigError(f"unknown high-pass kernel {kind!r}; one of {sorted(HIGHPASS_KERNELS)}")
    if rows < 1:
        raise ConfigError(f"rows must be >= 1, got {rows}")
    arr = np.asarray(image)
    img = as_image(arr, dtype=np.float32 if arr.dtype == np.float32 else np.float64)
    H = img.shape[0]
    halo = max(HIGHPASS_KERNELS[kind].shape) // 2
    if H <= rows + 2 * halo:
        return highpass_residual(img, kind, normalize=normalize)
    out = np.empty(img.shape, np.float32)
    for y0 in range(0, H, rows):
        y1 = min(y0 + rows, H)
        b = min(y1 + halo, H)
        a = max(min(y0 - halo, b - 2 * halo - 1), 0)  # a thin strip takes more rows around
        b = max(b, min(a + 2 * halo + 1, H))
        out[y0:y1] = highpass_residual(img[a:b], kind, normalize=normalize)[y0 - a : y0 - a
                                                                           + (y1 - y0)]
    return out


def _blocks(a: np.ndarray, block: int) -> np.ndarray:
    """View (H, W) cropped to whole blocks as (nby, nbx, block*block)."""
    nby, nbx = a.shape[0] // block, a.shape[1] // block
    a = a[: nby * block, : nbx * block]
    return a.reshape(nby, block, nbx, block).transpose(0, 2, 1, 3).reshape(nby, nbx, -1)


def block_means(image: np.ndarray, block: int) -> np.ndarray:
    """Mean of every non-overlapping ``block x block`` block, computed in float64 strip by strip.

    Args:
        image: (H, W) real array (float32 stays uncopied).
        block: block side; trailing rows/columns that do not fill a block are ignored.

    Returns:
        float64 array (H // block, W // block).
    """
    arr = np.asarray(image)
    nby, nbx = arr.shape[0] // block, arr.shape[1] // block
    out = np.empty((nby, nbx), np.float64)
    per = max(1, STRIP_ROWS // block)
    for by0 in range(0, nby, per):
        by1 = min(by0 + per, nby)
        out[by0:by1] = _blocks(arr[by0 * block : by1 * block].astype(np.float64),
                               block).mean(axis=2)
    return out


def _check_block(img: np.ndarray, block: int) -> None:
    if block < 2:
        raise ConfigError(f"block must be >= 2, got {block}")
    if img.shape[0] < block or img.shape[1] < block:
        raise InvalidArrayError(f"image {img.shape} is smaller than one {block}x{block} block")


def noise_level_map(image: np.ndarray, block: int = 32, kind: str = "kb",
                    ignore: np.ndarray | None = None) -> np.ndarray:
    """Local noise standard deviation per non-overlapping block.

    Args:
        image: (H, W) real array, H, W >= ``block``.
        block: block side in pixels; trailing rows/columns that do not fill a block are
            ignored.
        kind: high-pass kernel (see ``residuals.HIGHPASS_KERNELS``), normalised so that
            white noise of std s gives s.
        ignore: optional bool (H, W), True = leave the pixel's residual out of its block's
            statistic (e.g. clipped pixels and their neighbours); a block with every pixel
            ignored gives NaN.

    Returns:
        float32 array (H // block, W // block): 1.4826 * MAD of the residual in each block
        (stored-value units). Texture inflates it; a flat white-noise image gives ~s.

    Raises:
        InvalidArrayError: image not 2-D or smaller than one block.
        ConfigError: block < 2 or unknown kernel.
    """
    img = np.asarray(image)
    img = as_image(img, dtype=np.float32 if img.dtype == np.float32 else np.float64)
    _check_block(img, block)
    if kind not in HIGHPASS_KERNELS:
        raise ConfigError(f"unknown high-pass kernel {kind!r}; one of {sorted(HIGHPASS_KERNELS)}")
    # strips of whole blocks; the residual is computed with the kernel's reach of rows around
    # each strip, so the result equals the whole-image computation (float64 in one strip only)
    halo = max(HIGHPASS_KERNELS[kind].shape) // 2
    H = img.shape[0]
    nby = H // block
    per = max(1, STRIP_ROWS // block)
    out = np.empty((nby, img.shape[1] // block), np.float32)
    for by0 in range(0, nby, per):
        by1 = min(by0 + per, nby)
        y0, y1 = by0 * block, by1 * block
        a, b = max(y0 - halo, 0), min(y1 + halo, H)
        r = highpass_residual(img[a:b], kind, normalize=True)[y0 - a : y1 - a]
        blk = _blocks(r.astype(np.float64), block)
        if ignore is not None:
            ign = _blocks(np.asarray(ignore[y0:y1], dtype=bool), block)
            if ign.any():
                rows = ign.any(axis=2)  # nanmedian (slow) only where needed
                sub = np.where(ign[rows], np.nan, blk[rows])
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    med_s = np.nanmedian(sub, axis=1, keepdims=True)
                    mad_s = np.nanmedian(np.abs(sub - med_s), axis=1)
                res = np.empty(blk.shape[:2])
                res[~rows] = np.median(np.abs(blk[~rows] - np.median(blk[~rows], axis=1,
                                                                     keepdims=True)), axis=1)
                res[rows] = mad_s
                out[by0:by1] = _MAD_TO_STD * res
                continue
        med = np.median(blk, axis=2, keepdims=True)
        out[by0:by1] = _MAD_TO_STD * np.median(np.abs(blk - med), axis=2)
    return out


@dataclass(frozen=True)
class PoissonGaussianFit:
    """Result of :func:`fit_poisson_gaussian`: noise variance ``var(mean) = a*mean + b``.

    Attributes:
        a: slope (stored-value units); > 0 for photon-limited detectors.
        b: intercept, variance at zero signal (may come out negative when the darkest
            levels are clipped).
        n_blocks: blocks used in the fit.
        bin_means: (n_bins,) median block mean of each intensity bin used.
        bin_vars: (n_bins,) median block noise variance of each bin.
    """

    a: float
    b: float
    n_blocks: int
    bin_means: np.ndarray
    bin_vars: np.ndarray

    def std_at(self, mean: np.ndarray | float) -> np.ndarray:
        """Noise std predicted at signal level(s) ``mean`` (clipped at 0 variance)."""
        return np.sqrt(np.maximum(self.a * np.asarray(mean, dtype=np.float64) + self.b, 0.0))


def fit_poisson_gaussian(image: np.ndarray, block: int = 16, n_bins: int = 16,
                         mask: np.ndarray | None = None, min_blocks_per_bin: int = 4
                         ) -> PoissonGaussianFit:
    """Fit the signal-dependent noise model ``var = a * mean + b`` to one image.

    Block means come from the image, block variances from the squared robust std of the
    normalised Ker-Boehme residual (insensitive to linear gradients). Blocks are grouped
    into ``n_bins`` equally populated intensity bins; the medians per bin are fitted by
    least squares weighted by the number of blocks, which damps textured outliers.

    Args:
        image: (H, W) real array, at least 2 blocks in each direction.
        block: block side in pixels.
        n_bins: number of intensity bins.
        mask: optional (H, W) bool array, True = usable pixel; blocks with any False pixel
            (e.g. saturated, collimator edge) are skipped.
        min_blocks_per_bin: bins with fewer blocks are ignored.

    Returns:
        :class:`PoissonGaussianFit`.

    Raises:
        InvalidArrayError: bad image/mask, or fewer than two usable bins (no spread of
            intensities to fit a line).
    """
    arr = np.asarray(image)
    img = as_image(arr, dtype=np.float32 if arr.dtype == np.float32 else np.float64)
    _check_block(img, block)
    var = noise_level_map(img, block=block).astype(np.float64) ** 2
    means = block_means(img, block)
    ok = np.ones_like(means, dtype=bool)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != img.shape:
            raise InvalidArrayError(f"mask shape {m.shape} differs from image shape {img.shape}")
        ok = _blocks(m, block).all(axis=2)
    means, var = means[ok], var[ok]
    if means.size < 2 * min_blocks_per_bin:
        raise InvalidArrayError(f"only {means.size} usable blocks; need more to fit noise")
    order = np.argsort(means)
    groups = np.array_split(order, min(n_bins, means.size // min_blocks_per_bin))
    bm, bv, wt = [], [], []
    for g in groups:
        if g.size >= min_blocks_per_bin:
            bm.append(np.median(means[g]))
            bv.append(np.median(var[g]))
            wt.append(g.size)
    bm_a, bv_a, w = np.array(bm), np.array(bv), np.sqrt(np.array(wt, dtype=np.float64))
    if bm_a.size < 2 or np.ptp(bm_a) <= 0:
        raise InvalidArrayError("image intensities do not spread enough to fit a noise line")
    design = np.stack([bm_a, np.ones_like(bm_a)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design * w[:, None], bv_a * w, rcond=None)
    return PoissonGaussianFit(float(a), float(b), int(means.size), bm_a, bv_a)
