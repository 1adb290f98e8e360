"""Evaluation figures saved as PNG.

Every function builds a :class:`matplotlib.figure.Figure` with an Agg canvas directly (no
``pyplot``, no global state, no backend switch at import time), writes a PNG and returns its
path. The PNG size in pixels is ``figsize * dpi`` exactly (no tight bounding box), so callers
can rely on it; parent directories are created. The ``*_figure`` functions return the figure
without writing it, so its axes can be inspected.

* :func:`plot_confusion_matrix` (:func:`confusion_figure`): counts and row-normalised
  heat-maps side by side; class names unique on the axes (:func:`class_labels`).
* :func:`plot_roc_curves` (:func:`roc_figure`): one-vs-rest ROC curves of a multi-class
  model, AUC in the legend.
* :func:`plot_binary_roc`: ROC curves of one or more binary detectors (forgery).
* :func:`plot_training_curves` (:func:`training_figure`): per-epoch curves from
  ``metrics.jsonl`` records, one quantity per axis.
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
    "class_key",
    "class_labels",
    "confusion_figure",
    "confusion_figsize",
    "plot_binary_roc",
    "plot_confusion_matrix",
    "plot_group_accuracy",
    "plot_reliability",
    "plot_roc_curves",
    "plot_training_curves",
    "roc_figure",
    "training_figure",
]

_LEGEND_WIDTH = 48  # characters per line of a legend entry


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


def _legend_name(name: str, width: int = _LEGEND_WIDTH) -> str:
    """A name for a legend entry: whole, wrapped at spaces onto lines of ``width`` characters."""
    import textwrap

    name = str(name)
    return name if len(name) <= width else "\n".join(textwrap.wrap(name, width))


def class_labels(
    names: Sequence[str], *, width: int = 18, max_lines: int = 3, crowded: int = 12,
) -> tuple[list[str], bool]:
    """Tick labels for class names that stay unique and readable on a crowded axis.

    Device classes share long prefixes ("<manufacturer> <model>"), so cutting names to a
    fixed length makes several classes look the same. Names up to ``width`` characters are
    kept; longer names are wrapped at spaces onto at most ``max_lines`` lines (two lines
    above ``crowded`` classes, where ticks are close), which keeps every character. When a
    name would need more lines, or wrapping would make two labels equal, every class gets a
    short code instead (``C1``, ``C2``, ...) and the caller shows a key naming them
    (:func:`class_key`).

    Args:
        names: class names in axis order.
        width: characters per label line.
        max_lines: lines per wrapped label.
        crowded: above this many classes, labels wrap onto at most two lines.

    Returns:
        ``(labels, coded)``: one label per name, and whether the labels are codes that need a
        key.
    """
    import textwrap

    names = [str(n) for n in names]
    if all(len(n) <= width for n in names) and len(set(names)) == len(names):
        return names, False
    wrapped = ["\n".join(textwrap.wrap(n, width, break_on_hyphens=False)) if len(n) > width
               else n for n in names]
    lines = max_lines if len(names) <= crowded else min(max_lines, 2)
    if all(w.count("\n") < lines for w in wrapped) and len(set(wrapped)) == len(wrapped):
        return wrapped, False
    return [f"C{i}" for i in range(1, len(names) + 1)], True


def class_key(fig: Figure, codes: Sequence[str], names: Sequence[str]) -> None:
    """Add a key naming each class code (from :func:`class_labels`) to the right of ``fig``."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="none", label=f"{c}  {n}") for c, n in zip(codes, names)]
    fig.legend(handles=handles, loc="outside right upper", title="classes", fontsize=8,
               handlelength=0, handletextpad=0, frameon=False, alignment="left")


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
    slanted = n <= 8 and not any("\n" in t for t in labels)  # wrapped labels stand upright
    upright = max(len(t) for t in labels) <= 3 or (n <= 3 and not slanted)
    ax.set_xticks(ticks, labels=list(labels), rotation=0 if upright else 45 if slanted else 90,
                  ha="right" if slanted and not upright else "center",
                  rotation_mode="anchor" if slanted and not upright else "default",
                  fontsize=fontsize)
    ax.set_yticks(ticks, labels=list(labels), fontsize=fontsize)
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


def confusion_figure(
    cm: Any,
    classes: Sequence[str] | None,
    *,
    title: str | None = None,
    dpi: int = 100,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Confusion matrix heat-maps: counts (left) and row-normalised fractions (right).

    Class names are shown whole (wrapped) or, when too many or too long, as codes with a
    key beside the panels (:func:`class_labels`), so no two classes share a tick label.

    Args:
        cm: (C, C) counts (rows = true, columns = predicted) or a
            :class:`~medforensics.eval.classification.ClassificationReport`.
        classes: C class names (may be ``None`` when ``cm`` is a report).
        title: figure title.
        dpi: resolution; the PNG is ``figsize * dpi`` pixels.
        figsize: inches; default :func:`confusion_figsize` (C), wider with a key.

    Returns:
        The figure; ``fig.axes[0]`` is the counts panel, ``fig.axes[1]`` the normalised one
        (then their colour bars). Cells are annotated up to 20 classes (zero cells blank
        above 10 classes); rows without samples are blank in the normalised panel.
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
    labels, coded = class_labels(classes)
    if figsize is None:
        w, h = confusion_figsize(n)
        figsize = (w + 3.0, h) if coded else (w, h)
    norm = normalise_rows(counts)
    fig = _new_figure(figsize, dpi)
    axes = fig.subplots(1, 2)
    fontsize = max(7.0, 10.0 - n / 5.0)
    annotate = n <= 20
    hide_zero = n > 10  # zero cells left blank so that the errors stand out

    def cell(v: float, text: str) -> str:
        return "" if not np.isfinite(v) or (hide_zero and v == 0) else text

    count_txt = [[cell(v, str(int(v))) for v in row] for row in counts] if annotate else None
    norm_txt = [[cell(v, f"{v:.2f}") for v in row] for row in norm] if annotate else None
    im0 = _heatmap(axes[0], counts.astype(np.float64), labels, annotate=count_txt,
                   vmax=max(1.0, float(counts.max())), title="counts", fontsize=fontsize)
    im1 = _heatmap(axes[1], norm, labels, annotate=norm_txt, vmax=1.0,
                   title="row-normalised (recall per class)", fontsize=fontsize)
    fig.colorbar(im0, ax=axes[0], fraction=0.046, pad=0.04)
    fig.colorbar(im1, ax=axes[1], fraction=0.046, pad=0.04)
    if coded:
        class_key(fig, labels, classes)
    total = int(counts.sum())
    acc = np.trace(counts) / total if total else float("nan")
    fig.suptitle(f"{title + ': ' if title else ''}n = {total}, accuracy = {acc:.2%}")
    return fig


def plot_confusion_matrix(
    cm: Any,
    classes: Sequence[str] | None,
    path: str | Path,
    *,
    title: str | None = None,
    dpi: int = 100,
    figsize: tuple[float, float] | None = None,
) -> Path:
    """Write :func:`confusion_figure` as a PNG and return its path."""
    return _save(confusion_figure(cm, classes, title=title, dpi=dpi, figsize=figsize), path)


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


def roc_figure(
    y_true: Any,
    probs: Any,
    classes: Sequence[str],
    *,
    title: str | None = None,
    dpi: int = 100,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """One-vs-rest ROC curve of every class, with its AUC in the legend.

    Args:
        y_true: (N,) int true class indices.
        probs: (N, C) float probabilities (column k = score of class k).
        classes: C class names (shown whole in the legend, wrapped when long).
        title: what was evaluated, e.g. ``"model: test images"``; the axes title reads
            ``"<title>: one-vs-rest ROC, macro AUC 0.950"``.
        dpi: resolution.
        figsize: inches; default (7, 6), wider with an outside legend above 10 classes.

    Returns:
        The figure (one axes). Classes without positive or negative samples are listed as
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
            ax.plot([], [], color=color,
                    label=f"{_legend_name(name)} (no curve: n={positive.sum()})")
            continue
        fpr, tpr, _ = roc_points(positive, p[:, k])
        auc = binary_auc(positive, p[:, k])
        aucs.append(auc)
        ax.plot(fpr, tpr, color=color, linewidth=1.4,
                label=f"{_legend_name(name)} (AUC {auc:.3f})")
    macro = float(np.mean(aucs)) if aucs else float("nan")
    _roc_axes(ax, f"{title + ': ' if title else ''}one-vs-rest ROC, macro AUC {macro:.3f}")
    if outside:
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)
    else:
        ax.legend(loc="lower right", fontsize=8)
    return fig


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
    """Write :func:`roc_figure` as a PNG and return its path."""
    return _save(roc_figure(y_true, probs, classes, title=title, dpi=dpi, figsize=figsize),
                 path)


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
                label=f"{_legend_name(name)} (AUC {binary_auc(labels, scores):.3f})")
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
_BEST_KEYS = ("best_epoch",)
_COUNT_WORDS = {"n", "num", "count", "samples", "images", "patches", "files", "batches"}


def _kind_of(key: str, values: Sequence[float]) -> str:
    """Which quantity a training-log key holds: loss, lr, fraction, count or its own."""
    low = key.lower()
    words = set(low.split("_"))
    if "loss" in low:
        return "loss"
    if low == "lr" or low.endswith("_lr") or low.startswith("lr_") or "learning_rate" in low:
        return "lr"
    if words & _COUNT_WORDS:
        return "count"
    if all(0.0 <= v <= 1.0 for v in values):
        return "fraction"
    return "other"


def training_figure(
    records: Sequence[Mapping[str, Any]] | str | Path,
    *,
    x: str = "epoch",
    title: str | None = None,
    dpi: int = 100,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Per-epoch training curves, one quantity per axis.

    A training log mixes quantities of very different size (a loss near 1, accuracies in
    0..1, a learning rate near 1e-3, thousands of samples per epoch); on one axis the small
    ones are flat lines. So each quantity gets its own panel: ``loss`` (keys containing
    "loss"), ``accuracy`` (every other key whose values all lie in 0..1), ``learning rate``
    (log scale) and one panel per count (``train_samples``, ``val_images``, ...: keys with
    a word such as samples, images or n) or per metric of any other range. The best epoch
    (``best_epoch`` of the last record) is a dashed vertical line on every panel, not a
    curve. Records may carry different keys (e.g. separate train and validation lines);
    each key is drawn where present; non-finite values are skipped.

    Args:
        records: list of dicts (the lines of ``metrics.jsonl``) or the path of that file.
        x: x-axis key (default ``"epoch"``); records without it use their index.
        title: figure title.
        dpi: resolution.
        figsize: inches; default 5.5 x 4 per panel, at most three panels a row.

    Returns:
        The figure (Agg canvas); panels are ``fig.axes`` in the order above, each titled
        with its quantity.
    """
    recs = _load_records(records)
    if not recs:
        raise ConfigError("no training records to plot")
    series: dict[str, tuple[list[float], list[float]]] = {}
    best: float | None = None
    for i, rec in enumerate(recs):
        xv = rec.get(x, i)
        xv = float(xv) if _is_number(xv) else float(i)
        for key, value in rec.items():
            if key == x or key in _SKIP_KEYS or not _is_number(value):
                continue
            if not math.isfinite(float(value)):
                continue
            if key in _BEST_KEYS:
                best = float(value)
                continue
            xs, ys = series.setdefault(key, ([], []))
            xs.append(xv)
            ys.append(float(value))
    if not series:
        raise ConfigError("training records hold no numeric metrics to plot")
    kinds = {key: _kind_of(key, ys) for key, (_, ys) in series.items()}
    panels: list[tuple[str, str, list[str]]] = []  # (title, y label, keys)
    for kind, name, ylabel in (("loss", "loss", "loss"),
                               ("fraction", "accuracy", "fraction (0 to 1)"),
                               ("lr", "learning rate", "learning rate")):
        keys = sorted(k for k, v in kinds.items() if v == kind)
        if keys:
            if kind == "fraction" and not all("acc" in k.lower() for k in keys):
                name = "accuracy and other 0-1 metrics"
            panels.append((name, ylabel, keys))
    for kind, ylabel in (("count", "count"), ("other", "value")):
        panels += [(k, ylabel, [k]) for k in sorted(k for k, v in kinds.items() if v == kind)]
    from matplotlib.ticker import MaxNLocator

    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _new_figure(figsize or (5.5 * ncols, 4.0 * nrows), dpi)
    grid = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax in grid[len(panels):]:
        fig.delaxes(ax)
    for ax, (name, ylabel, keys) in zip(grid, panels):
        for key, color in zip(keys, _palette(len(keys))):
            xs, ys = series[key]
            ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3,
                    color=color, label=key)
        if name == "learning rate" and all(v > 0 for k in keys for v in series[k][1]):
            ax.set_yscale("log")
        if all(float(v).is_integer() for k in keys for v in series[k][0]):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ylabel == "count":
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylim(bottom=0)
        if best is not None:
            ax.axvline(best, linestyle="--", color="grey", linewidth=0.9,
                       label=f"best {x} {best:g}")
        ax.set_xlabel(x)
        ax.set_ylabel(ylabel)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_training_curves(
    records: Sequence[Mapping[str, Any]] | str | Path,
    path: str | Path,
    *,
    x: str = "epoch",
    title: str | None = None,
    dpi: int = 100,
    figsize: tuple[float, float] | None = None,
) -> Path:
    """Write :func:`training_figure` as a PNG and return its path."""
    return _save(training_figure(records, x=x, title=title, dpi=dpi, figsize=figsize), path)


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
    labels, coded = class_labels(names)
    ax.set_xticks(pos, labels=labels, rotation=45 if n > 4 else 0,
                  ha="right" if n > 4 else "center", rotation_mode="anchor")
    if coded:
        class_key(fig, labels, names)
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
