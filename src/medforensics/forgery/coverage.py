"""How much of an image the forgery cues can read: the share of it that carries measurable noise.

Every training-free cue reads the noise left by the acquisition: copy-moves repeat it, splices
and fills change its level or shape, pastes break it along a seam. Where an image has none -
a constant or clipped (saturated, collimated) area, a synthetic ramp or gradient, burned-in
graphics - no cue can see an edit, and "no evidence of tampering" there says nothing. The
detector therefore measures the **covered fraction** first and answers ``inconclusive``
rather than ``authentic`` when too little of the image can be read
(:data:`MIN_COVERED_FRACTION`, :data:`MIN_COVERED_PX`).

A 16 x 16 block counts as covered when at most half of its pixels sit at the image's minimum
or maximum (clipped), and its high-pass residual (Ker-Boehme 3 x 3 prediction error) over
the other pixels is noise-like: at least :data:`MIN_LOUD` of the values of magnitude 1 or
more, and at least :data:`MIN_DISTINCT` distinct values. A constant area and a linear ramp
have a zero residual; a ramp or smooth gradient rounded to integers has a residual made of
rounding errors only (standard deviation about 0.4 stored values, rarely reaching 1), which is
not acquisition noise. Noise of standard deviation 1 stored value passes easily (about half of
its residual values reach 1), noise well below that level is not measurable by the cues
either.

An image of noise and nothing else (:func:`noise_alone`, the source verdict's evidence rule
:func:`medforensics.data.transforms.content_span`) is fully covered, and a cue that fires
there (a copy of noise is unmistakable) is evidence; but the cues' silence is not: there is
no content an edit could have changed, so such an image is ``inconclusive``, never
``authentic``.
"""

from __future__ import annotations

import numpy as np

from medforensics.data.transforms import MIN_CONTENT_SPAN, content_span, noise_alone_reason
from medforensics.dsp.noise import STRIP_ROWS, residual_strips

__all__ = ["BLOCK", "MIN_COVERED_FRACTION", "MIN_COVERED_PX", "MIN_DISTINCT", "MIN_LOUD",
           "MIN_SIDE", "covered_fraction", "noise_alone", "noise_mask"]

#: side of the blocks whose noise is checked, in pixels
BLOCK = 16
#: a block's residual needs at least this many distinct values to count as noise
MIN_DISTINCT = 6
#: ... and at least this share of its values of magnitude >= 1 (more than rounding)
MIN_LOUD = 0.25
#: below this share of covered pixels an image is ``inconclusive`` instead of ``authentic``
MIN_COVERED_FRACTION = 0.05
#: ... and below this many covered pixels (a 64 x 64 px area: the cues' smallest window)
MIN_COVERED_PX = 64 * 64
#: images smaller than this on either side are not analysed (the cues' 64-px windows)
MIN_SIDE = 64


def _covered_blocks(img: np.ndarray, r: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """bool (H // BLOCK, W // BLOCK): which whole blocks carry measurable noise."""
    hb, wb = img.shape[0] // BLOCK, img.shape[1] // BLOCK
    x = img[:hb * BLOCK, :wb * BLOCK].reshape(hb, BLOCK, wb, BLOCK).transpose(0, 2, 1, 3)
    e = r[:hb * BLOCK, :wb * BLOCK].reshape(hb, BLOCK, wb, BLOCK).transpose(0, 2, 1, 3)
    x = x.reshape(hb, wb, BLOCK * BLOCK)
    e = e.reshape(hb, wb, BLOCK * BLOCK)
    clipped = (x <= lo) | (x >= hi)
    n_ok = (~clipped).sum(axis=-1)
    loud = ((np.abs(e) >= 1.0) & ~clipped).sum(axis=-1)
    # distinct residual values among unclipped pixels (clipped ones NaN, sorted last)
    vals = np.where(clipped, np.float32(np.nan), e)
    srt = np.sort(vals, axis=-1)
    distinct = (np.diff(srt, axis=-1) > 0).sum(axis=-1) + (n_ok > 0)
    return (n_ok >= BLOCK * BLOCK // 2) & (loud >= MIN_LOUD * n_ok) & (distinct >= MIN_DISTINCT)


def covered_fraction(pixels: np.ndarray) -> float:
    """Share of the image (0..1) in 16 x 16 blocks that carry measurable noise (module docs).

    Args:
        pixels: float (H, W) stored values (the ``read_image`` contract).

    Returns:
        The covered share of all pixels (0 for an image smaller than one block).
    """
    img = np.asarray(pixels, dtype=np.float32)
    H, W = img.shape
    if H < BLOCK or W < BLOCK:
        return 0.0
    lo, hi = float(img.min()), float(img.max())
    if lo == hi:
        return 0.0
    r = residual_strips(img, "kb")
    covered = 0
    step = (STRIP_ROWS // BLOCK) * BLOCK
    for y0 in range(0, (H // BLOCK) * BLOCK, step):
        y1 = min(y0 + step, (H // BLOCK) * BLOCK)
        covered += int(_covered_blocks(img[y0:y1], r[y0:y1], lo, hi).sum())
    return covered * BLOCK * BLOCK / float(H * W)


def noise_alone(pixels: np.ndarray) -> str | None:
    """Why an image is noise and nothing else, or None when it has content (module docs).

    Args:
        pixels: float (H, W) stored values, at least :data:`MIN_SIDE` px on each side.
    """
    span = content_span(pixels)
    if span >= MIN_CONTENT_SPAN:
        return None
    return (f"no edit found, but the image is {noise_alone_reason(span)}; there is no content "
            "an edit could have changed")


def noise_mask(pixels: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
    """bool (H, W): pixels in 16 x 16 blocks that carry measurable noise (module docs).

    The last partial row / column of blocks takes the value of a block aligned with the image
    edge. The copy-move cue matches only here: elsewhere identical residuals are repeated
    rounding patterns of a ramp or flat area, not copied noise.

    Args:
        pixels: float (H, W) stored values.
        residual: the Ker-Boehme residual of ``pixels`` when already computed.
    """
    img = np.asarray(pixels, dtype=np.float32)
    H, W = img.shape
    out = np.zeros((H, W), bool)
    if H < BLOCK or W < BLOCK:
        return out
    lo, hi = float(img.min()), float(img.max())
    if lo == hi:
        return out
    r = residual_strips(img, "kb") if residual is None else residual
    hb, wb = H // BLOCK, W // BLOCK
    step = (STRIP_ROWS // BLOCK) * BLOCK
    rows = [slice(y0, y0 + min(step, hb * BLOCK - y0)) for y0 in range(0, hb * BLOCK, step)]
    if H % BLOCK:
        rows.append(slice(H - BLOCK, H))
    for sl in rows:
        blocks = _covered_blocks(img[sl], r[sl], lo, hi)
        full = np.repeat(np.repeat(blocks, BLOCK, axis=0), BLOCK, axis=1)
        out[sl, :wb * BLOCK] = full
        if W % BLOCK:
            edge = _covered_blocks(img[sl, W - BLOCK:], r[sl, W - BLOCK:], lo, hi)
            out[sl, W - BLOCK:] |= np.repeat(edge, BLOCK, axis=0)[:, :1].repeat(BLOCK, axis=1)
    return out
