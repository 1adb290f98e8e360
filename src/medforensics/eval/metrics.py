"""Evaluation metrics shared by every task: binary AUC/ROC, binary metrics, bootstrap (pure, no I/O).

Multi-class identification (classification report, grouped accuracy, patient-level
pooling) is in :mod:`medforensics.eval.classification`.

Binary detection (forgery): :func:`binary_metrics` and :func:`best_threshold`.

Uncertainty: :func:`bootstrap_interval` gives a percentile bootstrap confidence interval of any
statistic, resampling *clusters* (a source image with all the tampered copies and originals
made from it, a patient) rather than rows when rows are not independent.

Conventions:

* A ratio whose denominator is zero (e.g. PPV of a class never predicted) is ``NaN``, never 0
  or 1. NaN is reported as such; :func:`to_jsonable` turns it into JSON ``null``.
* AUC is computed from ranks (Mann-Whitney U, ties count one half), which equals the area
  under the empirical ROC curve. A class with no positive or no negative sample has AUC NaN
  and is left out of the macro average, with a note in the report.
* Every result is a dataclass; ``to_jsonable(result)`` (or ``result.to_jsonable()``) gives
  plain Python objects that :func:`json.dumps` accepts with ``allow_nan=False``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from medforensics.common.jsonio import to_jsonable
from medforensics.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "BinaryMetrics",
    "best_threshold",
    "binary_auc",
    "binary_metrics",
    "bootstrap_interval",
    "roc_points",
    "safe_div",
]


_PROB_SUM_TOL = 1e-3


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------



class Jsonable:
    """Mixin giving dataclasses a ``to_jsonable()`` method."""

    def to_jsonable(self) -> dict[str, Any]:
        """Plain-JSON dict of this result (NaN -> ``None``)."""
        return to_jsonable(self)


def safe_div(num: float, den: float) -> float:
    """``num / den`` with ``0/0`` (and any ``x/0``) defined as NaN.

    Args:
        num: numerator.
        den: denominator.

    Returns:
        The quotient as float, or ``nan`` when ``den == 0``.
    """
    return float(num) / float(den) if den != 0 else float("nan")


def nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def check_labels(y: Any, name: str, n_classes: int | None = None) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ConfigError(f"{name} must be 1-D (N,), got shape {arr.shape}")
    if arr.size == 0:
        raise ConfigError(f"{name} is empty: nothing to evaluate")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.bool_):
            arr = arr.astype(np.int64)
        elif np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(
            arr == np.round(arr)
        ):
            arr = arr.astype(np.int64)
        else:
            raise ConfigError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if n_classes is not None and (arr.min() < 0 or arr.max() >= n_classes):
        raise ConfigError(
            f"{name} holds class indices outside 0..{n_classes - 1} "
            f"(min {arr.min()}, max {arr.max()})"
        )
    return arr


def check_probs(probs: Any, n: int | None, n_classes: int | None) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ConfigError(f"probs must be 2-D (N, C), got shape {p.shape}")
    if n is not None and p.shape[0] != n:
        raise ConfigError(f"probs has {p.shape[0]} rows but there are {n} labels")
    if n_classes is not None and p.shape[1] != n_classes:
        raise ConfigError(f"probs has {p.shape[1]} columns but there are {n_classes} classes")
    if not np.all(np.isfinite(p)):
        raise ConfigError("probs contains NaN or infinite values")
    if p.size and (p.min() < -1e-9 or np.max(np.abs(p.sum(axis=1) - 1.0)) > _PROB_SUM_TOL):
        raise ConfigError(
            "probs rows must be probabilities summing to 1 (pass softmax outputs, not logits)"
        )
    return p


def _binary_inputs(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Flattened ``(y, s, n_pos, n_neg)``: y (N,) bool, s (N,) float64 and the class counts.

    Raises:
        ConfigError: labels and scores differ in shape.
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ConfigError(f"labels {y.shape} and scores {s.shape} differ in shape")
    n_pos = int(y.sum())
    return y, s, n_pos, int(y.size - n_pos)


def binary_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve from ranks (Mann-Whitney U; ties count one half).

    Args:
        labels: (N,) bool or 0/1 ints; ``True``/1 is the positive class.
        scores: (N,) float, higher means more likely positive. Any real range.

    Returns:
        AUC in [0, 1], or NaN when there is no positive or no negative sample.
    """
    y, s, n_pos, n_neg = _binary_inputs(labels, scores)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    if not np.all(np.isfinite(s)):
        raise ConfigError("scores contain NaN or infinite values")
    from scipy.stats import rankdata  # deferred: scipy.stats is slow to import

    ranks = rankdata(s)  # average ranks for ties
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_points(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empirical ROC curve.

    Args:
        labels: (N,) bool or 0/1; positive = True/1.
        scores: (N,) float, higher = more positive.

    Returns:
        ``(fpr, tpr, thresholds)``: float64 arrays of equal length, starting at (0, 0) with
        threshold ``+inf`` and ending at (1, 1); a sample is called positive when
        ``score >= threshold``. Raises :class:`ConfigError` when one class is absent.
    """
    y, s, n_pos, n_neg = _binary_inputs(labels, scores)
    if n_pos == 0 or n_neg == 0:
        raise ConfigError("ROC needs at least one positive and one negative sample")
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    # last index of each run of equal scores
    distinct = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[distinct]
    fps = (distinct + 1) - tps
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    thr = np.r_[np.inf, s_sorted[distinct]]
    return fpr, tpr, thr


# --------------------------------------------------------------------------------------------
# multi-class
# --------------------------------------------------------------------------------------------



# --------------------------------------------------------------------------------------------
# grouped accuracy and patient-level aggregation
# --------------------------------------------------------------------------------------------



# --------------------------------------------------------------------------------------------
# binary detection (forgery)
# --------------------------------------------------------------------------------------------


@dataclass
class BinaryMetrics(Jsonable):
    """Binary detection metrics at one threshold (positive = ``score >= threshold``).

    Ratios are floats in [0, 1] or NaN when undefined.
    """

    n: int
    n_pos: int
    n_neg: int
    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float
    precision: float
    recall: float  #: TPR / sensitivity
    specificity: float  #: TNR
    f1: float
    auc: float  #: threshold-free ROC AUC of the scores


def _check_binary(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise ConfigError(f"labels {y.shape} and scores {s.shape} must be 1-D of equal length")
    if y.size == 0:
        raise ConfigError("no samples to evaluate")
    if not np.all(np.isin(y, (0, 1))):
        raise ConfigError("binary labels must be 0/1 or bool")
    if not np.all(np.isfinite(s)):
        raise ConfigError("scores contain NaN or infinite values")
    return y.astype(bool), s


def binary_metrics(labels: Any, scores: Any, threshold: float = 0.5) -> BinaryMetrics:
    """Accuracy, precision, recall, specificity, F1 and AUC of a binary detector.

    Args:
        labels: (N,) 0/1 or bool, 1 = positive (e.g. tampered).
        scores: (N,) float, higher = more likely positive (any real range).
        threshold: a sample is called positive when ``score >= threshold``.

    Returns:
        :class:`BinaryMetrics`; undefined ratios (0/0) are NaN.
    """
    y, s = _check_binary(labels, scores)
    called = s >= threshold
    tp = int(np.sum(called & y))
    fp = int(np.sum(called & ~y))
    fn = int(np.sum(~called & y))
    tn = int(np.sum(~called & ~y))
    precision = safe_div(tp, tp + fp)
    recall = safe_div(tp, tp + fn)
    return BinaryMetrics(
        n=int(y.size),
        n_pos=tp + fn,
        n_neg=tn + fp,
        threshold=float(threshold),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        accuracy=safe_div(tp + tn, y.size),
        precision=precision,
        recall=recall,
        specificity=safe_div(tn, tn + fp),
        f1=safe_div(2 * tp, 2 * tp + fp + fn),
        auc=binary_auc(y, s),
    )


def best_threshold(
    labels: Any,
    scores: Any,
    criterion: Literal["youden", "f1", "accuracy"] = "youden",
) -> float:
    """Threshold maximising a criterion on (validation) scores.

    Candidates are the distinct score values (positive = ``score >= threshold``); ties in the
    criterion are resolved towards the higher threshold (fewer positive calls).

    Args:
        labels: (N,) 0/1 or bool.
        scores: (N,) float, higher = more positive.
        criterion: ``"youden"`` (TPR - FPR), ``"f1"`` or ``"accuracy"``.

    Returns:
        The chosen threshold (one of the score values).

    Raises:
        ConfigError: unknown criterion, or (for ``"youden"``) a single-class label set.
    """
    if criterion not in ("youden", "f1", "accuracy"):
        raise ConfigError(f"criterion must be 'youden', 'f1' or 'accuracy', got {criterion!r}")
    y, s = _check_binary(labels, scores)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if criterion == "youden" and (n_pos == 0 or n_neg == 0):
        raise ConfigError("Youden's J needs both positive and negative samples")
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tp = np.cumsum(y_sorted)[last].astype(np.float64)
    fp = (last + 1) - tp
    thr = s_sorted[last]  # descending
    if criterion == "youden":
        value = tp / n_pos - fp / n_neg
    elif criterion == "f1":
        fn = n_pos - tp
        value = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    else:
        tn = n_neg - fp
        value = (tp + tn) / y.size
    # argmax returns the first maximum = highest threshold among ties
    return float(thr[int(np.argmax(value))])


# --------------------------------------------------------------------------------------------
# uncertainty
# --------------------------------------------------------------------------------------------
def bootstrap_interval(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    clusters: Sequence[Hashable] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a statistic of ``n`` rows.

    Each resample draws, with replacement, as many clusters as there are (or rows, without
    ``clusters``) and evaluates ``statistic`` on the concatenated row indices. Resamples where
    the statistic is NaN (e.g. an AUC of a resample without negatives) are left out; with fewer
    than half of the resamples valid the interval is ``(nan, nan)``. Deterministic for a seed.

    Args:
        statistic: ``f(indices) -> float``; ``indices`` is an int64 (M,) array into the rows,
            with repeats.
        n: number of rows (>= 1).
        clusters: (n,) cluster key per row (source image, patient): rows of one cluster are
            resampled together. ``None`` = every row its own cluster.
        n_boot: number of resamples (>= 1).
        level: two-sided coverage in (0, 1), e.g. 0.95.
        seed: random seed.

    Returns:
        ``(lo, hi)``, the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled
        statistic.

    Raises:
        ConfigError: ``n < 1``, ``n_boot < 1``, ``level`` outside (0, 1), or ``clusters`` not
            of length ``n``.
    """
    if n < 1 or n_boot < 1:
        raise ConfigError(f"need n >= 1 and n_boot >= 1, got n={n}, n_boot={n_boot}")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    if clusters is None:
        groups = [np.array([i], np.int64) for i in range(n)]
    else:
        if len(clusters) != n:
            raise ConfigError(f"clusters has {len(clusters)} entries for {n} rows")
        index: dict[Hashable, list[int]] = {}
        for i, c in enumerate(clusters):
            index.setdefault(c, []).append(i)
        groups = [np.array(v, np.int64) for v in index.values()]
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, len(groups), size=len(groups))
        values[b] = statistic(np.concatenate([groups[g] for g in pick]))
    values = values[np.isfinite(values)]
    if values.size < max(1, n_boot // 2):
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)
