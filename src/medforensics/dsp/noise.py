"""Noise-level estimation: block noise-level maps and a Poisson-Gaussian noise fit.

* :func:`noise_level_map`: robust (MAD) standard deviation of a normalised high-pass
  residual in non-overlapping blocks. Spliced or retouched regions often have a noise level
  that differs from the rest of the image, so the map is a feature for forgery
  localisation; on an untouched detector image it follows the signal-dependent noise.
* :func:`fit_poisson_gaussian`: fits ``var = a * mean + b`` (photon/quantum noise plus
  electronic noise) from block means and block noise variances. ``a`` is the gain-like
  slope, ``b`` the signal-independent variance; both are optional per-image features
  (devices / processing chains differ in them).

Images are real arrays of shape (H, W) in stored-value units; pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medforensics.dsp._checks import as_image
from medforensics.dsp.residuals import highpass_residual
from medforensics.errors import ConfigError, InvalidArrayError

_MAD_TO_STD = 1.4826


def _blocks(a: np.ndarray, block: int) -> np.ndarray:
    """View (H, W) cropped to whole blocks as (nby, nbx, block*block)."""
    nby, nbx = a.shape[0] // block, a.shape[1] // block
    a = a[: nby * block, : nbx * block]
    return a.reshape(nby, block, nbx, block).transpose(0, 2, 1, 3).reshape(nby, nbx, -1)


def _check_block(img: np.ndarray, block: int) -> None:
    if block < 2:
        raise ConfigError(f"block must be >= 2, got {block}")
    if img.shape[0] < block or img.shape[1] < block:
        raise InvalidArrayError(f"image {img.shape} is smaller than one {block}x{block} block")


def noise_level_map(image: np.ndarray, block: int = 32, kind: str = "kb") -> np.ndarray:
    """Local noise standard deviation per non-overlapping block.

    Args:
        image: (H, W) real array, H, W >= ``block``.
        block: block side in pixels; trailing rows/columns that do not fill a block are
            ignored.
        kind: high-pass kernel (see ``residuals.HIGHPASS_KERNELS``), normalised so that
            white noise of std s gives s.

    Returns:
        float32 array (H // block, W // block): 1.4826 * MAD of the residual in each block
        (stored-value units). Texture inflates it; a flat white-noise image gives ~s.

    Raises:
        InvalidArrayError: image not 2-D or smaller than one block.
        ConfigError: block < 2 or unknown kernel.
    """
    img = as_image(image)
    _check_block(img, block)
    r = highpass_residual(img, kind, normalize=True).astype(np.float64)
    b = _blocks(r, block)
    med = np.median(b, axis=2, keepdims=True)
    return (_MAD_TO_STD * np.median(np.abs(b - med), axis=2)).astype(np.float32)


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
    img = as_image(image)
    _check_block(img, block)
    var = noise_level_map(img, block=block).astype(np.float64) ** 2
    means = _blocks(img, block).mean(axis=2)
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
