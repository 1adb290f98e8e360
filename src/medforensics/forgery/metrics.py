"""Pixel-level localization metrics with a boundary band excluded (TruFor-style protocol).

A ``width``-px band around every mask edge is left out of the evaluation: pixels within
``width`` px of the edge, on either side (``dilate(mask, width) & ~erode(mask, width)``),
because ground truth at a (feathered) edge is ill-defined. Per tampered image:

* ``f1_best``: F1 at the best threshold for that image (oracle threshold, "F1-best");
* ``f1_fixed`` / ``iou_fixed`` / ``precision_fixed`` / ``recall_fixed``: at a fixed threshold
  (default 0.5), a pixel is positive when ``score >= threshold``;
* ``auc``: pixel ROC AUC (rank-based, ties count one half; from :mod:`medforensics.eval.metrics`).

On untampered images (empty mask) F1 / IoU / AUC are undefined (NaN) and the useful number is
``fp_rate_fixed``: the share of pixels called forged at the fixed threshold.
Averages over images ignore NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from medforensics.errors import InvalidArrayError
from medforensics.eval.metrics import binary_auc

__all__ = ["boundary_band", "PixelScores", "pixel_scores", "best_f1", "summarize"]


def boundary_band(mask: np.ndarray, width: int = 3) -> np.ndarray:
    """Pixels within ``width`` px of a mask edge, inside or outside.

    Args:
        mask: bool (H, W).
        width: band half-width in pixels (0: no band).

    Returns:
        bool (H, W): ``dilate(mask, width) & ~erode(mask, width)`` (3x3 cross structuring
        element iterated ``width`` times, i.e. city-block distance; image borders do not
        erode the mask).
    """
    m = np.asarray(mask, dtype=bool)
    if width <= 0 or not m.any():
        return np.zeros_like(m)
    dil = ndimage.binary_dilation(m, iterations=width)
    ero = ndimage.binary_erosion(m, iterations=width, border_value=1)
    return dil & ~ero


@dataclass
class PixelScores:
    """Pixel metrics of one image (see module docs). NaN where undefined."""

    f1_best: float
    threshold_best: float
    f1_fixed: float
    iou_fixed: float
    precision_fixed: float
    recall_fixed: float
    auc: float
    fp_rate_fixed: float
    n_pixels: int
    n_positive: int


def best_f1(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Best F1 over all thresholds ``score >= t``.

    Args:
        scores: float (N,).
        labels: bool (N,).

    Returns:
        ``(f1, threshold)``; ``(nan, nan)`` when there is no positive.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    P = int(y.sum())
    if P == 0:
        return float("nan"), float("nan")
    order = np.argsort(-s, kind="mergesort")
    ss, ys = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(ss))[0], ss.size - 1]
    tp = np.cumsum(ys)[last].astype(np.float64)
    n_called = (last + 1).astype(np.float64)
    f1 = 2.0 * tp / (n_called + P)
    i = int(np.argmax(f1))
    return float(f1[i]), float(ss[last[i]])


def pixel_scores(
    score_map: np.ndarray, mask: np.ndarray, *, band: int = 3, threshold: float = 0.5
) -> PixelScores:
    """Pixel metrics of one score map against a ground-truth mask.

    Args:
        score_map: float (H, W), higher = more likely forged (e.g. probability in [0, 1]).
        mask: bool (H, W) or uint8 0/255 ground truth (True/255 = changed pixel).
        band: boundary band half-width excluded from evaluation (0 = none).
        threshold: fixed threshold for the ``*_fixed`` metrics.

    Returns:
        :class:`PixelScores`.

    Raises:
        InvalidArrayError: shapes differ or non-finite scores.
    """
    s = np.asarray(score_map, dtype=np.float64)
    m = np.asarray(mask) > 0
    if s.shape != m.shape or s.ndim != 2:
        raise InvalidArrayError(f"score map {s.shape} and mask {m.shape} must be equal 2-D shapes")
    if not np.all(np.isfinite(s)):
        raise InvalidArrayError("score map contains NaN or infinite values")
    keep = ~boundary_band(m, band)
    sv, mv = s[keep], m[keep]
    P = int(mv.sum())
    pred = sv >= threshold
    nan = float("nan")
    fp_rate = float((pred & ~mv).sum() / max(int((~mv).sum()), 1))
    if P == 0:
        return PixelScores(nan, nan, nan, nan, nan, nan, nan, fp_rate, int(sv.size), 0)
    tp = int((pred & mv).sum())
    fp = int((pred & ~mv).sum())
    fn = P - tp
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / P
    f1 = 2 * tp / (2 * tp + fp + fn)
    iou = tp / (tp + fp + fn)
    fb, tb = best_f1(sv, mv)
    auc = binary_auc(mv, sv) if P < mv.size else nan
    return PixelScores(fb, tb, f1, iou, prec, rec, auc, fp_rate, int(sv.size), P)


def summarize(scores: Sequence[PixelScores]) -> dict[str, float]:
    """NaN-ignoring mean of every field over images, plus ``n_images``."""
    out: dict[str, float] = {"n_images": float(len(scores))}
    if not scores:
        return out
    for k in asdict(scores[0]):
        vals = [float(getattr(s, k)) for s in scores]
        good = [v for v in vals if not math.isnan(v)]
        out[k] = float(np.mean(good)) if good else float("nan")
    return out
