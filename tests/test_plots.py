"""Tests for medforensics.eval.plots: non-empty PNGs of the expected pixel size, no pyplot."""

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
    confusion_figsize,
    plot_binary_roc,
    plot_confusion_matrix,
    plot_group_accuracy,
    plot_reliability,
    plot_roc_curves,
    plot_training_curves,
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
    _check_png(out, (18.0, 4.5), 50)  # three panels: loss, metrics, learning rate
    jsonl = tmp_path / "metrics.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records[::2]) + "\n")
    out2 = plot_training_curves(jsonl, tmp_path / "curves2.png", dpi=50)
    _check_png(out2, (12.0, 4.5), 50)  # train lines only: loss + learning rate
    with pytest.raises(ConfigError):
        plot_training_curves([{"epoch": 1, "note": "x"}], tmp_path / "none.png")


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
