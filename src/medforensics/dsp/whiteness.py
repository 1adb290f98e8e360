"""Noise *whiteness*: how far a block's residual correlation is from that of white noise.

A detector's noise is spatially correlated: the scintillator / phosphor spread, the CR
reader's optics and the image processing (smoothing, sharpening, resampling) shape it. Noise
that an editor *adds* to a filled-in area is usually drawn white (independent per pixel), and
a block cut from another device carries that device's correlation. This module measures, per
block, the lag-1 correlation of the high-pass residual (horizontal and vertical) as an offset
from the value white noise gives through the same kernel; the forgery cue built on it,
which compares every block with the image's own blocks at similar intensity, is
:mod:`medforensics.forgery.cues.whiteness`.

The correlations come from :func:`medforensics.dsp.noisetexture.texture_cell_sums` (sign
products of the residual, so they do not depend on the noise amplitude and an edge pixel
counts once), summed over ``cells_per_block`` x ``cells_per_block`` cells.

Images are real arrays of shape (H, W) in stored-value units; pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medforensics.dsp.noisetexture import (
    sign_to_pearson,
    texture_cell_sums,
    white_lag_correlation,
    window_sum,
)
from medforensics.errors import ConfigError

__all__ = ["LAG1", "BlockWhiteness", "block_whiteness"]

#: the residual lags (dy, dx) of the whiteness measure: one pixel across and one down
LAG1: tuple[tuple[int, int], ...] = ((0, 1), (1, 0))


@dataclass
class BlockWhiteness:
    """Output of :func:`block_whiteness` (blocks of ``cells_per_block`` cells, one-cell grid).

    Attributes:
        offset: float64 (nby, nbx): mean over the two lags of the residual's lag-1 Pearson
            correlation (from the mean sign product) minus the white-noise value of the
            kernel; about 0 for white noise, > 0 for blurred (low-pass) noise, < 0 for
            sharpened noise; NaN where a block has fewer than ``min_pairs`` pairs at a lag.
        pairs: int64 (nby, nbx): the smaller of the two lags' pair counts.
        cell: cell side in pixels; block ``(i, j)`` covers pixels
            ``[i * cell, (i + k) * cell) x [j * cell, (j + k) * cell)``.
        cells_per_block: ``k``.
    """

    offset: np.ndarray
    pairs: np.ndarray
    cell: int
    cells_per_block: int


def block_whiteness(image: np.ndarray, *, cell: int = 16, cells_per_block: int = 2,
                    kind: str = "kb", ignore: np.ndarray | None = None,
                    min_pairs: int = 256) -> BlockWhiteness:
    """Lag-1 residual correlation offset from white noise of every block.

    Args:
        image: (H, W) real array of stored values, H, W >= 2 * ``cell`` * ``cells_per_block``.
        cell: cell side in pixels (>= 4); blocks step by one cell.
        cells_per_block: block side in cells (>= 1).
        kind: high-pass kernel of the residual (``residuals.HIGHPASS_KERNELS``).
        ignore: optional bool (H, W), True = pixel left out of every pair (clipped pixels and
            their neighbours).
        min_pairs: blocks with fewer pairs at either lag get NaN.

    Returns:
        :class:`BlockWhiteness`.

    Raises:
        InvalidArrayError: image not 2-D, non-finite, too small, or ``ignore`` of another
            shape.
        ConfigError: bad ``cell``, ``cells_per_block`` or kernel.
    """
    k = int(cells_per_block)
    if k < 1:
        raise ConfigError(f"cells_per_block must be >= 1, got {cells_per_block}")
    cells = texture_cell_sums(image, cell=cell, kind=kind, ignore=ignore, lags=LAG1,
                              value_pairs=False)
    ncy, ncx = cells.prod.shape[:2]
    if k > min(ncy, ncx):
        raise ConfigError(f"cells_per_block must be in 1..{min(ncy, ncx)}, got {k}")
    prod = window_sum(cells.prod, k).astype(np.float64)
    pairs = window_sum(cells.pairs, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(pairs > 0, prod / np.maximum(pairs, 1), 0.0)
    rho = sign_to_pearson(tau) - white_lag_correlation(kind, LAG1)
    n = pairs.min(axis=2)
    offset = rho.mean(axis=2)
    offset[n < max(int(min_pairs), 1)] = np.nan
    return BlockWhiteness(offset=offset, pairs=n, cell=int(cell), cells_per_block=k)
