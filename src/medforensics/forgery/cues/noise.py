"""Local noise-level inconsistency (the ``noise`` cue).

**Noise inconsistency** (:func:`noise_inconsistency_map`). A detector image has
signal-dependent noise, ``var = a * mean + b`` (Poisson-Gaussian). Each 16x16 block's observed
noise level (robust MAD of the normalised Ker-Boehme residual, :func:`dsp.noise.noise_level_map`)
is compared with the level expected at the block's mean intensity. Two expectations:

* ``expected="binned"`` (default): non-parametric - the running median of
  ``log sigma_observed`` over the blocks ranked by mean intensity (window: 5 % of the blocks).
  It follows whatever noise-vs-intensity curve the image has (log transforms, LUTs, equalisation
  of real processed radiographs, CR images whose noise is not linear in intensity), and a
  small edited region hardly moves it (docs/forgery.md compares the two modes).
* ``expected="fit"``: the image's own Poisson-Gaussian line (:func:`dsp.noise.fit_poisson_gaussian`,
  per-bin medians).

Then

    l = log(sigma_observed / sigma_expected),   z = (l - median(l)) / (1.4826 * MAD(l)).

Blurred, filled-in or down-scaled regions have too little noise (``z << 0``); regions spliced
from a noisier device, or gained up, too much (``z >> 0``). Texture and edges also raise the
observed level, so positive deviations are weaker evidence; the cue is
``sigmoid(k * (-z - z_low))`` for low noise and ``sigmoid(k * (z - z_high))`` for high noise
(defaults ``z_low = 3``, ``z_high = 4.5``, ``k = 2``), computed on four half-block-shifted
grids (8-px resolution) and averaged per pixel. Blocks touching a large clipped area (>= 4096
connected pixels at the image's minimum or maximum value: background, collimation), blocks
with more than half of their pixels clipped and blocks that are more than a quarter noiseless
(residual exactly 0: burned-in labels, graphics) are not scored (cue 0); blocks with a few
clipped specks are scored on their other pixels (clipped pixels and their 3x3 neighbours left
out of the MAD and of the noiseless share): excluding a whole block for one clipped pixel
would hide most splices, whose mean/std matching pushes some pixels to the range's end.

Two rules against false alarms on real processed radiographs (defaults; docs/forgery.md
has their effect):

* ``range_aware``: a block is judged against the expectation over the range of intensities it
  spans (min / max of its 4x4-px sub-block means): too little noise means below the *lowest*
  expectation in that range, too much above the *highest*. Blocks straddling an edge between
  a quiet and a noisy level (skin line, collimator edge, label border) have a mixed noise level
  that the expectation at their mean does not describe; blocks in homogeneous areas (where an
  edit's noise is judged) are unchanged.
* ``min_extent``: the cue map is grey-opened with a 16 x 16 square: an anomaly must fill such a
  square to keep its level (thin lines of flagged blocks fade; a 64-px edit stays).

A third rule, for the band along the skin line or chest wall (``edge_strata``): real
processing (peripheral equalisation) raises the intensity there while the noise stays that of
thin tissue, so against the interior the band looks too quiet. Blocks are split by their
distance from the large clipped areas (background: under 128 px, 128-256 px, farther), and
each stratum gets its own binned expectation. Strata of fewer than 2000 scored blocks (over
the four grids) are merged, so small images (the simulated archive's 384-640 px) keep one
expectation: an edit must stay a small share of the blocks it is compared with.

The device-fingerprint cue, which also looks for regions that disagree with the rest of
the image, is in :mod:`medforensics.forgery.cues.fingerprint`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from medforensics.dsp.noise import (
    PoissonGaussianFit,
    block_means,
    fit_poisson_gaussian,
    noise_level_map,
    residual_strips,
)
from medforensics.errors import ConfigError, InvalidArrayError
from medforensics.forgery.cues.registry import (
    CueContext,
    CueOutput,
    register_cue,
    signature_defaults,
)

__all__ = [
    "NoiseInconsistency",
    "noise_inconsistency_map",
    "cap_bands",
    "scoring_masks",
    "sigmoid",
    "smooth_map",
]

log = logging.getLogger(__name__)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function of a float array (argument clipped to +-50 against overflow)."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


@dataclass
class NoiseInconsistency:
    """Output of :func:`noise_inconsistency_map`.

    Attributes:
        map: float32 (H, W) in [0, 1], the cue (0.5 at the z thresholds).
        z: float32 (H, W) per-pixel mean robust z-score of the log noise ratio (0 where not
            scored); negative = less noise than expected.
        fit: ``(a, b)`` of the Poisson-Gaussian fit, or ``None`` when the image has too little
            intensity spread (then the expected level is the median observed level).
    """

    map: np.ndarray
    z: np.ndarray
    fit: tuple[float, float] | None


def noise_inconsistency_map(
    pixels: np.ndarray,
    *,
    block: int = 16,
    z_low: float = 3.0,
    z_high: float = 4.5,
    slope: float = 2.0,
    expected: str = "binned",
    window_fraction: float = 0.05,
    max_flat: float = 0.25,
    range_aware: bool = True,
    sub_block: int = 4,
    min_extent: int = 16,
    max_clipped: float = 0.5,
    large_clipped: int = 4096,
    max_band: float = 0.0,
    edge_strata: tuple[int, ...] = (128, 256),
    min_stratum: int = 2000,
) -> NoiseInconsistency:
    """Per-pixel local noise-level inconsistency cue (see module docs).

    Args:
        pixels: float (H, W) stored values (``read_image`` contract), H, W >= 4 * ``block``.
        block: block side in pixels (even); the map has ``block / 2`` px resolution.
        z_low: z below ``-z_low`` (too little noise) gives cue > 0.5.
        z_high: z above ``z_high`` (too much noise) gives cue > 0.5.
        slope: logistic slope ``k`` per unit of z.
        expected: ``"binned"`` (running median over intensity-ranked blocks) or ``"fit"``
            (Poisson-Gaussian line).
        window_fraction: running-median window as a share of the scored blocks (binned).
        max_flat: blocks with more than this share of exactly-zero high-pass residuals are
            not scored (noiseless synthetic content such as burned-in labels or padding has
            no detector noise to compare).
        range_aware: judge a block against the expectation over the *range* of intensities
            it spans (min and max of its ``sub_block`` x ``sub_block`` sub-block means), not at
            its mean only: too little noise must be below the lowest expectation in that range,
            too much noise above the highest. A block straddling an edge between a quiet and a
            noisy intensity (skin line, collimator edge, burned-in label) has a mixed noise
            level that the expectation at its mean intensity does not describe.
        sub_block: sub-block side for ``range_aware`` (divides ``block``).
        min_extent: the cue map is grey-opened with a ``min_extent`` x ``min_extent`` square
            (0 = not): an anomaly must fill such a square to keep its level, so thin lines of
            single flagged blocks (collimator and skin edges, label borders) fade while compact
            regions (an edited area) stay. ``z`` is not opened.
        max_clipped: blocks with at most this share of clipped pixels (and their 3x3
            neighbours, whose residual involves a clipped value) are scored on the other pixels
            only; 0 = a block touching any clipped pixel is not scored.
        large_clipped: blocks touching a connected clipped area of at least this many pixels
            (background, collimation, saturated direct exposure) are never scored; smaller
            clipped specks (an edit pushed to the value range's end, a dense bone) are
            tolerated as above. 0 = no such distinction.
        max_band: > 0 = flagged areas shaped like long bands (band ratio above this, see
            :func:`cap_bands`) are capped below the map threshold (0.45): real processing
            (equalisation along a tissue boundary) makes long bands, edits compact areas.

    Returns:
        :class:`NoiseInconsistency` (``fit`` is reported in both modes when it succeeds).

    Raises:
        InvalidArrayError: image not 2-D or too small.
        ConfigError: odd or too small block.
    """
    img = np.asarray(pixels)
    if img.ndim != 2:
        raise InvalidArrayError(f"expected a 2-D image, got shape {img.shape}")
    # float32 is kept as is (exact for 16-bit stored values); every block statistic is
    # computed in float64, strip by strip (memory: see dsp.noise.residual_strips)
    img = img.astype(np.float32 if img.dtype == np.float32 else np.float64, copy=False)
    if block < 4 or block % 2:
        raise ConfigError(f"block must be an even number >= 4, got {block}")
    if expected not in ("binned", "fit"):
        raise ConfigError(f"expected must be 'binned' or 'fit', got {expected!r}")
    if range_aware and (sub_block < 1 or block % sub_block):
        raise ConfigError(f"sub_block must divide block ({block}), got {sub_block}")
    H, W = img.shape
    if H < 4 * block or W < 4 * block:
        raise InvalidArrayError(f"image {H}x{W} too small for {block}-px noise blocks")
    clipped, flat, ign, hard = scoring_masks(img, max_clipped=max_clipped,
                                             large_clipped=large_clipped)
    try:
        pg = fit_poisson_gaussian(img, block=block, mask=~clipped)
        fit: tuple[float, float] | None = (pg.a, pg.b)
    except InvalidArrayError as exc:
        log.debug("no Poisson-Gaussian fit (%s); using a constant expected noise level", exc)
        pg = None
        fit = None
    half = block // 2
    grids = []
    ranges: list[tuple[np.ndarray, np.ndarray]] = []
    for oy in (0, half):
        for ox in (0, half):
            lr, good, mean, rng = _grid_log_ratios(
                img, oy, ox, block=block, clipped=clipped, flat=flat, ign=ign, hard=hard,
                max_flat=max_flat, max_clipped=max_clipped, expected=expected, pg=pg,
                sub_block=sub_block if range_aware else 0)
            grids.append((oy, ox, lr, good, mean))
            if rng is not None:
                ranges.append(rng)
    strata = _edge_strata(hard, grids, half, edge_strata, min_stratum)
    del clipped, flat, ign, hard
    curve: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    if expected == "binned":
        curve = _binned_expectation(grids, window_fraction, strata)
    elif pg is not None:
        curve = lambda m, _s: np.log(np.maximum(pg.std_at(m), 1e-12))  # noqa: E731
    allv = np.concatenate([g[2][g[3]] for g in grids])
    if allv.size < 8:
        zero = np.zeros((H, W), np.float32)
        return NoiseInconsistency(zero, zero.copy(), fit)
    med = float(np.median(allv))
    scale = float(1.4826 * np.median(np.abs(allv - med)))
    scale = max(scale, 1e-3)
    # every block of every grid covers whole half-block cells: average per cell (a pixel's
    # value is the mean over the blocks covering it), then expand the cells to pixels
    acc_p, acc_z, cnt = _accumulate_cells(
        grids, ranges if range_aware else None, strata, curve, (H, W), half, med=med,
        scale=scale, z_low=z_low, z_high=z_high, slope=slope)
    cnt = np.maximum(cnt, 1.0)
    cue = _cells_to_pixels(acc_p / cnt, half, H, W)
    if min_extent > 1:
        cue = ndimage.grey_opening(cue, size=(min_extent, min_extent))
    if max_band > 0:
        cue = cap_bands(cue, max_band)
    return NoiseInconsistency(cue, _cells_to_pixels(acc_z / cnt, half, H, W), fit)


def _grid_log_ratios(img: np.ndarray, oy: int, ox: int, *, block: int, clipped: np.ndarray,
                     flat: np.ndarray, ign: np.ndarray | None, hard: np.ndarray | None,
                     max_flat: float, max_clipped: float, expected: str,
                     pg: PoissonGaussianFit | None,
                     sub_block: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                tuple[np.ndarray, np.ndarray] | None]:
    """Observed-to-expected log noise ratio of every block of the grid offset by ``(oy, ox)``.

    Blocks that cannot be scored (clipped, noiseless or touching a large clipped area, see
    :func:`scoring_masks`) are marked not good. In ``"binned"`` mode the expectation is
    filled in later from all grids together, so ``lr`` is then the log observed level.

    Args:
        img: (H, W) float stored values.
        oy, ox: grid offset in pixels (0 or half a block).
        block: block side.
        clipped, flat, ign, hard: the masks of :func:`scoring_masks`.
        max_flat, max_clipped: as in :func:`noise_inconsistency_map`.
        expected: ``"binned"`` or ``"fit"``.
        pg: the Poisson-Gaussian fit, or None.
        sub_block: sub-block side of the intensity range (0 = no range).

    Returns:
        ``(lr, good, mean, range)``: float64 (nby, nbx) log ratio (0 where not good), bool
        (nby, nbx) scored blocks, float64 (nby, nbx) block means, and the min / max sub-block
        means (:func:`_sub_mean_range`) or None.
    """
    sub = img[oy:, ox:]
    if ign is None:
        sig = noise_level_map(sub, block=block).astype(np.float64)
        bad = (_block_counts(clipped[oy:, ox:], block) > 0) | (
            _block_counts(flat[oy:, ox:], block) > max_flat * block * block)
    else:
        sig = noise_level_map(sub, block=block, ignore=ign[oy:, ox:]).astype(np.float64)
        n_ign = _block_counts(ign[oy:, ox:], block)
        n_use = np.maximum(block * block - n_ign, 1)
        bad = (n_ign > max_clipped * block * block) | (
            _block_counts(flat[oy:, ox:], block) > max_flat * n_use)
        if hard is not None:
            bad |= _block_counts(hard[oy:, ox:], block) > 0
        sig = np.where(bad, 0.0, np.nan_to_num(sig))
    mean = block_means(sub, block)
    if expected == "binned":
        exp_sig = np.ones_like(sig)  # filled in later from all grids together
    elif pg is not None:
        exp_sig = pg.std_at(mean)
    else:
        exp_sig = np.full_like(sig, float(np.median(sig[~bad])) if (~bad).any() else 1.0)
    good = (~bad) & (sig > 0) & (exp_sig > 0)
    lr = np.zeros_like(sig)
    lr[good] = np.log(sig[good] / exp_sig[good])
    rng = _sub_mean_range(sub, block, sub_block, sig.shape) if sub_block else None
    return lr, good, mean, rng


def _accumulate_cells(grids: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]],
                      ranges: list[tuple[np.ndarray, np.ndarray]] | None,
                      strata: list[np.ndarray],
                      curve: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
                      shape: tuple[int, int], half: int, *, med: float, scale: float,
                      z_low: float, z_high: float, slope: float
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum each grid's cue and z-score over the half-block cells its blocks cover.

    Args:
        grids: ``(oy, ox, lr, good, mean)`` of the four half-block-shifted grids.
        ranges: per grid, the min / max sub-block means (range-aware judging), or None.
        strata: per grid, the edge stratum of each block (:func:`_edge_strata`).
        curve: expected log noise level at an intensity and stratum, or None (the median).
        shape: ``(H, W)`` of the image.
        half: cell side (half a block).
        med, scale: median and robust scale of the log ratios of all scored blocks.
        z_low, z_high, slope: the logistic thresholds and slope.

    Returns:
        ``(acc_p, acc_z, cnt)``: float64 (ceil(H / half), ceil(W / half)) sums of the cue,
        of z and the number of blocks covering each cell.
    """
    H, W = shape
    ncy, ncx = -(-H // half), -(-W // half)
    acc_p = np.zeros((ncy, ncx))
    acc_z = np.zeros((ncy, ncx))
    cnt = np.zeros((ncy, ncx))
    for gi, (oy, ox, lr, good, mean) in enumerate(grids):
        z = np.where(good, (lr - med) / scale, 0.0)
        if ranges is not None and curve is not None:
            # expectation at the block's lowest / mean / highest sub-block intensity
            e_mid = curve(mean, strata[gi])
            e_lo, e_hi = curve(ranges[gi][0], strata[gi]), curve(ranges[gi][1], strata[gi])
            e_min = np.minimum(np.minimum(e_lo, e_hi), e_mid)
            e_max = np.maximum(np.maximum(e_lo, e_hi), e_mid)
            z_q = np.where(good, (lr + e_mid - e_min - med) / scale, 0.0)  # vs lowest
            z_n = np.where(good, (lr + e_mid - e_max - med) / scale, 0.0)  # vs highest
            p = np.maximum(sigmoid(slope * (-z_q - z_low)), sigmoid(slope * (z_n - z_high)))
        else:
            p = np.maximum(sigmoid(slope * (-z - z_low)), sigmoid(slope * (z - z_high)))
        p = np.where(good, p, 0.0)
        nby, nbx = z.shape
        cy, cx = oy // half, ox // half
        for dy in (0, 1):
            for dx in (0, 1):
                ys = slice(cy + dy, cy + dy + 2 * nby, 2)
                xs = slice(cx + dx, cx + dx + 2 * nbx, 2)
                acc_p[ys, xs] += p
                acc_z[ys, xs] += z
                cnt[ys, xs] += 1.0
    return acc_p, acc_z, cnt


def cap_bands(cue: np.ndarray, max_band: float, *, step: int = 4, cap: float = 0.45,
              threshold: float = 0.5) -> np.ndarray:
    """Cap flagged areas shaped like long bands below the map threshold.

    Every connected area of ``cue >= threshold`` (found on a ``step``-px grid) gets a band ratio
    ``area / (pi * r**2)``, ``r`` the radius of its largest inscribed disc (Euclidean distance
    transform): ~1 for a disc, ~1.3 for a square, the aspect ratio for an ellipse, and large
    for a long band of any curvature (a crescent along a skin line). Areas with a ratio above
    ``max_band`` keep their shape but are capped at ``cap`` (< threshold): they rank pixels but
    make no verdict and no forged area.

    Args:
        cue: float32 (H, W) map in [0, 1].
        max_band: largest band ratio that is left alone.
        step: grid step of the component analysis (px).
        cap: value the capped areas are limited to.
        threshold: the map threshold.

    Returns:
        float32 (H, W), ``cue`` with the band areas capped (the input is not modified).
    """
    H, W = cue.shape
    small = cue[::step, ::step] >= threshold
    if not small.any():
        return cue
    lab, n = ndimage.label(small)
    band = np.zeros(n + 1, bool)
    for i, sl in enumerate(ndimage.find_objects(lab), 1):
        if sl is None:
            continue
        reg = lab[sl] == i
        r = float(ndimage.distance_transform_edt(np.pad(reg, 1)).max())
        band[i] = reg.sum() / (np.pi * r * r) > max_band
    if not band.any():
        return cue
    big = np.repeat(np.repeat(band[lab], step, axis=0), step, axis=1)[:H, :W]
    # a band's pixels: near its grid points (dilated by one step) and above the threshold
    big = ndimage.binary_dilation(big, structure=np.ones((2 * step + 1, 2 * step + 1), bool))
    out = cue.copy()
    sel = big & (out >= threshold)
    out[sel] = np.minimum(out[sel], np.float32(cap))
    return out


def scoring_masks(img: np.ndarray, *, max_clipped: float = 0.5, large_clipped: int = 4096
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Pixel masks that decide which blocks a noise cue scores, and on which pixels.

    Shared by :func:`noise_inconsistency_map` and
    :func:`medforensics.forgery.cues.texture.texture_inconsistency_map`.

    Args:
        img: float (H, W) stored values.
        max_clipped: > 0 = clipped pixels are tolerated (``ign`` is returned); 0 = not.
        large_clipped: connected clipped areas of at least this many pixels give ``hard``
            (0 = none).

    Returns:
        ``(clipped, flat, ign, hard)``, bool (H, W) each: ``clipped`` = pixels at the image's
        minimum or maximum; ``flat`` = exactly-zero Ker-Boehme residual (noiseless content),
        outside ``ign``; ``ign`` = clipped pixels and their 3 x 3 neighbours (None when
        ``max_clipped`` is 0 or nothing is clipped); ``hard`` = pixels of connected clipped
        areas of >= ``large_clipped`` px (None when there are none or ``ign`` is None).
    """
    vmin, vmax = float(img.min()), float(img.max())
    clipped = (img <= vmin) | (img >= vmax)
    # noiseless content (burned-in labels, graphics, padding): residual exactly 0
    flat = residual_strips(img, "kb") == 0
    ign = None
    hard = None
    if max_clipped > 0 and clipped.any():
        ign = ndimage.binary_dilation(clipped, structure=np.ones((3, 3), bool))
        flat &= ~ign
        if large_clipped > 0:
            lab, n = ndimage.label(clipped)
            sizes = np.bincount(lab.ravel())
            big = sizes >= large_clipped
            big[0] = False
            if big.any():
                # blocks touching a large clipped area (background, collimation) stay excluded
                hard = big[lab]
            del lab
    return clipped, flat, ign, hard


def _block_counts(mask: np.ndarray, block: int) -> np.ndarray:
    """Number of True pixels in every non-overlapping ``block x block`` block (int64)."""
    nby, nbx = mask.shape[0] // block, mask.shape[1] // block
    a = mask[: nby * block, : nbx * block]
    return a.reshape(nby, block, nbx, block).sum(axis=(1, 3), dtype=np.int64)


def _cells_to_pixels(cells: np.ndarray, half: int, H: int, W: int) -> np.ndarray:
    """float32 (H, W): every ``half x half`` cell's value repeated over its pixels."""
    out = np.repeat(np.repeat(cells.astype(np.float32), half, axis=0)[:H], half, axis=1)
    return np.ascontiguousarray(out[:, :W])


def _sub_mean_range(sub: np.ndarray, block: int, sub_block: int, shape: tuple[int, int]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of the ``sub_block`` sub-block means inside every ``block`` block."""
    k = block // sub_block
    nby, nbx = shape
    sm = block_means(sub[: nby * block, : nbx * block], sub_block)
    sm = sm.reshape(nby, k, nbx, k)
    return sm.min(axis=(1, 3)), sm.max(axis=(1, 3))


def _edge_strata(hard: np.ndarray | None,
                 grids: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]], half: int,
                 edges: tuple[int, ...], min_stratum: int) -> list[np.ndarray]:
    """Per grid, int (nby, nbx): the distance stratum of every block (0 = nearest the
    large clipped areas). All zeros when ``edges`` is empty or there is no such area;
    strata with fewer than ``min_stratum`` scored blocks are merged into the next one (the
    last into the one before)."""
    zeros = [np.zeros(g[2].shape, np.int64) for g in grids]
    if not edges or hard is None or not hard.any():
        return zeros
    if list(edges) != sorted(edges) or edges[0] <= 0:
        raise ConfigError(f"edge_strata must be increasing positive distances, got {edges}")
    H, W = hard.shape
    ncy, ncx = -(-H // half), -(-W // half)
    cells = np.zeros((ncy * half, ncx * half), bool)
    cells[:H, :W] = hard
    cells = cells.reshape(ncy, half, ncx, half).any(axis=(1, 3))
    dist = ndimage.distance_transform_edt(~cells) * half  # px from cell centre to area
    out = []
    for oy, ox, lr, _, _ in grids:
        nby, nbx = lr.shape
        cy, cx = oy // half + 1, ox // half + 1  # the cell at the block's centre
        d = dist[cy : cy + 2 * nby : 2, cx : cx + 2 * nbx : 2][:nby, :nbx]
        out.append(np.searchsorted(np.asarray(edges), d, side="right").astype(np.int64))
    # merge thin strata: relabel so that every stratum holds >= min_stratum scored blocks
    counts = np.zeros(len(edges) + 1, np.int64)
    for st, g in zip(out, grids):
        counts += np.bincount(st[g[3]], minlength=len(edges) + 1)
    label = np.arange(len(counts))
    acc = 0
    start = 0
    for k in range(len(counts)):
        acc += counts[k]
        if acc >= min_stratum:
            label[start : k + 1] = start
            start, acc = k + 1, 0
    if start < len(counts):  # a thin remainder joins the stratum before (or is alone)
        label[start:] = label[start - 1] if start > 0 else 0
    return [label[st] for st in out]


def _binned_expectation(grids: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]],
                        window_fraction: float, strata: list[np.ndarray]
                        ) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """Turn ``log sigma`` (in ``lr``) into ``log sigma - running median over intensity rank``,
    computed within every stratum of blocks (see :func:`_edge_strata`).

    ``grids`` items are ``(oy, ox, lr, good, mean)``; ``lr`` holds ``log sigma`` on good blocks
    and is modified in place. ``strata``: per grid, int (nby, nbx) stratum labels.

    Returns:
        ``curve(means, strata)``: the expected ``log sigma`` at every block's intensity within
        its stratum (piecewise linear through the running medians, constant beyond the ends),
        or None when no block is scored.
    """
    ls = np.concatenate([g[2][g[3]] for g in grids])
    mu = np.concatenate([g[4][g[3]] for g in grids])
    st = np.concatenate([s[g[3]] for s, g in zip(strata, grids)])
    n = ls.size
    if n == 0:
        return None
    expect = np.empty(n)
    tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for lab in np.unique(st):
        idx = np.flatnonzero(st == lab)
        m = idx.size
        order = idx[np.argsort(mu[idx], kind="mergesort")]
        k = max(25, int(window_fraction * m)) | 1
        k = min(k, m if m % 2 else max(m - 1, 1))
        expect[order] = ndimage.median_filter(ls[order], size=k, mode="nearest")
        tables[int(lab)] = (mu[order], expect[order])
    pos = 0
    for _, _, lr, good, _ in grids:
        m = int(good.sum())
        lr[good] = lr[good] - expect[pos : pos + m]
        pos += m
    fallback = max(tables, key=lambda k: tables[k][0].size)

    def curve(means: np.ndarray, labels: np.ndarray) -> np.ndarray:
        out = np.empty(np.shape(means))
        for lab in np.unique(labels):
            sel = labels == lab
            xs, ys = tables.get(int(lab), tables[fallback])
            out[sel] = np.interp(means[sel], xs, ys)
        return out

    return curve


def smooth_map(m: np.ndarray, size: int = 9) -> np.ndarray:
    """Mean filter of a cue map (float32 (H, W)), used for image-level scores."""
    return ndimage.uniform_filter(np.asarray(m, dtype=np.float32), size=size)


@register_cue("noise", rank=20,
              defaults={**signature_defaults(noise_inconsistency_map), "extra_blocks": ()})
def _noise_cue(img: np.ndarray, ctx: CueContext, params: Mapping[str, Any]) -> CueOutput:
    """The registered ``noise`` cue: :func:`noise_inconsistency_map`.

    ``extra_blocks`` (e.g. ``(32,)``, an option, not the default) also runs the map with those
    block sizes (``min_extent`` = the block) and takes the per-pixel maximum: a level change
    over a larger area, seen with less noise. Left out on non-JPEG lossy coding unless named
    explicitly (such coding reshapes the noise by itself).
    """
    if ctx.non_dct and not ctx.explicit:
        return CueOutput(notes=[("noise cue skipped: JPEG 2000 / JPEG-LS near-lossless coding "
                                 "reshapes the noise by itself (smooths some areas, rings at "
                                 "edges)")])
    kw = dict(params)
    extra = tuple(kw.pop("extra_blocks", ()))
    try:
        ni = noise_inconsistency_map(img, **kw)
    except Exception as exc:  # noqa: BLE001 - any failure (too small an image, a
        # degenerate fit) skips this one cue, said in the notes; the other cues still run
        return CueOutput(notes=[f"noise cue skipped: {exc}"])
    out = CueOutput(maps={"noise": ni.map}, details={"fit": ni.fit, "z": ni.z}, result=ni)
    for b in extra:
        try:
            nb = noise_inconsistency_map(img, **{**kw, "block": int(b), "min_extent": int(b)})
        except Exception as exc:  # noqa: BLE001 - as above, for this block size only
            out.notes.append(f"noise cue at {b}-px blocks skipped: {exc}")
            continue
        out.maps["noise"] = np.maximum(out.maps["noise"], nb.map)
        out.notes.append(f"noise cue also at {b}-px blocks (map: maximum of the scales)")
    return out
