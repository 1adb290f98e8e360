"""Noise-texture inconsistency: regions whose noise is *shaped* differently (the ``texture`` cue).

The noise-level cue (:mod:`medforensics.forgery.cues.noise`) sees a splice only when its
noise level differs from what the image shows at that intensity; a splice whose level was
matched (or happens to match) passes. Processing chains also differ in the *shape* of their
noise - detector / phosphor blur, CR scan direction, sharpening, gain steps after a rescale -
and the pasted region keeps its own. Per 32-px block on a 16-px grid this cue takes the
level-invariant features of :mod:`medforensics.dsp.noisetexture` and asks how far the block
lies from the image's *own* feature distribution:

1. blocks are left out as in the noise cue (:func:`~medforensics.forgery.cues.noise.
   scoring_masks`): touching a large clipped area, more than ``max_clipped`` of their pixels
   clipped (or next to a clipped pixel), more than ``max_flat`` noiseless, fewer than
   ``min_pairs`` residual pairs; and blocks with strong content (``max_structure``: RMS
   curvature of their 4-px sub-block means above 8 x the sub-block noise std - edges, skin
   lines, bone borders and burned-in graphics shape the residual's correlations as much as a
   device does);
2. ``expected="binned"`` (default): every feature minus its running median over the blocks
   ranked by mean intensity (window: ``window_fraction`` of the blocks), as the noise cue does
   for the noise level (quantisation and processing make the noise shape depend on intensity);
3. the six residual lag correlations: squared robust Mahalanobis distance from the image's
   blocks (:func:`robust_mahalanobis`), turned into a one-sided normal score by the
   Wilson-Hilferty transform ``z = ((d2 / p)^(1/3) - (1 - 2 / (9 p))) / sqrt(2 / (9 p))``;
4. the lattice share (``use_lattice``, integer data): relative to what the image's own value
   histogram allows (``relative_lattice``: a LUT that leaves some intensities on a coarse
   lattice is no anomaly there), and one-sided - only values on a *coarser* lattice than the
   image shows at that intensity (``z = (median - x) / max(1.4826 MAD, lattice_floor)``),
   the trace of a region gained up by > 1 and rounded; a block's score is the larger of the
   two;
5. ``cue = sigmoid(slope * (z - z_thr))`` (0.5 at ``z = z_thr``, default 10), averaged per 16-px
   cell over the blocks covering it, expanded to pixels and grey-opened with a ``min_extent``
   (32 px) square: an anomaly must fill 2 x 2 cells.

The image score is that of the other cues: :func:`medforensics.forgery.localize.image_score`
of the map with the ``SCORE_WINDOW`` mean filter. Memory: a float32 residual, int8 signs and
per-cell counts (its cost is in docs/performance.md).

What it sees and what not: devices whose noise has the same shape (white noise, as in most of
the simulated device models) are invisible to the correlation features; real devices differ
much more (blur, CR scan direction, processing). On real processed radiographs the
correlation features still respond to fine bone texture, and the lattice share to LUT combs
that vary within an image (docs/forgery.md has the cases).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from medforensics.dsp.noise import block_means, noise_level_map
from medforensics.dsp.noisetexture import (
    FEATURE_NAMES,
    block_texture_features,
    coarse_lattice_blocks,
    texture_cell_sums,
    window_sum,
)
from medforensics.dsp.residuals import highpass_residual
from medforensics.errors import ConfigError, InvalidArrayError
from medforensics.forgery.cues.noise import (
    _block_counts,
    _cells_to_pixels,
    scoring_masks,
    sigmoid,
)
from medforensics.forgery.cues.registry import (
    CueContext,
    CueOutput,
    register_cue,
    signature_defaults,
)
from medforensics.forgery.scoring import SCORE_WINDOW, image_score

__all__ = ["TextureInconsistency", "texture_inconsistency_map", "robust_mahalanobis"]

log = logging.getLogger(__name__)


@dataclass
class TextureInconsistency:
    """Output of :func:`texture_inconsistency_map`.

    Attributes:
        map: float32 (H, W) in [0, 1], the cue (0.5 at ``z = z_thr``; 0 where not scored).
        z: float32 (H, W): per pixel, the mean Wilson-Hilferty score of the scored blocks
            covering it (0 where none); ~N(0, 1) on blocks like the image's majority.
        score: image score (max of the ``SCORE_WINDOW`` mean-filtered map), in [0, 1].
        features: names of the feature channels used.
        n_blocks: number of scored blocks.
        n_coarse: number of blocks whose values sit on a coarse lattice (``coarse``) with
            ``z >= z_thr``.
        coarse_boxes: ``(x0, y0, x1, y1)`` pixel boxes (ends exclusive) of the connected groups
            of those blocks.
    """

    map: np.ndarray
    z: np.ndarray
    score: float
    features: tuple[str, ...]
    n_blocks: int
    n_coarse: int = 0
    coarse_boxes: tuple[tuple[int, int, int, int], ...] = ()


def robust_mahalanobis(x: np.ndarray, *, keep: float = 0.75, ridge: float = 1e-6
                       ) -> np.ndarray:
    """Squared Mahalanobis distance of every row from a robust centre and covariance.

    Centre: the coordinate-wise median. Covariance: of the ``keep`` share of rows nearest to the
    centre (by the distance under the full covariance), rescaled so that the median squared
    distance equals the chi-square median with ``p`` degrees of freedom; centre and covariance
    are then recomputed once on the rows that this first estimate puts within the chi-square
    97.5 % quantile. A ridge of ``ridge`` x the mean variance keeps it invertible.

    Args:
        x: float (n, p) with n > p, finite.
        keep: share of rows for the first covariance (0.5..1).
        ridge: relative ridge.

    Returns:
        float64 (n,) squared distances (>= 0); ~chi-square(p) for Gaussian rows.

    Raises:
        InvalidArrayError: not 2-D, not finite, or n <= p.
        ConfigError: ``keep`` outside [0.5, 1].
    """
    from scipy.stats import chi2

    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or not np.all(np.isfinite(a)):
        raise InvalidArrayError(f"x must be a finite (n, p) array, got shape {a.shape}")
    n, p = a.shape
    if n <= p:
        raise InvalidArrayError(f"need more rows than columns, got {n} x {p}")
    if not 0.5 <= keep <= 1.0:
        raise ConfigError(f"keep must be in [0.5, 1], got {keep}")
    med_chi = float(chi2.ppf(0.5, p))

    def dist(c: np.ndarray, cov: np.ndarray) -> np.ndarray:
        cov = cov + ridge * max(float(np.trace(cov)) / p, 1e-12) * np.eye(p)
        inv = np.linalg.pinv(cov)
        d = a - c
        return np.einsum("ij,jk,ik->i", d, inv, d)

    c = np.median(a, axis=0)
    d2 = dist(c, np.cov(a - c, rowvar=False).reshape(p, p))
    sel = d2 <= np.quantile(d2, keep)
    cov = np.cov(a[sel], rowvar=False).reshape(p, p)
    d2 = dist(c, cov)
    cov *= max(float(np.median(d2)) / med_chi, 1e-12)
    d2 = dist(c, cov)
    sel = d2 <= float(chi2.ppf(0.975, p))
    if sel.sum() > p + 1:
        c = a[sel].mean(axis=0)
        cov = np.cov(a[sel], rowvar=False).reshape(p, p)
        d2 = dist(c, cov)
        cov *= max(float(np.median(d2)) / med_chi, 1e-12)
        d2 = dist(c, cov)
    return np.maximum(d2, 0.0)


def _wilson_hilferty(d2: np.ndarray, p: int) -> np.ndarray:
    """Chi-square(p) values -> approximately standard normal scores (one-sided)."""
    v = 2.0 / (9.0 * p)
    return (np.cbrt(np.maximum(d2, 0.0) / p) - (1.0 - v)) / np.sqrt(v)


def _running_median(vals: np.ndarray, key: np.ndarray, window_fraction: float) -> np.ndarray:
    """Running median of ``vals`` (n,) over the rows ranked by ``key`` (n,), in the rows'
    order; window ``window_fraction`` of them (at least 25, odd)."""
    n = key.size
    order = np.argsort(key, kind="mergesort")
    k = max(25, int(window_fraction * n)) | 1
    k = min(k, n if n % 2 else max(n - 1, 1))
    out = np.empty(n, dtype=vals.dtype)
    out[order] = ndimage.median_filter(vals[order], size=k, mode="nearest")
    return out


def _running_median_residual(vals: np.ndarray, key: np.ndarray, window_fraction: float
                             ) -> np.ndarray:
    """``vals`` (n, F) minus their running median over the rows ranked by ``key`` (n,)."""
    out = np.empty_like(vals)
    for f in range(vals.shape[1]):
        out[:, f] = vals[:, f] - _running_median(vals[:, f], key, window_fraction)
    return out


def _block_structure(img: np.ndarray, cell: int, k: int, sub_block: int,
                     ignore: np.ndarray | None) -> np.ndarray:
    """log of every block's content contrast in units of its own noise.

    RMS of the normalised Ker-Boehme residual of the ``sub_block`` x ``sub_block`` sub-block
    means inside the block (content curvature at the sub-block scale; gradients give 0) over
    ``sigma / sub_block``, with ``sigma`` the median of the block's cells' robust noise levels
    (MAD of the normalised Ker-Boehme residual): ~1 for white noise (somewhat more for
    correlated noise), large at edges and structured content.

    Returns:
        float64 (ncy - k + 1, ncx - k + 1).
    """
    ncy, ncx = img.shape[0] // cell, img.shape[1] // cell
    sig = noise_level_map(img[: ncy * cell, : ncx * cell], block=cell,
                          ignore=None if ignore is None else ignore[: ncy * cell, : ncx * cell]
                          ).astype(np.float64)
    sig = np.nan_to_num(sig)
    q = cell // sub_block
    sm = block_means(img[: ncy * cell, : ncx * cell], sub_block)
    # curvature of the sub-block means (content at the sub-block scale, gradients removed)
    cur = highpass_residual(sm, "kb", normalize=True).astype(np.float64) ** 2
    cs = cur.reshape(ncy, q, ncx, q).sum(axis=(1, 3))
    nby, nbx = ncy - k + 1, ncx - k + 1
    tot = np.zeros((nby, nbx))
    sigs = []
    for dy in range(k):
        for dx in range(k):
            tot += cs[dy : dy + nby, dx : dx + nbx]
            sigs.append(sig[dy : dy + nby, dx : dx + nbx])
    s = np.median(np.stack(sigs), axis=0)
    rms = np.sqrt(tot / (k * k * q * q))
    return np.log(np.maximum(rms, 1e-9) / np.maximum(s / sub_block, 1e-9))


def texture_inconsistency_map(
    pixels: np.ndarray,
    *,
    cell: int = 16,
    cells_per_block: int = 2,
    kind: str = "kb",
    z_thr: float = 10.0,
    slope: float = 2.0,
    expected: str = "binned",
    window_fraction: float = 0.05,
    use_lattice: bool = True,
    min_pairs: int = 256,
    max_flat: float = 0.25,
    max_clipped: float = 0.5,
    large_clipped: int = 4096,
    min_extent: int = 32,
    keep: float = 0.75,
    lattice_floor: float = 0.02,
    relative_lattice: bool = True,
    structure: str = "none",
    max_structure: float = 8.0,
    sub_block: int = 4,
    min_blocks: int = 32,
    coarse: bool = True,
    coarse_max_ratio: float = 0.1,
    coarse_min_pixels: int = 64,
    coarse_min_distinct: int = 16,
    score_fn: Callable[[np.ndarray], float] | None = None,
) -> TextureInconsistency:
    """Per-pixel noise-texture inconsistency cue (see module docs).

    Args:
        pixels: float (H, W) stored values (``read_image`` contract), H, W >= 4 * ``cell``.
        cell: grid step / cell side in pixels.
        cells_per_block: block side in cells (block = ``cell * cells_per_block`` px).
        kind: high-pass kernel of the residual.
        z_thr: Wilson-Hilferty score at which the cue is 0.5.
        slope: logistic slope per unit of z.
        expected: ``"binned"`` (features minus their running median over intensity-ranked
            blocks) or ``"global"`` (the image's features as they are).
        window_fraction: running-median window as a share of the scored blocks.
        use_lattice: include the lattice share (integer-valued images only), scored on its own
            and one-sided: ``z = (median - lattice) / max(1.4826 MAD, lattice_floor)`` (values
            on a coarser lattice than the image shows at that intensity); a block's score is
            the larger of this and the correlation score.
        lattice_floor: smallest robust scale of the lattice share.
        relative_lattice: lattice share relative to what the image's own value histogram
            allows (see :func:`~medforensics.dsp.noisetexture.block_texture_features`): a LUT
            that leaves some intensities on a coarse lattice is not an anomaly there.
        min_pairs: smallest number of residual pairs per lag for a block to be scored.
        max_flat: blocks with more than this share of exactly-zero residuals are not scored.
        max_clipped: blocks with more than this share of clipped (or next-to-clipped) pixels
            are not scored; the others are measured on their unclipped pixels. 0 = blocks with
            any clipped pixel are not scored.
        large_clipped: blocks touching a connected clipped area of this many pixels are not
            scored (0 = no such rule).
        min_extent: grey opening of the map with this square (0 = none).
        keep: share of blocks of the first robust covariance (:func:`robust_mahalanobis`).
        structure: ``"condition"``: every feature minus its running median over the blocks
            ranked by content contrast (see ``max_structure``; edges and fine structure raise
            the residual's lag correlations); ``"none"``: not.
        max_structure: > 0 = blocks whose content contrast (RMS curvature of their
            ``sub_block`` sub-block means over the sub-block noise std, ~1 for white noise)
            exceeds it are not scored.
        sub_block: sub-block side of the content contrast (divides ``cell``).
        min_blocks: fewer scored blocks than this (or than 4 x the number of features) give an
            all-zero correlation / lattice part.
        coarse: integer data: also score the coarse-lattice evidence of
            :func:`~medforensics.dsp.noisetexture.coarse_lattice_blocks` (values scaled up by
            a gain of ~3 or more and rounded) on every block that passes the clipping rules -
            not the flat, structure or ``min_blocks`` rules, which protect the correlation
            estimates: a lattice is one whatever the content - where ``ratio <
            coarse_max_ratio``, the block has ``>= coarse_min_pixels`` pixels with a partner
            within +-2 and ``>= coarse_min_distinct`` distinct values (summed over its cells;
            a flat or constant block is no lattice); its ``z`` then enters like the other
            scores.
        coarse_max_ratio: largest share of the histogram-expected +-1..2 pairs a coarse block
            may keep.
        coarse_min_pixels: smallest number of pixels with a partner within +-2.
        coarse_min_distinct: smallest number of distinct values (sum over the cells).
        score_fn: image score of the map (default: ``localize.image_score`` with
            ``SCORE_WINDOW``).

    Returns:
        :class:`TextureInconsistency`.

    Raises:
        InvalidArrayError: image not 2-D, non-finite or smaller than 4 x 4 cells.
        ConfigError: bad parameters.
    """
    img = _checked_input(pixels, cell=cell, cells_per_block=cells_per_block, expected=expected)
    H, W = img.shape
    score_fn = score_fn or (lambda m: image_score(m, SCORE_WINDOW))
    clipped, flat, ign, hard = scoring_masks(img, max_clipped=max_clipped,
                                             large_clipped=large_clipped)
    k = cells_per_block
    bpix = (cell * k) ** 2
    if ign is None and max_clipped <= 0:
        ign_px = clipped  # no tolerance: any clipped pixel excludes the block (below)
    else:
        ign_px = ign
    cells = texture_cell_sums(img, cell=cell, kind=kind, ignore=ign_px, value_pairs=coarse)
    feats, npairs = block_texture_features(cells, cells_per_block=k, min_pairs=min_pairs,
                                           relative_lattice=relative_lattice)
    n_ign = (window_sum(_block_counts(ign_px, cell), k) if ign_px is not None
             else np.zeros(npairs.shape))
    n_flat = window_sum(_block_counts(flat, cell), k)
    n_use = np.maximum(bpix - n_ign, 1)
    # clipping rules (also for the coarse lattice), then the correlation-estimate rules
    clip_bad = n_ign > 0 if max_clipped <= 0 else n_ign > max_clipped * bpix
    if hard is not None:
        clip_bad |= window_sum(_block_counts(hard, cell), k) > 0
    bad = clip_bad | (n_flat > max_flat * n_use) | (npairs < min_pairs)
    del clipped, flat, ign, hard
    names = list(FEATURE_NAMES[: feats.shape[2] - 1])
    use = list(range(feats.shape[2] - 1))
    lat = feats[..., -1]
    if use_lattice and np.isfinite(lat[~bad]).all() and (~bad).any() and np.ptp(
            lat[~bad]) > 0:
        use.append(feats.shape[2] - 1)
        names.append(FEATURE_NAMES[-1])
    x = feats[..., use]
    good = (~bad) & np.isfinite(x).all(axis=2)
    ncy, ncx = cells.prod.shape[:2]
    enough = max(min_blocks, 4 * len(use))
    lc = None
    if int(good.sum()) >= enough and (structure != "none" or max_structure > 0):
        lc = _block_structure(img, cell, k, sub_block, ign_px)
        if max_structure > 0:
            good &= lc <= np.log(max_structure)
    if int(good.sum()) < enough:
        good[:] = False
    zb = np.zeros(good.shape)
    if good.any():
        xv = x[good]
        if structure == "condition" and lc is not None:
            xv = _running_median_residual(xv, lc[good], window_fraction)
        if expected == "binned":
            bmean = window_sum(block_means(img[: ncy * cell, : ncx * cell], cell), k) / (k * k)
            xv = _running_median_residual(xv, bmean[good], window_fraction)
        zb[good] = _feature_z(xv, "lattice" in names, len(use), keep=keep,
                              lattice_floor=lattice_floor)
    n_good = int(good.sum())
    coarse_ok = np.zeros(good.shape, bool)
    if coarse and cells.near12 is not None:
        cz, ratio, npix, distinct = coarse_lattice_blocks(cells, cells_per_block=k)
        coarse_ok = (~clip_bad & (ratio < coarse_max_ratio) & (npix >= coarse_min_pixels)
                     & (distinct >= coarse_min_distinct))
        zb = np.where(coarse_ok, np.maximum(zb, cz), zb)
        good = good | coarse_ok
    if not good.any():
        zero = np.zeros((H, W), np.float32)
        return TextureInconsistency(zero, zero.copy(), 0.0, tuple(names), n_good)
    pb = np.where(good, sigmoid(slope * (zb - z_thr)), 0.0)
    cue, z_px = _blocks_to_pixels(pb, zb, good, k=k, cell=cell, shape=(H, W),
                                  n_cells=(ncy, ncx))
    if min_extent > 1:
        cue = ndimage.grey_opening(cue, size=(min_extent, min_extent))
    strong = coarse_ok & (zb >= z_thr)
    return TextureInconsistency(cue, z_px, float(score_fn(cue)), tuple(names), n_good,
                                int(strong.sum()), _block_boxes(strong, cell, k, (H, W)))


def _checked_input(pixels: np.ndarray, *, cell: int, cells_per_block: int, expected: str
                   ) -> np.ndarray:
    """The image as float32 (kept) or float64, after the argument checks.

    Raises:
        InvalidArrayError: not 2-D, smaller than 4 x 4 cells, or non-finite.
        ConfigError: bad ``expected`` or ``cells_per_block``.
    """
    img = np.asarray(pixels)
    if img.ndim != 2:
        raise InvalidArrayError(f"expected a 2-D image, got shape {img.shape}")
    img = img.astype(np.float32 if img.dtype == np.float32 else np.float64, copy=False)
    if expected not in ("binned", "global"):
        raise ConfigError(f"expected must be 'binned' or 'global', got {expected!r}")
    if cells_per_block < 1:
        raise ConfigError(f"cells_per_block must be >= 1, got {cells_per_block}")
    H, W = img.shape
    if H < 4 * cell or W < 4 * cell:
        raise InvalidArrayError(f"image {H}x{W} too small for {cell}-px texture cells")
    if not np.all(np.isfinite(img)):
        raise InvalidArrayError("image contains NaN or infinite values")
    return img


def _feature_z(xv: np.ndarray, has_lattice: bool, n_features: int, *, keep: float,
               lattice_floor: float) -> np.ndarray:
    """Per scored block (rows of ``xv``, float (n, p)): the one-sided z of its features - the
    Wilson-Hilferty z of the correlations' robust Mahalanobis distance and, with the lattice
    feature (last column), the larger of that and the lattice's z."""
    n_corr = n_features - (1 if has_lattice else 0)
    d2 = robust_mahalanobis(xv[:, :n_corr], keep=keep)
    zv = _wilson_hilferty(d2, n_corr)
    if has_lattice:
        # one-sided: only *more* combed than the image at that intensity (values stretched
        # by a gain > 1 and rounded); a locally denser lattice is what LUTs and processing
        # give
        lat_v = xv[:, -1]
        med = float(np.median(lat_v))
        mad = max(1.4826 * float(np.median(np.abs(lat_v - med))), lattice_floor)
        zv = np.maximum(zv, (med - lat_v) / mad)
    return zv


def _blocks_to_pixels(pb: np.ndarray, zb: np.ndarray, good: np.ndarray, *, k: int, cell: int,
                      shape: tuple[int, int], n_cells: tuple[int, int]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Block cue ``pb`` and z ``zb`` to float32 (H, W) pixel maps: per cell the mean over the
    scored blocks covering it (block (i, j) covers cells i..i+k-1); pixels of the trailing
    partial cells take no value (0)."""
    H, W = shape
    ncy, ncx = n_cells
    acc_p = np.zeros((ncy, ncx))
    acc_z = np.zeros((ncy, ncx))
    cnt = np.zeros((ncy, ncx))
    nby, nbx = good.shape
    for dy in range(k):
        for dx in range(k):
            acc_p[dy : dy + nby, dx : dx + nbx] += pb
            acc_z[dy : dy + nby, dx : dx + nbx] += zb
            cnt[dy : dy + nby, dx : dx + nbx] += good
    with np.errstate(invalid="ignore", divide="ignore"):
        p_cell = np.where(cnt > 0, acc_p / np.maximum(cnt, 1.0), 0.0)
        z_cell = np.where(cnt > 0, acc_z / np.maximum(cnt, 1.0), 0.0)
    pc = np.zeros((-(-H // cell), -(-W // cell)))
    zc = np.zeros_like(pc)
    pc[:ncy, :ncx] = p_cell
    zc[:ncy, :ncx] = z_cell
    return _cells_to_pixels(pc, cell, H, W), _cells_to_pixels(zc, cell, H, W)


def _block_boxes(strong: np.ndarray, cell: int, k: int, shape: tuple[int, int]
                 ) -> tuple[tuple[int, int, int, int], ...]:
    """``(x0, y0, x1, y1)`` pixel boxes of the 8-connected groups of flagged blocks."""
    H, W = shape
    lbl, _ = ndimage.label(strong, structure=np.ones((3, 3), bool))
    return tuple((sl[1].start * cell, sl[0].start * cell, min((sl[1].stop + k - 1) * cell, W),
                  min((sl[0].stop + k - 1) * cell, H)) for sl in ndimage.find_objects(lbl))


@register_cue("texture", rank=30, defaults=signature_defaults(texture_inconsistency_map),
              lossy_defaults={"use_lattice": False, "coarse": False})
def _texture_cue(img: np.ndarray, ctx: CueContext, params: Mapping[str, Any]) -> CueOutput:
    """The registered ``texture`` cue: :func:`texture_inconsistency_map`.

    On lossy inputs the stored-value lattice features are off by default
    (``lossy_defaults``): lattices are evidence only where the stored values are the
    acquisition's own, and a lossy codec's reconstruction makes its own.
    """
    try:
        ti = texture_inconsistency_map(img, **params)
    except InvalidArrayError as exc:  # too small an image etc.: skip this cue, say so
        return CueOutput(notes=[f"texture cue skipped: {exc}"])
    notes = []
    if ti.n_coarse:
        notes.append(f"texture cue: {ti.n_coarse} block(s) of 32 px whose stored values sit on "
                     "a coarse lattice (a region scaled up from fewer grey levels and rounded)")
    return CueOutput(maps={"texture": ti.map}, notes=notes, result=ti,
                     details={"features": ti.features, "n_blocks": ti.n_blocks,
                              "n_coarse": ti.n_coarse,
                              "coarse_boxes": [list(b) for b in ti.coarse_boxes]})
