"""Noise whiter than the image's own (the ``whiteness`` cue).

A detector's noise is spatially correlated (scintillator or phosphor spread, CR optics,
processing), so the high-pass residual's lag-1 correlation sits away from the value white
noise gives (:mod:`medforensics.dsp.whiteness`). An area that was filled in and given
*white* noise to match the surrounding noise level - the usual way to hide a removal, and
invisible to the noise-level cue because the level was matched - has the white value there.
A block pasted from a device with less correlated noise looks the same.

Per 32-px block on a 16-px grid (``cell`` x ``cells_per_block``):

1. blocks are left out as in the texture cue: touching a large clipped area, more than
   ``max_clipped`` clipped (or next to clipped), more than ``max_flat`` noiseless, fewer than
   ``min_pairs`` residual pairs, or strong content (``max_structure`` x the image's median
   content contrast: edges and fine structure raise the correlation by themselves, so
   textured blocks are neither judged nor part of the reference);
2. the reference ``r`` of a block is the running median of the offset over the scored blocks
   ranked by mean intensity (window: ``window_fraction`` of them): quantisation and
   processing make the noise's correlation depend on intensity;
3. the block's shift *towards white* is measured one-sided and capped at white:
   ``t = |r| - max(sign(r) * w, 0)`` (``w`` the block's offset), i.e. how much of the
   image's correlation at that intensity the block has lost; ``z = t / s``, ``s`` the robust
   scale (1.4826 MAD, at least ``scale_floor``) of ``w - r`` over the scored blocks. Where the
   image's own noise is about white (``|r| < min_offset``) nothing can be whiter, and the
   block gets ``z = 0``;
4. ``cue = sigmoid(slope * (z - z_thr))``, averaged per cell over the scored blocks covering
   it, expanded to pixels and grey-opened with a ``min_extent`` square (an anomaly must fill
   2 x 2 cells).

It sees nothing in images whose noise is white (many MR reconstructions, some simulated
devices) and nothing of an added noise that was correlated like the device's. Memory: one
float32 residual and per-cell counts, as the texture cue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from medforensics.dsp.noise import block_means
from medforensics.dsp.noisetexture import window_sum
from medforensics.dsp.whiteness import block_whiteness
from medforensics.errors import InvalidArrayError
from medforensics.forgery.cues.noise import _block_counts, scoring_masks, sigmoid
from medforensics.forgery.cues.registry import (
    CueContext,
    CueOutput,
    register_cue,
    signature_defaults,
)
from medforensics.forgery.cues.texture import (
    _block_structure,
    _blocks_to_pixels,
    _checked_input,
    _running_median,
)

__all__ = ["WhitenessInconsistency", "whiteness_inconsistency_map"]


@dataclass
class WhitenessInconsistency:
    """Output of :func:`whiteness_inconsistency_map`.

    Attributes:
        map: float32 (H, W) in [0, 1], the cue (0.5 at ``z = z_thr``; 0 where not scored).
        z: float32 (H, W): per pixel, the mean whitening score of the scored blocks covering
            it (0 where none).
        n_blocks: number of scored blocks.
        reference: median over the scored blocks of the image's own offset ``|r|`` (how far
            its noise is from white; 0 when nothing was scored).
    """

    map: np.ndarray
    z: np.ndarray
    n_blocks: int
    reference: float


def whitening_z(w: np.ndarray, ref: np.ndarray, *, scale_floor: float = 0.02,
                min_offset: float = 0.05) -> np.ndarray:
    """One-sided score of how much whiter than its reference every block's noise is.

    Args:
        w: float (n,) the blocks' lag-1 offsets from white (:func:`block_whiteness`).
        ref: float (n,) the reference offset at each block's intensity.
        scale_floor: smallest robust scale of ``w - ref``.
        min_offset: references closer to white than this give 0.

    Returns:
        float64 (n,): ``(|ref| - max(sign(ref) * w, 0)) / scale`` (>= 0 means whiter than the
        reference, at most ``|ref| / scale`` for a white block), 0 where ``|ref| <
        min_offset``.
    """
    w = np.asarray(w, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    d = w - ref
    if d.size == 0:
        return np.zeros(0)
    scale = max(1.4826 * float(np.median(np.abs(d - np.median(d)))), float(scale_floor))
    toward = np.maximum(np.sign(ref) * w, 0.0)
    z = (np.abs(ref) - toward) / scale
    return np.where(np.abs(ref) >= min_offset, z, 0.0)


def whiteness_inconsistency_map(
    pixels: np.ndarray,
    *,
    cell: int = 16,
    cells_per_block: int = 2,
    kind: str = "kb",
    z_thr: float = 4.0,
    slope: float = 2.0,
    window_fraction: float = 0.05,
    min_pairs: int = 256,
    max_flat: float = 0.25,
    max_clipped: float = 0.5,
    large_clipped: int = 4096,
    max_structure: float = 4.0,
    sub_block: int = 4,
    min_blocks: int = 32,
    scale_floor: float = 0.02,
    min_offset: float = 0.05,
    min_extent: int = 32,
) -> WhitenessInconsistency:
    """Per-pixel "noise whiter than the image's own" cue (see module docs).

    Args:
        pixels: float (H, W) stored values (``read_image`` contract), H, W >= 4 * ``cell``.
        cell: grid step / cell side in pixels.
        cells_per_block: block side in cells.
        kind: high-pass kernel of the residual.
        z_thr: whitening score at which the cue is 0.5.
        slope: logistic slope per unit of z.
        window_fraction: running-median window as a share of the scored blocks.
        min_pairs: smallest number of residual pairs per lag for a block to be scored.
        max_flat: blocks with more than this share of exactly-zero residuals are not scored.
        max_clipped: blocks with more than this share of clipped (or next-to-clipped) pixels
            are not scored; the others are measured on their unclipped pixels.
        large_clipped: blocks touching a connected clipped area of this many pixels are not
            scored (0 = no such rule).
        max_structure: > 0 = blocks whose content contrast (RMS curvature of their
            ``sub_block`` sub-block means over the sub-block noise std) exceeds this multiple
            of the median over the image's blocks are not scored (correlated noise raises
            every block's contrast, content only some).
        sub_block: sub-block side of the content contrast (divides ``cell``).
        min_blocks: fewer scored blocks than this give an all-zero map.
        scale_floor: smallest robust scale of the offsets' deviations.
        min_offset: the image's reference must be at least this far from white.
        min_extent: grey opening of the map with this square (0 = none).

    Returns:
        :class:`WhitenessInconsistency`.

    Raises:
        InvalidArrayError: image not 2-D, non-finite or smaller than 4 x 4 cells.
        ConfigError: bad parameters.
    """
    img = _checked_input(pixels, cell=cell, cells_per_block=cells_per_block,
                         expected="binned")
    H, W = img.shape
    clipped, flat, ign, hard = scoring_masks(img, max_clipped=max_clipped,
                                             large_clipped=large_clipped)
    k = cells_per_block
    ign_px = ign if (ign is not None or max_clipped > 0) else clipped
    bw = block_whiteness(img, cell=cell, cells_per_block=k, kind=kind, ignore=ign_px,
                         min_pairs=min_pairs)
    w = bw.offset
    bpix = (cell * k) ** 2
    n_ign = (window_sum(_block_counts(ign_px, cell), k) if ign_px is not None
             else np.zeros(w.shape))
    n_flat = window_sum(_block_counts(flat, cell), k)
    bad = n_ign > max_clipped * bpix if max_clipped > 0 else n_ign > 0
    if hard is not None:
        bad |= window_sum(_block_counts(hard, cell), k) > 0
    bad |= (n_flat > max_flat * np.maximum(bpix - n_ign, 1)) | ~np.isfinite(w)
    del clipped, flat, ign, hard
    good = ~bad
    if max_structure > 0 and int(good.sum()) >= min_blocks:
        # relative to the image's typical block: correlated noise raises every block's
        # contrast measure, content only some
        lc = _block_structure(img, cell, k, sub_block, ign_px)
        good &= lc <= float(np.median(lc[good])) + np.log(max_structure)
    ncy, ncx = H // cell, W // cell
    zero = np.zeros((H, W), np.float32)
    if int(good.sum()) < min_blocks:
        return WhitenessInconsistency(zero, zero.copy(), 0, 0.0)
    bmean = window_sum(block_means(img[: ncy * cell, : ncx * cell], cell), k) / (k * k)
    ref = _running_median(w[good], bmean[good], window_fraction)
    zb = np.zeros(w.shape)
    zb[good] = whitening_z(w[good], ref, scale_floor=scale_floor, min_offset=min_offset)
    pb = np.where(good, sigmoid(slope * (zb - z_thr)), 0.0)
    cue, z_px = _blocks_to_pixels(pb, zb, good, k=k, cell=cell, shape=(H, W),
                                  n_cells=(ncy, ncx))
    if min_extent > 1:
        cue = ndimage.grey_opening(cue, size=(min_extent, min_extent))
    return WhitenessInconsistency(cue, z_px, int(good.sum()), float(np.median(np.abs(ref))))


@register_cue("whiteness", rank=35, defaults=signature_defaults(whiteness_inconsistency_map))
def _whiteness_cue(img: np.ndarray, ctx: CueContext, params: Mapping[str, Any]) -> CueOutput:
    """The registered ``whiteness`` cue: :func:`whiteness_inconsistency_map`.

    Left out on lossy inputs unless named explicitly: lossy coding removes and reshapes the
    fine noise whose correlation the cue reads.
    """
    if ctx.lossy and not ctx.explicit:
        return CueOutput(notes=[("whiteness cue skipped: lossy coding reshapes the fine "
                                 "noise whose correlation it reads")])
    try:
        wi = whiteness_inconsistency_map(img, **params)
    except InvalidArrayError as exc:  # too small an image etc.: skip this cue, say so
        return CueOutput(notes=[f"whiteness cue skipped: {exc}"])
    return CueOutput(maps={"whiteness": wi.map}, result=wi,
                     details={"n_blocks": wi.n_blocks, "reference": wi.reference})
