"""Copy-move detection on stored values by residual block matching (works on lossless DICOM).

Method (see :mod:`medforensics.dsp.blockmatch`):

1. High-pass residual of the stored values (Ker-Boehme 3x3 prediction error).
2. Exact / near-exact matching of overlapping ``block x block`` residual blocks (sorted
   quantised keys, verified on the full blocks), at least ``min_shift`` px apart.
3. Consensus: shift vectors shared by at least ``min_count`` block pairs that form one
   connected region (:func:`~medforensics.dsp.blockmatch.coherent_support`) are kept.
4. Dense refinement for each kept shift ``d``: local normalised correlation of the residual
   with itself displaced by ``d`` (``window x window``), kept near the matched blocks. It is
   ~1 where a region was copied, falls across a feathered edge, ~0 elsewhere. The map is
   ``clip(correlation, 0, 1)`` on both the target side ``p`` and the source side ``p - d``.
5. Direction (optional): which area is the paste is claimed only with evidence - a hard
   step along its border and none along its partner's, a paste-seam box around it, or (copies
   matched by content) interpolated, quieter noise - and is ``undetermined`` otherwise
   (:mod:`medforensics.forgery.direction`). The source side of a decided pair is multiplied
   by ``source_weight``; an undetermined pair keeps both areas at full level.

Why residuals: on a noisy radiograph, two independent blocks never share their noise, so an
exact (or near-exact) residual match is essentially impossible by chance, while a copied region
carries its noise along. Block matching finds translations and exact quarter turns /
mirrorings (``dihedral``); copies turned or scaled by other amounts with nearest-neighbour
resampling keep their exact stored values at moved positions and are found by exact-value
keypoints and a similarity model (``resampled``, :mod:`medforensics.dsp.valuematch`).
Copies resampled *with interpolation* (bilinear, spline turning or scaling) and copies in
lossy images (JPEG after the edit) keep neither their noise nor their stored values, but
their content: those are found by SIFT descriptors on an 8-bit rendering, the same
similarity RANSAC and a dense check that the content - and, finer, what is left of the
noise - correlates with the source over an area (``features``,
:mod:`medforensics.dsp.featurematch`). Translations and quarter turns are left to block
matching on lossless inputs; on lossy ones they are taken from the features too.
Limits: re-noised or strongly filtered copies, copies in flat or clipped areas (no residual,
no keypoints, no content) and copies of small featureless areas are not found.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from medforensics.dsp.blockmatch import (
    DIHEDRAL,
    BlockMatches,
    canonical_pairs,
    coherent_support,
    match_blocks,
    match_density,
    shift_consensus,
    shift_correlation,
)
from medforensics.dsp.featurematch import (
    match_features,
    sift_features,
    similarity_content_map,
)
from medforensics.dsp.noise import STRIP_ROWS, residual_strips
from medforensics.dsp.valuematch import (
    fit_similarities,
    match_keys,
    similarity_equal_map,
    value_keypoints,
)
from medforensics.forgery.coverage import noise_mask
from medforensics.forgery.cues.ela import is_8bit, window_to_uint8
from medforensics.forgery.cues.registry import (
    CueContext,
    CueOutput,
    register_cue,
    signature_defaults,
)
from medforensics.forgery.direction import apply_direction, decide_direction
from medforensics.forgery.regions import overlap_share

__all__ = ["CopyMoveResult", "detect_copy_move"]

log = logging.getLogger(__name__)

#: blocks below this fraction of the median residual energy are not matched (lossless / lossy)
_ENERGY_FRAC = 0.002
_LOSSY_ENERGY_FRAC = 0.25


@dataclass
class CopyMoveResult:
    """Output of :func:`detect_copy_move`.

    Attributes:
        map: float32 (H, W) in [0, 1]; ~1 on copied regions (both sides unless
            disambiguated), 0 where nothing matched.
        score: image-level score in [0, 1): ``s / (s + min_count)`` with ``s`` the support
            (matched block pairs in its largest connected group) of the best shift; 0.5 at
            the consensus threshold.
        shifts: kept shifts as ``(dy, dx, support)``, strongest first.
        regions: per copy found: ``{"shift", "support", "transform", "method", "bbox_a",
            "bbox_b", "target_side", "decided", "cue", "direction", "direction_evidence",
            "border_steps"}``; ``bbox_a`` / ``bbox_b`` are ``(x0, y0, x1, y1)`` (exclusive
            ends) of the two matched regions (``b`` = ``a`` moved by ``shift``);
            ``direction`` is ``"a->b"`` (``b`` is the pasted copy, ``target_side`` ``"b"``),
            ``"b->a"``, or ``"undetermined"`` when no evidence tells the two apart
            (:mod:`medforensics.forgery.direction`), with the evidence or the reason in
            words; rotated / mirrored copies have ``shift`` None and their ``transform``
            name (see :data:`~medforensics.dsp.blockmatch.DIHEDRAL`; a copy turned by 270
            degrees is the other region turned by 90, so it is reported as ``rot90``).
        n_blocks: blocks used in matching (after the energy filter).
        n_pairs: verified block pairs before consensus.
    """

    map: np.ndarray
    score: float
    shifts: list[tuple[int, int, int]] = field(default_factory=list)
    regions: list[dict] = field(default_factory=list)
    n_blocks: int = 0
    n_pairs: int = 0


def _crop_around(region: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    ys, xs = np.nonzero(region)
    if ys.size == 0:
        return None
    H, W = region.shape
    return (slice(max(int(ys.min()) - margin, 0), min(int(ys.max()) + margin + 1, H)),
            slice(max(int(xs.min()) - margin, 0), min(int(xs.max()) + margin + 1, W)))


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` (exclusive ends) of the largest connected True area, or None.

    (The correlation map has isolated chance peaks around a copied region; the region
    itself is the largest connected area.)
    """
    crop = _crop_around(mask, 0)
    if crop is None:
        return None
    lbl, n = ndimage.label(mask[crop])
    if n > 1:
        sizes = np.bincount(lbl.ravel())[1:]
        sub = lbl == int(np.argmax(sizes)) + 1
    else:
        sub = lbl > 0
    ys = np.flatnonzero(sub.any(axis=1))
    xs = np.flatnonzero(sub.any(axis=0))
    oy, ox = crop[0].start, crop[1].start
    return int(xs[0]) + ox, int(ys[0]) + oy, int(xs[-1]) + ox + 1, int(ys[-1]) + oy + 1


def _blocks_bbox(tops: np.ndarray, block: int) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` covering the ``block x block`` blocks with top-left ``tops``."""
    if not len(tops):
        return None
    return (int(tops[:, 1].min()), int(tops[:, 0].min()), int(tops[:, 1].max()) + block,
            int(tops[:, 0].max()) + block)


def _transformed_copies(m: BlockMatches, out: np.ndarray, regions: list[dict], *,
                        min_count: int, max_regions: int) -> int:
    """Rotated / mirrored copies among ``m`` (pairs with a non-identity transform).

    Pairs are grouped by transform and by the translation of their mapping (all blocks of
    one rotated copy share it, :meth:`BlockMatches.offsets`); groups whose largest connected
    set of blocks reaches ``min_count`` are painted into ``out`` (matched-block density of
    both sides, by maximum) and described in ``regions`` (the direction is decided
    afterwards, in :func:`detect_copy_move`).

    Returns:
        The best group's coherent support (0 if none), for the image score.
    """
    best = 0
    if not len(m.a):
        return 0
    m = canonical_pairs(m)
    assert m.transform is not None
    found: list[tuple[int, int, np.ndarray, np.ndarray]] = []
    for k in np.unique(m.transform):
        sub = m.select(m.transform == k)
        offs = sub.offsets()
        uniq, inv, cnt = np.unique(offs, axis=0, return_inverse=True, return_counts=True)
        inv = inv.ravel()
        for u in np.argsort(-cnt, kind="stable")[:8]:  # score below consensus, as for shifts
            best = max(best, coherent_support(sub.b[inv == u]))
        groups, keep = shift_consensus(sub, min_count=min_count, vectors=offs)
        for ty, tx, _ in groups:
            sel = keep & (np.max(np.abs(offs - np.array([ty, tx])), axis=1) <= 1)
            sup = coherent_support(sub.b[sel])
            if sup >= min_count:
                found.append((sup, int(k), sub.a[sel], sub.b[sel]))
    found.sort(key=lambda f: -f[0])
    for sup, k, a, b in found[:max_regions]:
        best = max(best, sup)
        da = np.clip(match_density(out.shape, a, m.block) * 2.0, 0.0, 1.0)
        db = np.clip(match_density(out.shape, b, m.block) * 2.0, 0.0, 1.0)
        info = {"shift": None, "support": int(sup), "transform": DIHEDRAL[k],
                "method": "blocks", "bbox_a": _blocks_bbox(a, m.block),
                "bbox_b": _blocks_bbox(b, m.block)}
        _paint_pair(out, regions, da, db, info)
    return best


def _paint_pair(out: np.ndarray, regions: list[dict], da: np.ndarray, db: np.ndarray,
                info: dict) -> None:
    """Paint both areas of a turned / resampled copy into ``out`` (full level) and describe
    it; the direction is decided once all pairs are known (:func:`detect_copy_move`)."""
    info.update({"target_side": "", "decided": False, "cue": ""})
    np.maximum(out, np.maximum(da, db), out=out)
    regions.append(info)


def _resampled_copies(img: np.ndarray, usable: np.ndarray, out: np.ndarray,
                      regions: list[dict], *, min_shift: int, min_inliers: int,
                      min_area: int, max_regions: int) -> float:
    """Copies turned / scaled by any amount with nearest-neighbour resampling.

    Exact-value keypoints and a RANSAC similarity (:mod:`medforensics.dsp.valuematch`);
    a model counts when at least ``min_area`` pixels of the copy hold exactly the source's
    values (share >= 0.5 in a 9 x 9 window). Painted like the turned block copies.

    Returns:
        The best kept model's inlier count divided by ``min_inliers`` (1.0 at the
        threshold; 0 if none).
    """
    kp = value_keypoints(img, valid=usable)
    i, j = match_keys(kp, min_dist=min_shift)
    best = 0.0
    for mdl in fit_similarities(kp, i, j, min_inliers=min_inliers, max_models=max_regions):
        db, da = similarity_equal_map(img, mdl, valid=usable)  # copy side, source side
        if int(np.count_nonzero(db >= 0.5)) < min_area:
            continue
        best = max(best, mdl.support / float(min_inliers))
        turn = f"rotate {mdl.angle:+.1f} deg" + (
            f", scale {mdl.scale:.3f}" if abs(mdl.scale - 1.0) > 0.01 else "")
        info = {"shift": None, "support": mdl.support, "transform": turn, "method": "values",
                "bbox_a": _bbox(da >= 0.5), "bbox_b": _bbox(db >= 0.5)}
        _paint_pair(out, regions, np.clip(da * 2.0, 0.0, 1.0), np.clip(db * 2.0, 0.0, 1.0),
                    info)
    return best


def _smoothing_log_ratio(r: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """``log(median r^2 on b / median r^2 on a)`` (0 when either side is empty or silent).

    A copy resampled with interpolation has averaged - quieter - noise than its source,
    which holds the same content at the same intensities."""
    if not a.any() or not b.any():
        return 0.0
    ea = float(np.median(np.square(r[a], dtype=np.float64)))
    eb = float(np.median(np.square(r[b], dtype=np.float64)))
    if ea <= 0 or eb <= 0:
        return 0.0
    return math.log(eb / ea)


def _feature_copies(img: np.ndarray, usable: np.ndarray, out: np.ndarray,
                    regions: list[dict], *, lossy: bool, min_shift: int, min_inliers: int,
                    min_area: int, min_fine: float, max_regions: int, r: np.ndarray | None
                    ) -> float:
    """Copies found by their content (SIFT features, :mod:`medforensics.dsp.featurematch`).

    A model counts when at least ``min_area`` pixels correlate at >= 0.8 in content (band
    above a 3-px Gaussian) and the median fine-band correlation (above a 1-px Gaussian:
    what is left of the noise) over them is at least ``min_fine`` - repeated anatomy
    (ribs a period apart) correlates in content, not in noise. Areas already painted by an
    earlier model (block matching, exact values) are not reported again. On lossless
    inputs the log ratio of the two areas' median residual energies is recorded
    (``smoothing_log_ratio``: interpolation averages the noise of the copy), one item of
    evidence for :func:`medforensics.forgery.direction.decide_direction`.

    Returns:
        The best kept model's inlier count divided by ``min_inliers`` (0 if none).
    """
    if is_8bit(img):
        img8 = img.astype(np.uint8)
    else:  # percentile window from a subsample, rendered strip by strip (bounded memory)
        lo, hi = (float(v) for v in np.percentile(img[::4, ::4], [0.5, 99.5]))
        img8 = np.empty(img.shape, np.uint8)
        for y0 in range(0, img.shape[0], STRIP_ROWS):
            img8[y0:y0 + STRIP_ROWS] = window_to_uint8(img[y0:y0 + STRIP_ROWS], (lo, hi))[0]
    feats = sift_features(img8)
    del img8
    i, j = match_features(feats, min_dist=float(min_shift))
    best = 0.0
    for mdl in fit_similarities(feats, i, j, tol=3.0, min_inliers=min_inliers,
                                max_models=max_regions, block_transforms=lossy):
        dst, src = similarity_content_map(img, mdl, valid=usable)
        region = dst >= 0.8
        area = int(np.count_nonzero(region))
        if area < min_area:
            continue
        fine, _ = similarity_content_map(img, mdl, sigma=1.0, valid=usable)
        fine_median = float(np.median(fine[region]))
        del fine
        if fine_median < min_fine:
            continue
        # a copy an earlier search reported (its source side may be down-weighted below 0.5)
        box = _bbox(region)
        if box is not None and any(
                overlap_share(box, tuple(g[k])) >= 0.5
                for g in regions for k in ("bbox_a", "bbox_b") if g.get(k) is not None):
            continue
        best = max(best, mdl.support / float(min_inliers))
        if abs(mdl.scale - 1.0) <= 0.01 and min(abs(mdl.angle), 360 - abs(mdl.angle)) < 0.5:
            turn = "identity"
        else:
            turn = f"rotate {mdl.angle:+.1f} deg" + (
                f", scale {mdl.scale:.3f}" if abs(mdl.scale - 1.0) > 0.01 else "")
        dst[~region] = 0.0  # in place: full-size maps are large
        src[src < 0.8] = 0.0
        del region
        info = {"shift": None, "support": mdl.support, "transform": turn, "method": "content",
                "bbox_a": _bbox(src >= 0.5), "bbox_b": _bbox(dst >= 0.5)}
        if not lossy and r is not None:
            info["smoothing_log_ratio"] = _smoothing_log_ratio(r, src >= 0.5, dst >= 0.5)
        _paint_pair(out, regions, src, dst, info)
    return best


def _unclipped(img: np.ndarray, block: int) -> np.ndarray:
    """bool (H, W): pixels outside areas where more than a quarter of the pixels are clipped.

    Clipped pixels (at the image's minimum or maximum: background at 0, saturation) carry no
    noise, so blocks there are not matched. Computed strip by strip with a ``block``-row halo
    (bounded memory on large images).
    """
    H, W = img.shape
    vmin, vmax = img.min(), img.max()
    usable = np.empty((H, W), bool)
    halo = block
    for y0 in range(0, H, STRIP_ROWS):
        y1 = min(y0 + STRIP_ROWS, H)
        a, b = max(y0 - halo, 0), min(y1 + halo, H)
        sl = img[a:b]
        clipped = ((sl <= vmin) | (sl >= vmax)).astype(np.float32)
        usable[y0:y1] = (ndimage.uniform_filter(clipped, size=block) <= 0.25)[y0 - a : y1 - a]
    return usable


def _coherent_shifts(m: BlockMatches, min_count: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Shifts of untransformed pairs whose matched blocks form one solid region.

    A shift counts with its largest connected group of matched blocks only: a copied region
    is a solid patch of matches, chance matches (quiet JPEG blocks) are scattered.

    Args:
        m: untransformed block matches.
        min_count: support a shift needs.

    Returns:
        ``(shifts, keep, best)``: int32 (S, 3) rows ``(dy, dx, coherent support)`` with at
        least ``min_count`` support, strongest first; bool (K,) the pairs near a consensus
        shift (:func:`shift_consensus`); and the strongest coherent support of any shift,
        also below consensus (the evidence for the image score).
    """
    shifts, keep = shift_consensus(m, min_count=min_count)
    coherent = []
    for dy, dx, _ in shifts:
        sel = keep & (np.max(np.abs(m.shifts - np.array([dy, dx])), axis=1) <= 1)
        coherent.append(coherent_support(m.b[sel]))
    if len(shifts):
        shifts = shifts.copy()
        shifts[:, 2] = coherent
        shifts = shifts[shifts[:, 2] >= min_count]
        shifts = shifts[np.argsort(-shifts[:, 2], kind="stable")]
    best = 0
    if len(m.a):  # below consensus: the strongest coherent group of any single shift
        _, inv, cnt = np.unique(m.shifts, axis=0, return_inverse=True, return_counts=True)
        inv = inv.ravel()
        for u in np.argsort(-cnt, kind="stable")[:8]:
            best = max(best, coherent_support(m.b[inv == u]))
    if len(shifts):
        best = max(best, int(shifts[0, 2]))
    return shifts, keep, best


def _paint_shift(out: np.ndarray, regions: list[dict], r: np.ndarray, tb: np.ndarray,
                 shift: tuple[int, int], support: int, *, window: int, block: int) -> None:
    """Paint one translated copy into ``out`` by dense correlation, and record it.

    The local normalised correlation of the residual with itself displaced by ``shift``
    (``window x window``, clipped to [0, 1]) is kept near the matched target blocks ``tb``
    (target side ``p``) and copied back by the shift (source side ``p - d``, 0 where the
    partner falls outside the image); the pair's entry with both bounding boxes is appended
    to ``regions``.

    Args:
        out: float32 (H, W) map, maximised in place.
        regions: the found copies, appended to.
        r: (H, W) residual.
        tb: int (K, 2) top-left corners of the matched target-side blocks.
        shift: ``(dy, dx)``.
        support: the shift's coherent support.
        window: correlation window (odd).
        block: block side.
    """
    H, W = out.shape
    dy, dx = shift
    margin = window + block + 12
    box = (max(int(tb[:, 0].min()) - margin, 0), min(int(tb[:, 0].max()) + block + margin, H),
           max(int(tb[:, 1].min()) - margin, 0), min(int(tb[:, 1].max()) + block + margin, W))
    ys0, ys1, xs0, xs1 = box
    crop = (slice(ys0, ys1), slice(xs0, xs1))
    c_full = shift_correlation(r, (dy, dx), window, region=box)
    c = np.clip(c_full[crop], 0.0, 1.0)
    near_b = match_density((ys1 - ys0, xs1 - xs0), tb - [ys0, xs0], block) > 0
    near_b = ndimage.binary_dilation(near_b, iterations=window + block)
    side_b = np.zeros((H, W), np.float32)
    side_b[crop] = np.where(near_b, c, np.float32(0.0))  # target-side positions p (b = a + d)
    del c, c_full, near_b
    # source positions p - d: side_b shifted back by the shift (0 where the partner
    # falls outside the image)
    side_a = np.zeros_like(side_b)
    ty0, ty1 = max(dy, 0), min(H + dy, H)
    tx0, tx1 = max(dx, 0), min(W + dx, W)
    if ty1 > ty0 and tx1 > tx0:
        side_a[ty0 - dy : ty1 - dy, tx0 - dx : tx1 - dx] = side_b[ty0:ty1, tx0:tx1]
    info = {"shift": (dy, dx), "support": support, "transform": "identity",
            "method": "blocks", "target_side": "", "decided": False, "cue": ""}
    info["bbox_a"] = _bbox(side_a >= 0.5)
    info["bbox_b"] = _bbox(side_b >= 0.5)
    np.maximum(side_a, side_b, out=side_a)
    np.maximum(out, side_a, out=out)
    del side_a, side_b
    regions.append(info)


def _decide_directions(out: np.ndarray, regions: list[dict], img: np.ndarray, *,
                       disambiguate: bool, lossy: bool, paste_boxes: Sequence[Any],
                       source_weight: float) -> None:
    """Decide which side of each found copy is the paste, and weight the map accordingly.

    With ``disambiguate`` each pair's direction is decided from the evidence
    (:func:`medforensics.forgery.direction.decide_direction`) and its source side scaled by
    ``source_weight`` in ``out`` (in place); otherwise every pair is left undetermined, with
    the reason (lossy data: the codec's block edges and smoothing mimic the evidence).
    """
    for reg in regions:
        if disambiguate:
            apply_direction(out, reg, decide_direction(img, reg, paste_boxes=paste_boxes),
                            source_weight=source_weight)
        else:
            apply_direction(out, reg, {"target_side": "", "evidence": (
                "not assessed on lossy data (the codec's block edges and smoothing mimic paste "
                "seams and interpolation)" if lossy else "direction not assessed")})


def detect_copy_move(
    pixels: np.ndarray,
    *,
    block: int = 8,
    min_shift: int = 16,
    min_count: int = 40,
    window: int = 7,
    max_shifts: int = 4,
    disambiguate: bool = True,
    source_weight: float = 0.35,
    paste_boxes: Sequence[Any] = (),
    valid: np.ndarray | None = None,
    lossy: bool = False,
    dihedral: bool = True,
    resampled: bool = True,
    resampled_min_inliers: int = 20,
    resampled_min_area: int = 1024,
    features: bool = True,
    features_min_inliers: int = 8,
    features_min_area: int = 1024,
    features_min_fine: float = 0.75,
) -> CopyMoveResult:
    """Detect copy-moved regions in one image of stored values.

    Args:
        pixels: float (H, W) stored values (the ``read_image`` contract), any bit depth.
        block: block side for matching (even, >= 4).
        min_shift: minimum displacement in pixels between source and copy.
        min_count: minimum number of block pairs sharing a shift.
        window: neighbourhood of the dense correlation refinement (odd).
        max_shifts: at most this many shifts are refined (strongest first).
        disambiguate: decide each pair's direction where evidence allows and down-weight
            the source side (:mod:`medforensics.forgery.direction`; lossless inputs only);
            False leaves every pair ``undetermined`` at full level.
        source_weight: factor applied to the source side of a decided pair.
        paste_boxes: seam boxes of :func:`medforensics.forgery.cues.seam.seam_cue` on the same
            image (one item of direction evidence).
        valid: optional bool (H, W) of usable pixels (False: padding, burned-in labels...).
            Areas where more than a quarter of the pixels sit at the image's minimum or
            maximum value (clipped) are always excluded.
        lossy: the image went through lossy compression. Quiet blocks of a JPEG image are
            a few quantised DCT patterns that repeat by chance; blocks with less than a
            quarter of the median residual energy are then left out (lossless: 0.2 %, so
            that copies in quiet areas are found).
        dihedral: also find copies rotated by 90/180/270 degrees or mirrored (exact pixel
            transforms keep the noise); their map is the matched-block density.
        resampled: also find copies turned or scaled by any amount with nearest-neighbour
            resampling (exact stored values at moved positions; lossless inputs only), see
            :mod:`medforensics.dsp.valuematch`; reported with ``transform`` like
            ``"rotate +17.2 deg"`` (``", scale 1.100"`` when scaled).
        resampled_min_inliers: keypoint matches a resampled copy's model needs (the image
            score is 0.5 there).
        resampled_min_area: pixels of the copy that must hold exactly the source's values.
        features: also find copies by their content (SIFT features on an 8-bit rendering,
            :mod:`medforensics.dsp.featurematch`): turned or scaled with interpolation, or
            in lossy images (there translations too); ``method`` ``"content"``.
        features_min_inliers: feature matches a model needs (the image score is 0.5 there).
        features_min_area: pixels of the copy whose content must correlate with the source.
        features_min_fine: median correlation of the fine band (what is left of the noise)
            over those pixels.

    Returns:
        :class:`CopyMoveResult`.
    """
    img = np.asarray(pixels)
    img = img.astype(np.float32 if img.dtype == np.float32 else np.float64, copy=False)
    H, W = img.shape
    # float32 residual (exact for integer stored values), computed strip by strip
    r = residual_strips(img, "kb")
    usable = _unclipped(img, block)
    if valid is not None:
        usable &= np.asarray(valid, dtype=bool)
    matchable = usable
    if not lossy:  # exact residual repeats count only where the residual is noise (not the
        # rounding pattern of a ramp or a flat area); lossy inputs keep their energy floor

        matchable = usable & noise_mask(img, r)
    m_all = match_blocks(r, block=block, min_shift=min_shift, valid=matchable,
                         energy_frac=_LOSSY_ENERGY_FRAC if lossy else _ENERGY_FRAC,
                         dihedral=dihedral)
    assert m_all.transform is not None
    if m_all.sample_stride > 1:
        log.warning("heavily repeated content (tiled / mirrored / synthetic?): only every "
                    "%d-th candidate block pair was verified", m_all.sample_stride)
    m = m_all.select(m_all.transform == 0)
    shifts, keep, best = _coherent_shifts(m, min_count)
    out = np.zeros((H, W), np.float32)
    regions: list[dict] = []
    if dihedral:
        best = max(best, _transformed_copies(
            m_all.select(m_all.transform != 0), out, regions, min_count=min_count,
            max_regions=max_shifts))
    if resampled and not lossy:
        best = max(best, min_count * _resampled_copies(
            img, usable, out, regions, min_shift=min_shift,
            min_inliers=resampled_min_inliers, min_area=resampled_min_area,
            max_regions=max_shifts))
    for dy, dx, sup in shifts[:max_shifts]:
        sel = keep & (np.max(np.abs(m.shifts - np.array([dy, dx])), axis=1) <= 1)
        _paint_shift(out, regions, r, m.b[sel], (int(dy), int(dx)), int(sup), window=window,
                     block=block)
    if features:  # after the shifts: areas they painted are not reported twice
        best = max(best, min_count * _feature_copies(
            img, usable, out, regions, lossy=lossy, min_shift=min_shift,
            min_inliers=features_min_inliers, min_area=features_min_area,
            min_fine=features_min_fine, max_regions=max_shifts, r=r))
    _decide_directions(out, regions, img, disambiguate=disambiguate and not lossy, lossy=lossy,
                       paste_boxes=paste_boxes, source_weight=source_weight)
    score = best / (best + float(min_count))
    log.debug("copy-move: %d blocks, %d pairs, shifts %s", m_all.n_blocks, len(m_all.a),
              shifts[:max_shifts].tolist())
    return CopyMoveResult(
        map=out,
        score=float(score),
        shifts=[(int(a), int(b), int(c)) for a, b, c in shifts[:max_shifts]],
        regions=regions,
        n_blocks=m_all.n_blocks,
        n_pairs=int(len(m_all.a)),
    )


@register_cue("copymove", rank=10, needs=("seam",), context=("lossy", "paste_boxes", "valid"),
              defaults=signature_defaults(detect_copy_move,
                                          exclude=("lossy", "paste_boxes", "valid")))
def _copymove_cue(img: np.ndarray, ctx: CueContext, params: Mapping[str, Any]) -> CueOutput:
    """The registered ``copymove`` cue: :func:`detect_copy_move`; the seam cue's paste-seam
    boxes (when it ran) are one item of evidence for which copy was pasted."""
    kw = {"lossy": ctx.lossy, **params}
    seam = ctx.inputs.get("seam")
    if seam is not None:
        kw.setdefault("paste_boxes", seam.boxes)
    cm = detect_copy_move(img, **kw)
    return CueOutput(maps={"copymove": cm.map},
                     details={"shifts": cm.shifts, "regions": cm.regions, "score": cm.score},
                     result=cm)
