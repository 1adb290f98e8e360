"""Tests for medforensics.eval.tables (paper-style layouts, n/a for NaN, both formats)."""

from __future__ import annotations

import numpy as np
import pytest

from medforensics.errors import ConfigError
from medforensics.eval.metrics import binary_metrics
from medforensics.eval.classification import classification_report, grouped_accuracy
from medforensics.eval.tables import (
    binary_metrics_table,
    confusion_table,
    fmt_float,
    fmt_pct,
    grouped_accuracy_table,
    per_class_table,
    render_table,
)

Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])


def _report(classes=("GE", "Philips", "Siemens", "Agfa")):
    probs = np.full((10, len(classes)), 0.1)
    probs[np.arange(10), Y_PRED] = 1.0 - 0.1 * (len(classes) - 1)
    return classification_report(Y_TRUE, probs, list(classes))


def test_formatters() -> None:
    assert fmt_pct(0.98544) == "98.54"
    assert fmt_pct(float("nan")) == "n/a"
    assert fmt_pct(None) == "n/a"
    assert fmt_float(0.98765) == "0.988"
    assert fmt_float(float("nan")) == "n/a"


def test_per_class_markdown_layout() -> None:
    text = per_class_table(
        _report(), title="Manufacturer", split_counts={"Training": {"GE": 12, "Siemens": 7}}
    )
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| Class"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Class", "Training", "n", "TPR (%)", "TNR (%)", "PPV (%)", "NPV (%)", "ACC (%)", "AUC",
    ]
    ge = next(line for line in lines if line.startswith("| GE "))
    # GE: TPR 3/4, TNR 5/6, PPV 3/4, NPV 5/6, ACC 8/10 (hand-computed in test_metrics)
    assert [c.strip() for c in ge.strip("|").split("|")][:8] == [
        "GE", "12", "4", "75.00", "83.33", "75.00", "83.33", "80.00",
    ]
    agfa = next(line for line in lines if line.startswith("| Agfa "))
    cells = [c.strip() for c in agfa.strip("|").split("|")]
    assert cells[1:4] == ["0", "0", "n/a"] and cells[-1] == "n/a"
    macro = next(line for line in lines if line.startswith("| Macro average"))
    assert "| 19 | 10 | 69.44 |" in macro  # split total, n, balanced accuracy
    assert "Overall accuracy 70.00 % (n = 10)" in text
    assert "over 3 of 4 classes" in text
    assert "Note: class 'Agfa'" in text
    assert "nan" not in text.lower().replace("n/a", "")


def test_per_class_text_is_aligned_and_escapes_nothing() -> None:
    text = per_class_table(_report(("G|E", "B", "C")), fmt="text", percent=False, notes=False)
    lines = text.splitlines()
    assert lines[0].split() == ["Class", "n", "TPR", "TNR", "PPV", "NPV", "ACC", "AUC"]
    assert lines[2].startswith("G|E ")
    assert "0.750" in lines[2]
    table_lines = lines[:7]  # header, rule, 3 classes, rule, macro average
    assert table_lines[5].startswith("---") and table_lines[6].startswith("Macro average")
    assert len({len(line) for line in table_lines}) == 1  # right-aligned numeric columns
    md = per_class_table(_report(("G|E", "B", "C")))
    assert "G\\|E" in md


def test_grouped_binary_and_confusion_tables() -> None:
    grouped = grouped_accuracy(Y_TRUE, Y_PRED, ["HAND"] * 5 + ["CHEST"] * 5)
    text = grouped_accuracy_table(grouped, group_header="Body part", fmt="text")
    lines = text.splitlines()
    assert lines[0].split() == ["Body", "part", "Total", "samples", "Correct", "Accuracy", "(%)"]
    assert lines[2].split() == ["CHEST", "5", "3", "60.00"]
    assert lines[-1].split() == ["Total", "10", "7", "70.00"]

    m = binary_metrics([0, 1, 1, 0], [0.1, 0.9, 0.4, 0.3])
    bt = binary_metrics_table({"ELA": m})
    assert "| ELA | 4 | 2 | 0.5 | 75.00 | 100.00 | 50.00 | 100.00 | 66.67 | 1.000 |" in bt

    ct = confusion_table(_report(), fmt="text").splitlines()
    assert ct[2].split() == ["GE", "3", "1", "0", "0"]
    cn = confusion_table(_report(), normalised=True, fmt="text").splitlines()
    assert cn[2].split() == ["GE", "75.0", "25.0", "0.0", "0.0"]
    assert cn[-1].split() == ["Agfa", "n/a", "n/a", "n/a", "n/a"]


def test_render_table_errors() -> None:
    with pytest.raises(ConfigError):
        render_table(["a", "b"], [["1"]])
    with pytest.raises(ConfigError):
        render_table(["a"], [["1"]], fmt="html")  # type: ignore[arg-type]


def test_transfer_syntax_names() -> None:
    from medforensics.eval.tables import grouped_accuracy_table, uid_name

    assert uid_name("1.2.840.10008.1.2.1") == "Explicit VR Little Endian"
    assert uid_name("1.2.840.10008.1.2.4.50") == "JPEG Baseline (Process 1)"
    assert uid_name("1.2.3.4.5") == "1.2.3.4.5"  # not registered: shown as it is
    assert uid_name("(none)") == "(none)"
    y = np.array([0, 1, 1])
    grouped = grouped_accuracy(y, y, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5", "(none)"])
    table = grouped_accuracy_table(grouped, group_header="Transfer syntax", group_name=uid_name)
    assert "| Explicit VR Little Endian | 1 |" in table
    assert "| RLE Lossless | 1 |" in table
    assert "1.2.840.10008" not in table
    # without a name function the keys print as they are
    assert "1.2.840.10008.1.2.5" in grouped_accuracy_table(grouped)
