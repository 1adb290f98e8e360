"""Evaluation figures saved as PNG.

Every function builds a :class:`matplotlib.figure.Figure` with an Agg canvas directly (no
``pyplot``, no global state, no backend switch at import time), writes a PNG and returns its
path. The PNG size in pixels is ``figsize * dpi`` exactly (no tight bounding box), so callers
can rely on it; parent directories are created.

* :func:`plot_confusion_matrix`: counts and row-normalised heat-maps side by side.
* :func:`plot_roc_curves`: one-vs-rest ROC curves of a multi-class model, AUC in the legend.
* :func:`plot_binary_roc`: ROC curves of one or more binary detectors (forgery).
* :func:`plot_training_curves`: per-epoch curves from ``metrics.jsonl`` records.
* :func:`plot_group_accuracy`: bar chart of accuracy per group (body part, site, ...).
* :func:`plot_reliability`: reliability diagram (calibration).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medforensics.errors import ConfigError
from medforensics.eval.calibration import expected_calibration_error, reliability_bins
from medforensics.eval.metrics import binary_auc, roc_points
from medforensics.eval.classification import ClassificationReport, GroupedAccuracy, normalise_rows

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

__all__ = [
    "confusion_figsize",
    "plot_binary_roc",
    "plot_confusion_matrix",
    "plot_group_accuracy",
    "plot_reliability",
    "plot_roc_curves",
    "plot_training_curves",
]

_MAX_LABEL = 28  # characters of a class label shown on an axis


def _new_figure(figsize: tuple[float, float], dpi: int) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if dpi <= 0 or min(figsize) <= 0:
        raise ConfigError(f"figsize {figsize} and dpi {dpi} must be positive")
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"plots are written as PNG; got {out.name!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=fig.dpi)
    logger.info("wrote %s", out)
    return out


def _short(label: str) -> str:
    label = str(label)
    return label if len(label) <= _MAX_LABEL else label[: _MAX_LABEL - 1] + "\u2026"


def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# --------------------------------------------------------------------------------------------
# confusion matrix
# --------------------------------------------------------------------------------------------


def confusion_figsize(n_classes: int) -> tuple[float, float]:
    """Default figure size (inches) of :func:`plot_confusion_matrix` for C classes.

    Grows linearly with C so that ~20 classes stay readable.
    """
    panel = max(4.5, 0.42 * n_classes + 2.6)
    return (2 * panel + 1.0, panel + 0.6)


def _heatmap(
    ax: Axes,
    values: np.ndarray,
    labels: Sequence[str],
    *,
    annotate: Sequence[Sequence[str]] | None,
    vmax: float,
    title: str,
    fontsize: float,
) -> Any:
    masked = np.ma.masked_invalid(values)
    im = ax.imshow(masked, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    n = len(labels)
    ticks = np.arange(n)
    short = [_short(c) for c in labels]
    ax.set_xticks(ticks, labels=short, rotation=45 if n <= 8 else 90, ha="right" if n <= 8
                  else "center", rotation_mode="anchor" if n <= 8 else "default",
                  fontsize=fontsize)
    ax.set_yticks(ticks, labels=short, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if annotate is not None:
        for i in range(n):
            for j in range(n):
                v = values[i, j]
                dark = np.isfinite(v) and v > 0.6 * vmax
                ax.text(j, i, annotate[i][j], ha="center", va="center", fontsize=fontsize * 0.9,
                        color="white" if dark else "black")
    return im


def plot_confusion_matrix(
    cm: Any,
    classes: Sequence[str] | None,
    path: str | Path,
    *,
    title: str | None = None,
    dpi: int = 100,
    figsize: tuple[float, float] | None = None,
) -> Path:
    """Confusion matrix heat-maps: counts (left) and row-normalised fractions (right).

    Args:
        cm: (C, C) counts (rows = true, columns = predicted) or a
            :class:`~medforensics.eval.classification.ClassificationReport`.
        classes: C class names (may be ``None`` when ``cm`` is a report).
        path: output ``.png`` path.
        title: figure title.
        dpi: resolution; the PNG is ``figsize * dpi`` pixels.
        figsize: inches; default :func:`confusion_figsize` (C).

    Returns:
        The PNG path. Cells are annotated up to 20 classes (zero cells blank above 10
        classes); rows without samples are blank in the normalised panel.
    """
    if isinstance(cm, ClassificationReport):
        classes = cm.classes if classes is None else classes
        cm = cm.confusion_array
    counts = np.asarray(cm)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ConfigError(f"confusion matrix must be square (C, C), got {counts.shape}")
    n = counts.shape[0]
    if classes is None or len(classes) != n:
        raise ConfigError(f"need {n} class names for a {n}x{n} confusion matrix")
    norm = normalise_rows(counts)
    fig = _new_figure(figsize or confusion_figsize(n), dpi)
    axes = fig.subplots(1, 2)
    fontsize = max(7.0, 10.0 - n / 5.0)
    annotate = n <= 20
    hide_zero = n > 10  # zero cells left blank so that the errors stand out

    def cell(v: float, text: str) -> str:
        return "" if not np.isfinite(v) or (hide_zero and v == 0) else text

    count_txt = [[cell(v, str(int(v))) for v in row] for row in counts] if annotate else None
    norm_txt = [[cell(v, f"{v:.2f}") for v in row] for row in norm] if annotate else None
    im0 = _heatmap(axes[0], counts.astype(np.float64), classes, annotate=count_txt,
                   vmax=max(1.0, float(counts.max())), title="counts", fontsize=fontsize)
    im1 = _heatmap(axes[1], norm, classes, annotate=norm_txt, vmax=1.0,
                   title="row-normalised (recall per class)", fontsize=fontsize)
    fig.colorbar(im0, ax=axes[0], fraction=0.046, pad=0.04)
    fig.colorbar(im1, ax=axes[1], fraction=0.046, pad=0.04)
    total = int(counts.sum())
    acc = np.trace(counts) / total if total else float("nan")
    fig.suptitle(f"{title + ': ' if title else ''}n = {total}, accuracy = {acc:.2%}")
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# ROC curves
# --------------------------------------------------------------------------------------------


def _roc_axes(ax: Axes, title: str) -> None:
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)


def plot_roc_curves(
    y_true: Any,
    probs: Any,
    classes: Sequence[str],
    path: str | Path,
    *,
    title: str | None = None,
    dpi: int = 100,
    figsize: tuple[float, float] | None = None,
) -> Path:
    """One-vs-rest ROC curve of every class, with its AUC in the legend.

    Args:
        y_true: (N,) int true class indices.
        probs: (N, C) float probabilities (column k = score of class k).
        classes: C class names.
        path: output ``.png`` path.
        title: figure title (the macro AUC is appended).
        dpi: resolution.
        figsize: inches; default (7, 6), wider with an outside legend above 10 classes.

    Returns:
        The PNG path. Classes without positive or negative samples are listed as
        "(no curve)" in the legend instead of failing.
    """
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape != (y.size, len(classes)):
        raise ConfigError(
            f"probs must be (N, C) = ({y.size}, {len(classes)}), got shape {p.shape}"
        )
    n = len(classes)
    outside = n > 10
    fig = _new_figure(figsize or ((10.0, 6.5) if outside else (7.0, 6.0)), dpi)
    ax = fig.subplots()
    aucs = []
    for k, (name, color) in enumerate(zip(classes, _palette(n))):
        positive = y == k
        if positive.all() or not positive.any():
            ax.plot([], [], color=color, label=f"{_short(name)} (no curve: n={positive.sum()})")
            continue
        fpr, tpr, _ = roc_points(positive, p[:, k])
        auc = binary_auc(positive, p[:, k])
        aucs.append(auc)
        ax.plot(fpr, tpr, color=color, linewidth=1.4, label=f"{_short(name)} (AUC {auc:.3f})")
    macro = float(np.mean(aucs)) if aucs else float("nan")
    _roc_axes(ax, f"{title + ': ' if title else ''}one-vs-rest ROC, macro AUC {macro:.3f}")
    if outside:
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)
    else:
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_binary_roc(
    curves: Mapping[str, tuple[Any, Any]],
    path: str | Path,
    *,
    title: str | None = None,
    dpi: int = 100,
    figsize: tuple[float, float] = (6.0, 6.0),
) -> Path:
    """ROC curves of binary detectors (e.g. forgery methods) on one plot.

    Args:
        curves: ``{name: (labels (N,) 0/1, scores (N,) float)}``; higher score = positive.
        path: output ``.png`` path.
        title: figure title.
        dpi: resolution.
        figsize: inches.

    Returns:
        The PNG path.
    """
    if not curves:
        raise ConfigError("no ROC curves to plot")
    fig = _new_figure(figsize, dpi)
    ax = fig.subplots()
    for (name, (labels, scores)), color in zip(curves.items(), _palette(len(curves))):
        fpr, tpr, _ = roc_points(labels, scores)
        ax.plot(fpr, tpr, color=color, linewidth=1.5,
                label=f"{_short(name)} (AUC {binary_auc(labels, scores):.3f})")
    _roc_axes(ax, title or "ROC")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# training curves
# --------------------------------------------------------------------------------------------


def _load_records(records: Sequence[Mapping[str, Any]] | str | Path) -> list[Mapping[str, Any]]:
    if isinstance(records, (str, Path)):
        out = []
        with open(records, encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ConfigError(f"{records}:{i}: not valid JSON ({exc})") from exc
        return out
    return list(records)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


_SKIP_KEYS = {"step", "time", "elapsed", "seconds", "wall_time", "timestamp"}


def plot_training_curves(
    records: Sequence[Mapping[str, Any]] | str | Path,
    path: str | Path,
    *,
    x: str = "epoch",
    title: str | None = None,
    dpi: int = 100,
    figsize: tuple[float, float] | None = None,
) -> Path:
    """Per-epoch training curves.

    Numeric fields are grouped into panels: keys containing ``"loss"``; the learning rate
    (keys containing ``"lr"``, log scale); every other numeric metric (accuracy, AUC, ...).
    Records may carry different keys (e.g. separate train and validation lines); each key is
    drawn where present. Non-finite values are skipped.

    Args:
        records: list of dicts (the lines of ``metrics.jsonl``) or the path of that file.
        path: output ``.png`` path.
        x: x-axis key (default ``"epoch"``); records without it use their index.
        title: figure title.
        dpi: resolution.
        figsize: inches; default (6 * panels, 4.5).

    Returns:
        The PNG path.
    """
    recs = _load_records(records)
    if not recs:
        raise ConfigError("no training records to plot")
    series: dict[str, tuple[list[float], list[float]]] = {}
    for i, rec in enumerate(recs):
        xv = rec.get(x, i)
        xv = float(xv) if _is_number(xv) else float(i)
        for key, value in rec.items():
            if key == x or key in _SKIP_KEYS or not _is_number(value):
                continue
            if not math.isfinite(float(value)):
                continue
            xs, ys = series.setdefault(key, ([], []))
            xs.append(xv)
            ys.append(float(value))
    if not series:
        raise ConfigError("training records hold no numeric metrics to plot")
    groups: dict[str, list[str]] = {"loss": [], "metrics": [], "learning rate": []}
    for key in series:
        low = key.lower()
        if "loss" in low:
            groups["loss"].append(key)
        elif low == "lr" or low.endswith("_lr") or low.startswith("lr_") or "learning_rate" in low:
            groups["learning rate"].append(key)
        else:
            groups["metrics"].append(key)
    panels = [(name, keys) for name, keys in groups.items() if keys]
    fig = _new_figure(figsize or (6.0 * len(panels), 4.5), dpi)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (name, keys) in zip(axes, panels):
        for key, color in zip(sorted(keys), _palette(len(keys))):
            xs, ys = series[key]
            ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3,
                    color=color, label=key)
        if name == "learning rate" and all(v > 0 for k in keys for v in series[k][1]):
            ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# per-group accuracy and reliability
# --------------------------------------------------------------------------------------------


def plot_group_accuracy(
    grouped: GroupedAccuracy | Mapping[str, float],
    path: str | Path,
    *,
    title: str | None = None,
    xlabel: str = "group",
    dpi: int = 100,
    figsize: tuple[float, float] | None = None,
) -> Path:
    """Bar chart of accuracy per group (body part, transfer syntax, site, ...).

    Args:
        grouped: :class:`~medforensics.eval.metrics.GroupedAccuracy` (bars are annotated with
            n and the total accuracy is drawn as a dashed line) or ``{group: accuracy}``.
        path: output ``.png`` path.
        title: figure title.
        xlabel: x-axis label, e.g. ``"body part"``.
        dpi: resolution.
        figsize: inches; default widens with the number of groups.

    Returns:
        The PNG path. Accuracy is shown in percent; an undefined (NaN) accuracy is a
        missing bar labelled n/a.
    """
    if isinstance(grouped, GroupedAccuracy):
        names = [g.group for g in grouped.groups]
        values = [g.accuracy for g in grouped.groups]
        counts: list[int] | None = [g.n for g in grouped.groups]
        total: float | None = grouped.total.accuracy
    else:
        names = [str(k) for k in grouped]
        values = [float(v) for v in grouped.values()]
        counts, total = None, None
    if not names:
        raise ConfigError("no groups to plot")
    n = len(names)
    fig = _new_figure(figsize or (max(5.0, 0.6 * n + 2.0), 4.5), dpi)
    ax = fig.subplots()
    pct = np.array([100.0 * v if math.isfinite(v) else np.nan for v in values])
    pos = np.arange(n)
    ax.bar(pos, np.nan_to_num(pct, nan=0.0), color=_palette(1)[0])
    for i, v in enumerate(pct):
        label = "n/a" if not np.isfinite(v) else f"{v:.1f}"
        if counts is not None:
            label += f"\nn={counts[i]}"
        ax.text(i, (0.0 if not np.isfinite(v) else v) + 1.0, label, ha="center", va="bottom",
                fontsize=7)
    if total is not None and math.isfinite(total):
        ax.axhline(100.0 * total, linestyle="--", color="grey", linewidth=1,
                   label=f"total {100.0 * total:.1f} %")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(pos, labels=[_short(s) for s in names], rotation=45 if n > 4 else 0,
                  ha="right" if n > 4 else "center", rotation_mode="anchor")
    ax.set_ylim(0, 115)
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_reliability(
    probs: Any,
    y_true: Any,
    path: str | Path,
    *,
    n_bins: int = 15,
    title: str | None = None,
    dpi: int = 100,
    figsize: tuple[float, float] = (5.5, 5.5),
) -> Path:
    """Reliability diagram: accuracy vs. confidence per bin, with the ECE in the title.

    Args:
        probs: (N, C) probabilities (e.g. temperature-scaled).
        y_true: (N,) int true class indices.
        path: output ``.png`` path.
        n_bins: equal-width confidence bins.
        title: figure title.
        dpi: resolution.
        figsize: inches.

    Returns:
        The PNG path.
    """
    bins = reliability_bins(probs, y_true, n_bins)
    ece = expected_calibration_error(probs, y_true, n_bins)
    fig = _new_figure(figsize, dpi)
    ax = fig.subplots()
    edges = bins["edges"]
    width = np.diff(edges)
    acc = np.nan_to_num(bins["accuracy"], nan=0.0)
    ax.bar(edges[:-1], acc, width=width, align="edge", edgecolor="black", linewidth=0.5,
           label="accuracy")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title + ': ' if title else ''}ECE = {ece:.3f}")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)
