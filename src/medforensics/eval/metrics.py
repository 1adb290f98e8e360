"""Evaluation metrics for source-device identification and forgery detection (pure, no I/O).

Multi-class identification (Deep-RSI Tables 3-5, DeepMammo Table 2):

* :func:`classification_report` computes overall and balanced accuracy, macro one-vs-rest AUC,
  the confusion matrix and, per class, ``n``, TP/FP/TN/FN, TPR (sensitivity), TNR
  (specificity), PPV, NPV, one-vs-rest accuracy and AUC.
* :func:`grouped_accuracy` gives accuracy per body part / transfer syntax / site (Deep-RSI
  Table 4).
* :func:`aggregate_by_group` pools image-level probabilities to patient (or study) level.

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
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from medforensics.common.jsonio import to_jsonable
from medforensics.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "BinaryMetrics",
    "ClassMetrics",
    "ClassificationReport",
    "GroupAccuracy",
    "GroupedAccuracy",
    "GroupedPredictions",
    "MISSING_GROUP",
    "aggregate_by_group",
    "best_threshold",
    "binary_auc",
    "binary_metrics",
    "bootstrap_interval",
    "classification_report",
    "confusion_matrix",
    "grouped_accuracy",
    "normalise_rows",
    "roc_points",
    "safe_div",
    "to_jsonable",
]

#: Group name used for a missing / empty group value (nothing is silently dropped).
MISSING_GROUP = "(missing)"

_PROB_SUM_TOL = 1e-3


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------



class _Jsonable:
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


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def _check_labels(y: Any, name: str, n_classes: int | None = None) -> np.ndarray:
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


def _check_probs(probs: Any, n: int | None, n_classes: int | None) -> np.ndarray:
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


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """Confusion-matrix counts.

    Args:
        y_true: (N,) int class indices in ``0..n_classes-1``.
        y_pred: (N,) int predicted indices in the same range.
        n_classes: number of classes C.

    Returns:
        (C, C) int64 counts; rows = true class, columns = predicted class.
    """
    t = _check_labels(y_true, "y_true", n_classes)
    p = _check_labels(y_pred, "y_pred", n_classes)
    if t.shape != p.shape:
        raise ConfigError(f"y_true {t.shape} and y_pred {p.shape} differ in shape")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def normalise_rows(cm: Any) -> np.ndarray:
    """Row-normalise a confusion matrix (each row = distribution of predictions of a class).

    Args:
        cm: (C, C) counts.

    Returns:
        (C, C) float64 in [0, 1]; a row with no samples is all NaN.
    """
    m = np.asarray(cm, dtype=np.float64)
    totals = m.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(totals > 0, m / np.where(totals > 0, totals, 1.0), np.nan)
    return out


@dataclass
class ClassMetrics(_Jsonable):
    """One-vs-rest metrics of one class.

    Ratios are floats in [0, 1] or NaN when undefined (0/0).
    """

    label: str
    index: int
    n: int  #: samples whose true class is this one (support)
    n_pred: int  #: samples predicted as this class
    tp: int
    fp: int
    tn: int
    fn: int
    tpr: float  #: sensitivity / recall = TP / (TP + FN)
    tnr: float  #: specificity = TN / (TN + FP)
    ppv: float  #: precision = TP / (TP + FP)
    npv: float  #: TN / (TN + FN)
    acc: float  #: one-vs-rest accuracy = (TP + TN) / N
    auc: float  #: one-vs-rest ROC AUC of this class's probability column


@dataclass
class ClassificationReport(_Jsonable):
    """Multi-class identification results (see module docstring for conventions).

    Attributes:
        classes: class names, index order.
        n: number of samples evaluated.
        accuracy: overall (micro) accuracy of the arg-max prediction.
        balanced_accuracy: mean TPR over classes present in ``y_true``.
        macro_auc: mean one-vs-rest AUC over classes with a defined AUC.
        macro_auc_classes: names of the classes that entered ``macro_auc``.
        macro: NaN-ignoring macro means of tpr, tnr, ppv, npv, acc, auc over the classes
            present in ``y_true`` (DeepMammo's "Total Average" row).
        per_class: one :class:`ClassMetrics` per class, index order.
        confusion: (C, C) counts as nested lists, rows = true, cols = predicted.
        confusion_normalised: row-normalised confusion (NaN rows for absent classes).
        notes: human-readable notes (skipped classes, undefined values).
    """

    classes: list[str]
    n: int
    accuracy: float
    balanced_accuracy: float
    macro_auc: float
    macro_auc_classes: list[str]
    macro: dict[str, float]
    per_class: list[ClassMetrics]
    confusion: list[list[int]]
    confusion_normalised: list[list[float]]
    notes: list[str] = field(default_factory=list)

    @property
    def confusion_array(self) -> np.ndarray:
        """Confusion counts as a (C, C) int64 array."""
        return np.asarray(self.confusion, dtype=np.int64)


def classification_report(
    y_true: Any,
    probs: Any,
    classes: Sequence[str],
    *,
    y_pred: Any | None = None,
) -> ClassificationReport:
    """Evaluate multi-class identification.

    Args:
        y_true: (N,) int true class indices in ``0..C-1``.
        probs: (N, C) float probabilities, rows summing to 1 (softmax output).
        classes: C class names; ``classes[k]`` names column ``k``.
        y_pred: optional (N,) int predictions; default ``probs.argmax(axis=1)``. Pass it
            to use another decision rule (e.g. majority vote with tie-break, see
            :func:`aggregate_by_group`).

    Returns:
        A :class:`ClassificationReport`. Classes absent from ``y_true`` get TPR/AUC NaN and
        are skipped in balanced accuracy and macro AUC, with a note; nothing raises for them.

    Raises:
        ConfigError: on shape mismatch, empty input, labels out of range, or ``probs`` rows
            that are not probabilities.
    """
    classes = [str(c) for c in classes]
    n_classes = len(classes)
    if n_classes < 2:
        raise ConfigError(f"need at least 2 classes, got {n_classes}")
    if len(set(classes)) != n_classes:
        raise ConfigError("class names must be unique")
    t = _check_labels(y_true, "y_true", n_classes)
    p = _check_probs(probs, t.size, n_classes)
    pred = p.argmax(axis=1) if y_pred is None else _check_labels(y_pred, "y_pred", n_classes)
    if pred.shape != t.shape:
        raise ConfigError(f"y_pred {pred.shape} and y_true {t.shape} differ in shape")

    n = int(t.size)
    cm = confusion_matrix(t, pred, n_classes)
    notes: list[str] = []
    per_class: list[ClassMetrics] = []
    for k, name in enumerate(classes):
        tp = int(cm[k, k])
        fn = int(cm[k, :].sum() - tp)
        fp = int(cm[:, k].sum() - tp)
        tn = n - tp - fn - fp
        positives = t == k
        auc = binary_auc(positives, p[:, k])
        per_class.append(
            ClassMetrics(
                label=name,
                index=k,
                n=tp + fn,
                n_pred=tp + fp,
                tp=tp,
                fp=fp,
                tn=tn,
                fn=fn,
                tpr=safe_div(tp, tp + fn),
                tnr=safe_div(tn, tn + fp),
                ppv=safe_div(tp, tp + fp),
                npv=safe_div(tn, tn + fn),
                acc=safe_div(tp + tn, n),
                auc=auc,
            )
        )
        if tp + fn == 0:
            notes.append(
                f"class {name!r} has no samples in y_true: TPR and AUC undefined (n/a), "
                "skipped in balanced accuracy and macro averages"
            )
        elif tn + fp == 0:
            notes.append(f"class {name!r} is the only class in y_true: TNR and AUC undefined")
        if tp + fp == 0 and tp + fn > 0:
            notes.append(f"class {name!r} was never predicted: PPV undefined (n/a)")

    present = [m for m in per_class if m.n > 0]
    balanced = _nanmean([m.tpr for m in present])
    auc_classes = [m.label for m in per_class if math.isfinite(m.auc)]
    macro_auc = _nanmean([m.auc for m in per_class])
    if not auc_classes:
        notes.append("macro AUC undefined: no class has both positive and negative samples")
    # macro means over classes present in y_true (an absent class has trivially perfect
    # TNR/NPV/ACC, which would flatter the average)
    macro = {
        key: _nanmean([getattr(m, key) for m in present])
        for key in ("tpr", "tnr", "ppv", "npv", "acc", "auc")
    }
    for note in notes:
        logger.info("classification_report: %s", note)
    return ClassificationReport(
        classes=classes,
        n=n,
        accuracy=safe_div(int(np.trace(cm)), n),
        balanced_accuracy=balanced,
        macro_auc=macro_auc,
        macro_auc_classes=auc_classes,
        macro=macro,
        per_class=per_class,
        confusion=cm.tolist(),
        confusion_normalised=normalise_rows(cm).tolist(),
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# grouped accuracy and patient-level aggregation
# --------------------------------------------------------------------------------------------


def _group_key(value: Any) -> str:
    if value is None:
        return MISSING_GROUP
    if isinstance(value, float) and math.isnan(value):
        return MISSING_GROUP
    text = str(value).strip()
    return text if text else MISSING_GROUP


@dataclass
class GroupAccuracy(_Jsonable):
    """Accuracy within one group (e.g. one body part)."""

    group: str
    n: int
    correct: int
    accuracy: float


@dataclass
class GroupedAccuracy(_Jsonable):
    """Accuracy per group plus the total (Deep-RSI Table 4 layout).

    Attributes:
        groups: one row per group, sorted by group name (``"(missing)"`` for empty values).
        total: the row over all samples.
    """

    groups: list[GroupAccuracy]
    total: GroupAccuracy

    def as_dict(self) -> dict[str, float]:
        """``{group: accuracy}`` including ``"Total"``."""
        out = {g.group: g.accuracy for g in self.groups}
        out["Total"] = self.total.accuracy
        return out


def grouped_accuracy(y_true: Any, y_pred: Any, groups: Sequence[Any]) -> GroupedAccuracy:
    """Accuracy per group (body part, transfer syntax, site, ...).

    Args:
        y_true: (N,) int true class indices.
        y_pred: (N,) int predicted indices.
        groups: N group values (any hashable; ``None``/NaN/empty become ``"(missing)"`` so
            that no sample is dropped).

    Returns:
        :class:`GroupedAccuracy` with per-group rows sorted by name and a total row.
    """
    t = _check_labels(y_true, "y_true")
    p = _check_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ConfigError(f"y_true {t.shape} and y_pred {p.shape} differ in shape")
    keys = [_group_key(g) for g in groups]
    if len(keys) != t.size:
        raise ConfigError(f"{len(keys)} group values for {t.size} samples")
    correct = t == p
    key_arr = np.asarray(keys, dtype=object)
    rows = []
    for name in sorted(set(keys)):
        mask = key_arr == name
        n_g = int(mask.sum())
        c_g = int(correct[mask].sum())
        rows.append(GroupAccuracy(group=name, n=n_g, correct=c_g, accuracy=safe_div(c_g, n_g)))
    c = int(correct.sum())
    total = GroupAccuracy(group="Total", n=int(t.size), correct=c, accuracy=safe_div(c, t.size))
    return GroupedAccuracy(groups=rows, total=total)


@dataclass
class GroupedPredictions(_Jsonable):
    """Predictions pooled per group (patient, study, ...).

    Attributes:
        groups: G group keys, in order of first appearance.
        probs: (G, C) float64 pooled probabilities; rows sum to 1. For ``"mean"`` the mean of
            the members' probabilities; for ``"majority"`` the fraction of members voting for
            each class.
        y_pred: (G,) int64 pooled decision. ``"mean"``: arg-max of the mean. ``"majority"``:
            the most-voted class, ties broken by the higher mean probability.
        counts: (G,) int64 number of members per group.
        y_true: (G,) int64 group label when ``y_true`` was given, else ``None``.
        method: ``"mean"`` or ``"majority"``.
    """

    groups: list[str]
    probs: np.ndarray
    y_pred: np.ndarray
    counts: np.ndarray
    y_true: np.ndarray | None
    method: str


def aggregate_by_group(
    probs: Any,
    groups: Sequence[Hashable],
    method: Literal["mean", "majority"] = "mean",
    *,
    y_true: Any | None = None,
) -> GroupedPredictions:
    """Pool image-level predictions to patient (or study) level.

    Args:
        probs: (N, C) float probabilities, rows summing to 1.
        groups: N group keys, e.g. PatientID. Missing values form the group
            ``"(missing)"``. To pool a patient imaged on several devices, key the groups by
            (patient, device) or by study instead.
        method: ``"mean"`` (average probabilities) or ``"majority"`` (vote of arg-max
            predictions; ties broken by the higher mean probability).
        y_true: optional (N,) int labels; every member of a group must share the label.

    Returns:
        :class:`GroupedPredictions`. Feed ``probs``/``y_true``/``y_pred`` to
        :func:`classification_report` for patient-level metrics.

    Raises:
        ConfigError: unknown method, shape mismatch, or a group whose members carry different
            true labels (the pooled label would be ambiguous).
    """
    if method not in ("mean", "majority"):
        raise ConfigError(f"method must be 'mean' or 'majority', got {method!r}")
    p = _check_probs(probs, None, None)
    n, n_classes = p.shape
    keys = [_group_key(g) for g in groups]
    if len(keys) != n:
        raise ConfigError(f"{len(keys)} group keys for {n} rows of probs")
    t = None if y_true is None else _check_labels(y_true, "y_true", n_classes)
    if t is not None and t.size != n:
        raise ConfigError(f"{t.size} labels for {n} rows of probs")

    order: dict[str, int] = {}
    idx = np.empty(n, dtype=np.int64)
    for i, k in enumerate(keys):
        idx[i] = order.setdefault(k, len(order))
    g = len(order)
    counts = np.bincount(idx, minlength=g).astype(np.int64)
    mean = np.zeros((g, n_classes), dtype=np.float64)
    np.add.at(mean, idx, p)
    mean /= counts[:, None]

    if method == "mean":
        pooled = mean
        pred = mean.argmax(axis=1)
    else:
        votes = np.zeros((g, n_classes), dtype=np.float64)
        np.add.at(votes, (idx, p.argmax(axis=1)), 1.0)
        pooled = votes / counts[:, None]
        # lexicographic: most votes first, then highest mean probability
        top = votes == votes.max(axis=1, keepdims=True)
        pred = np.where(top, mean, -np.inf).argmax(axis=1)

    g_true = None
    if t is not None:
        g_true = np.full(g, -1, dtype=np.int64)
        names = list(order)
        for i in range(n):
            j = idx[i]
            if g_true[j] == -1:
                g_true[j] = t[i]
            elif g_true[j] != t[i]:
                raise ConfigError(
                    f"group {names[j]!r} holds images of several true classes "
                    f"({g_true[j]} and {t[i]}); group by study or by (patient, device)"
                )
    return GroupedPredictions(
        groups=list(order),
        probs=pooled,
        y_pred=pred.astype(np.int64),
        counts=counts,
        y_true=g_true,
        method=method,
    )


# --------------------------------------------------------------------------------------------
# binary detection (forgery)
# --------------------------------------------------------------------------------------------


@dataclass
class BinaryMetrics(_Jsonable):
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
