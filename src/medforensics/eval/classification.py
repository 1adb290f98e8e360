"""Multi-class identification metrics (pure, no I/O): the tables of Deep-RSI (Tables 3-5) and
DeepMammo (Table 2).

* :func:`classification_report`: overall and balanced accuracy, macro one-vs-rest AUC, the
  confusion matrix and, per class, ``n``, TP/FP/TN/FN, TPR (sensitivity), TNR (specificity),
  PPV, NPV, one-vs-rest accuracy and AUC.
* :func:`grouped_accuracy`: accuracy per body part / transfer syntax / site (Deep-RSI Table 4).
* :func:`aggregate_by_group`: image-level probabilities pooled to patient (or study) level.

Conventions are those of :mod:`medforensics.eval.metrics` (NaN for an empty denominator,
rank-based AUC, dataclass results with ``to_jsonable()``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from medforensics.errors import ConfigError
from medforensics.eval.metrics import (
    Jsonable,
    binary_auc,
    check_labels,
    check_probs,
    nanmean,
    safe_div,
)

logger = logging.getLogger(__name__)


#: Group name used for a missing / empty group value (nothing is silently dropped).
MISSING_GROUP = "(missing)"



def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """Confusion-matrix counts.

    Args:
        y_true: (N,) int class indices in ``0..n_classes-1``.
        y_pred: (N,) int predicted indices in the same range.
        n_classes: number of classes C.

    Returns:
        (C, C) int64 counts; rows = true class, columns = predicted class.
    """
    t = check_labels(y_true, "y_true", n_classes)
    p = check_labels(y_pred, "y_pred", n_classes)
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
class ClassMetrics(Jsonable):
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
class ClassificationReport(Jsonable):
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
    t = check_labels(y_true, "y_true", n_classes)
    p = check_probs(probs, t.size, n_classes)
    pred = p.argmax(axis=1) if y_pred is None else check_labels(y_pred, "y_pred", n_classes)
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
    balanced = nanmean([m.tpr for m in present])
    auc_classes = [m.label for m in per_class if math.isfinite(m.auc)]
    macro_auc = nanmean([m.auc for m in per_class])
    if not auc_classes:
        notes.append("macro AUC undefined: no class has both positive and negative samples")
    # macro means over classes present in y_true (an absent class has trivially perfect
    # TNR/NPV/ACC, which would flatter the average)
    macro = {
        key: nanmean([getattr(m, key) for m in present])
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



def _group_key(value: Any) -> str:
    if value is None:
        return MISSING_GROUP
    if isinstance(value, float) and math.isnan(value):
        return MISSING_GROUP
    text = str(value).strip()
    return text if text else MISSING_GROUP



@dataclass
class GroupAccuracy(Jsonable):
    """Accuracy within one group (e.g. one body part)."""

    group: str
    n: int
    correct: int
    accuracy: float



@dataclass
class GroupedAccuracy(Jsonable):
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
    t = check_labels(y_true, "y_true")
    p = check_labels(y_pred, "y_pred")
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
class GroupedPredictions(Jsonable):
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
    p = check_probs(probs, None, None)
    n, n_classes = p.shape
    keys = [_group_key(g) for g in groups]
    if len(keys) != n:
        raise ConfigError(f"{len(keys)} group keys for {n} rows of probs")
    t = None if y_true is None else check_labels(y_true, "y_true", n_classes)
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
