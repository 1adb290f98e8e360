"""Tests for medforensics.eval.plots: PNGs of the expected pixel size, no pyplot, and what the
figures show (the axes data: which quantity on which axis, unique class labels, titles)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medforensics.errors import ConfigError
from medforensics.eval.classification import classification_report, grouped_accuracy
from medforensics.eval.plots import (
    class_labels,
    confusion_figure,
    confusion_figsize,
    plot_binary_roc,
    plot_confusion_matrix,
    plot_group_accuracy,
    plot_reliability,
    plot_roc_curves,
    plot_training_curves,
    roc_figure,
    training_figure,
)


def _check_png(path: Path, size: tuple[float, float], dpi: int) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 2000
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == (round(size[0] * dpi), round(size[1] * dpi))
        arr = np.asarray(im.convert("L"))
    assert arr.std() > 5  # something was drawn, not a blank canvas
    return arr


def _data(n_classes: int, n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


def test_confusion_matrix_png_sizes(tmp_path: Path) -> None:
    y, probs = _data(4)
    rep = classification_report(y, probs, ["GE", "Philips", "Siemens", "a very long vendor name"])
    out = plot_confusion_matrix(rep, None, tmp_path / "sub" / "cm.png", title="model", dpi=60)
    assert out == tmp_path / "sub" / "cm.png"
    _check_png(out, confusion_figsize(4), 60)
    out2 = plot_confusion_matrix(rep.confusion, rep.classes, tmp_path / "cm2.png",
                                 figsize=(8, 4), dpi=50)
    _check_png(out2, (8, 4), 50)


def test_confusion_matrix_20_classes_with_empty_row(tmp_path: Path) -> None:
    names = [f"Vendor {i} Model X-{i:02d}" for i in range(20)]
    y, probs = _data(20, n=400, seed=1)
    y[y == 7] = 8  # class 7 absent from y_true -> NaN row, must not crash
    rep = classification_report(y, probs, names)
    out = plot_confusion_matrix(rep, None, tmp_path / "cm20.png", dpi=40)
    size = confusion_figsize(20)
    assert size[0] > confusion_figsize(4)[0]
    _check_png(out, size, 40)


def test_roc_curves(tmp_path: Path) -> None:
    y, probs = _data(3)
    out = plot_roc_curves(y, probs, ["a", "b", "c"], tmp_path / "roc.png", dpi=50)
    _check_png(out, (7.0, 6.0), 50)
    # a class with no positives is listed, not fatal
    y2 = np.where(y == 2, 1, y)
    out2 = plot_roc_curves(y2, probs, ["a", "b", "c"], tmp_path / "roc2.png", dpi=40)
    _check_png(out2, (7.0, 6.0), 40)
    with pytest.raises(ConfigError):
        plot_roc_curves(y, probs, ["a", "b"], tmp_path / "bad.png")


def test_binary_roc(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 200)
    curves = {
        "ELA": (labels, labels + rng.normal(size=200)),
        "random": (labels, rng.normal(size=200)),
    }
    _check_png(plot_binary_roc(curves, tmp_path / "broc.png", dpi=50), (6.0, 6.0), 50)


def test_training_curves_from_records_and_file(tmp_path: Path) -> None:
    records = []
    for epoch in range(1, 6):
        records.append({"epoch": epoch, "split": "train", "train_loss": 2.0 / epoch,
                        "lr": 1e-3 * 0.5**epoch, "time": 12.5})
        records.append({"epoch": epoch, "val_loss": 2.2 / epoch, "val_acc": 0.5 + 0.08 * epoch,
                        "val_auc": float("nan") if epoch == 1 else 0.7})
    out = plot_training_curves(records, tmp_path / "curves.png", dpi=50)
    _check_png(out, (16.5, 4.0), 50)  # three panels: loss, 0-1 metrics, learning rate
    jsonl = tmp_path / "metrics.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records[::2]) + "\n")
    out2 = plot_training_curves(jsonl, tmp_path / "curves2.png", dpi=50)
    _check_png(out2, (11.0, 4.0), 50)  # train lines only: loss + learning rate
    with pytest.raises(ConfigError):
        plot_training_curves([{"epoch": 1, "note": "x"}], tmp_path / "none.png")


def _lines(ax) -> dict[str, tuple[list[float], list[float]]]:
    """Curves of an axes by legend label (x data, y data), without reference lines."""
    return {ln.get_label(): (list(map(float, ln.get_xdata())), list(map(float, ln.get_ydata())))
            for ln in ax.get_lines() if not ln.get_label().startswith(("_", "best "))}


def test_training_figure_one_quantity_per_axis() -> None:
    # the keys the training engine writes to metrics.jsonl
    history = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5 + 0.1 * e,
                "train_samples": 4800, "val_loss": 1.2 / e, "val_acc": 0.4 + 0.1 * e,
                "val_bacc": 0.45 + 0.1 * e, "val_images": 120, "val_patch_acc": 0.3 + 0.1 * e,
                "best_epoch": min(e, 3), "lr": 2e-3 / e, "seconds": 3.1}
               for e in range(1, 5)]
    fig = training_figure(history)
    axes = {ax.get_title(): ax for ax in fig.axes}
    assert set(axes) == {"loss", "accuracy", "learning rate", "train_samples", "val_images"}
    acc = _lines(axes["accuracy"])
    assert set(acc) == {"train_acc", "val_acc", "val_bacc", "val_patch_acc"}
    for key, (xs, ys) in acc.items():
        assert xs == [1.0, 2.0, 3.0, 4.0]
        assert ys == pytest.approx([r[key] for r in history])
    lo, hi = axes["accuracy"].get_ylim()
    assert 0.0 <= lo and hi <= 1.1  # the accuracies fill their axis: no count shares it
    assert set(_lines(axes["loss"])) == {"train_loss", "val_loss"}
    assert _lines(axes["train_samples"]) == {"train_samples": ([1.0, 2.0, 3.0, 4.0], [4800.0] * 4)}
    assert set(_lines(axes["val_images"])) == {"val_images"}
    assert axes["learning rate"].get_yscale() == "log"
    # the best epoch is a marker on every panel, not a curve; wall time is not drawn
    for ax in axes.values():
        best = [ln for ln in ax.get_lines() if ln.get_label().startswith("best ")]
        assert len(best) == 1 and list(best[0].get_xdata()) == [3, 3]
        assert "seconds" not in _lines(ax) and "best_epoch" not in _lines(ax)


LONG_NAMES = ["Halvorsen Radiologic Halix DR 420", "Halvorsen Radiologic Halix Reader 450",
              "Orvantis OrviDR CR Plus 530", "Quillmark Imaging Q-Ray Digital 270"]


def test_confusion_tick_labels_unique_and_whole() -> None:
    y, probs = _data(len(LONG_NAMES))
    rep = classification_report(y, probs, LONG_NAMES)
    fig = confusion_figure(rep, None, title="model: test images")
    counts, norm = fig.axes[0], fig.axes[1]
    for ax in (counts, norm):
        for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
            shown = [t.get_text() for t in ticks]
            assert len(set(shown)) == len(LONG_NAMES)
            # wrapped, not cut: every character of the name is on the axis
            assert [s.replace("\n", " ") for s in shown] == LONG_NAMES
    assert np.array_equal(counts.get_images()[0].get_array(), rep.confusion_array)


def test_class_labels_codes_with_a_key_when_crowded() -> None:
    names = [f"{n} unit #{k}" for n in LONG_NAMES for k in range(4)]  # 16 long names
    labels, coded = class_labels(names)
    assert coded and labels == [f"C{i}" for i in range(1, 17)]
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 5, size=(16, 16))
    fig = confusion_figure(cm, names)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == labels
    key = [t.get_text() for t in fig.legends[0].get_texts()]
    assert key == [f"C{i}  {n}" for i, n in enumerate(names, 1)]
    # short names stay as they are; wrapping that would merge two names falls back to codes
    assert class_labels(["GE", "Philips"]) == (["GE", "Philips"], False)
    assert class_labels(["Vendor Alpha Model", "Vendor Alpha  Model"], width=12)[1]


def test_roc_title_and_legend_names() -> None:
    y, probs = _data(len(LONG_NAMES))
    fig = roc_figure(y, probs, LONG_NAMES, title="model: test images")
    ax = fig.axes[0]
    title = ax.get_title()
    assert title.startswith("model: test images: one-vs-rest ROC, macro AUC ")
    assert title.count("one-vs-rest ROC") == 1
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    for name in LONG_NAMES:
        assert sum(entry.startswith(name + " (AUC ") for entry in legend) == 1


def test_group_accuracy_and_reliability(tmp_path: Path) -> None:
    y, probs = _data(3)
    pred = probs.argmax(1)
    groups = np.array(["HAND", "CHEST", "SHOULDER", None], dtype=object)[np.arange(y.size) % 4]
    grouped = grouped_accuracy(y, pred, list(groups))
    out = plot_group_accuracy(grouped, tmp_path / "groups.png", xlabel="body part",
                              figsize=(6, 4), dpi=50)
    _check_png(out, (6, 4), 50)
    out2 = plot_group_accuracy({"a": 0.5, "b": float("nan")}, tmp_path / "g2.png", dpi=40)
    _check_png(out2, (5.0, 4.5), 40)
    _check_png(plot_reliability(probs, y, tmp_path / "rel.png", dpi=40), (5.5, 5.5), 40)
    with pytest.raises(ConfigError, match="PNG"):
        plot_group_accuracy(grouped, tmp_path / "groups.jpg")


def test_import_does_not_touch_pyplot() -> None:
    code = (
        "import sys, medforensics.eval.plots, medforensics.eval.tables; "
        "print('matplotlib.pyplot' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"
