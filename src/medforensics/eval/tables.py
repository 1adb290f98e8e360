"""Result tables as Markdown or plain text (no I/O).

Layouts follow the papers:

* :func:`per_class_table`: one row per class with n, TPR, TNR, PPV, NPV, ACC and AUC, like
  Deep-RSI Tables 3/5 and DeepMammo Table 2, a "Macro average" row (DeepMammo's "Total
  Average") and a summary line (overall and balanced accuracy, macro AUC). Optional count
  columns per split (Deep-RSI Table 5's Total/Training/Test).
* :func:`grouped_accuracy_table`: accuracy per body part / site / transfer syntax (Deep-RSI
  Table 4); :func:`uid_name` shows DICOM UIDs such as transfer syntaxes by name.
* :func:`binary_metrics_table`: forgery-detection metrics, one row per method or data set.
* :func:`confusion_table`: the confusion matrix as a table.

Percentages use 2 decimals, AUC 3 decimals, undefined values (NaN) print as ``n/a``.
:func:`render_table` is the shared low-level renderer (also used by
:func:`medforensics.source.verdicts.format_table`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from medforensics.errors import ConfigError
from medforensics.eval.metrics import BinaryMetrics
from medforensics.eval.classification import ClassificationReport, GroupedAccuracy

__all__ = [
    "NA",
    "binary_metrics_table",
    "confusion_table",
    "fmt_float",
    "fmt_interval",
    "fmt_pct",
    "grouped_accuracy_table",
    "per_class_table",
    "render_table",
    "uid_name",
]

TableFormat = Literal["markdown", "text"]

#: Text shown for an undefined value (NaN / None).
NA = "n/a"


def _undefined(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_pct(x: float | None, digits: int = 2) -> str:
    """Format a fraction in [0, 1] as a percentage without the sign, e.g. ``0.9854 -> "98.54"``.

    Args:
        x: fraction, or NaN/None.
        digits: decimals.

    Returns:
        The formatted number, or ``"n/a"``.
    """
    return NA if _undefined(x) else f"{100.0 * float(x):.{digits}f}"


def fmt_float(x: float | None, digits: int = 3) -> str:
    """Format a float with fixed decimals, ``"n/a"`` for NaN/None."""
    return NA if _undefined(x) else f"{float(x):.{digits}f}"


def fmt_interval(lo_hi: Any, digits: int = 2) -> str:
    """Format a confidence interval as a suffix, e.g. ``[0.91, 0.99] -> " [0.91-0.99]"``.

    Args:
        lo_hi: ``(lo, hi)`` or ``[lo, hi]``; None or NaN bounds (no interval) give ``""``.
        digits: decimals.

    Returns:
        ``" [lo-hi]"`` or ``""``.
    """
    if not lo_hi or _undefined(lo_hi[0]) or _undefined(lo_hi[1]):
        return ""
    return f" [{float(lo_hi[0]):.{digits}f}-{float(lo_hi[1]):.{digits}f}]"


_UID_SYNTAX = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def uid_name(uid: str) -> str:
    """The registered name of a DICOM UID, e.g. ``"1.2.840.10008.1.2.1"`` -> ``"Explicit VR
    Little Endian"``; other text (a private UID, ``"(none)"``) is returned unchanged.

    Tables are read by people, who know transfer syntaxes by name; the UID itself stays in
    the machine-readable results.
    """
    from pydicom.uid import UID

    text = str(uid)
    if not _UID_SYNTAX.fullmatch(text):  # not a UID: pydicom would warn about it
        return text
    return str(UID(text).name) or text


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    fmt: TableFormat = "markdown",
    align: Sequence[Literal["l", "r"]] | None = None,
    separator_before: Sequence[int] = (),
) -> str:
    """Render a table.

    Args:
        headers: column titles.
        rows: cells (converted with ``str``; ``None`` prints as ``"n/a"``).
        fmt: ``"markdown"`` (GitHub pipe table) or ``"text"`` (space-aligned columns).
        align: per-column ``"l"``/``"r"``; default: first column left, others right.
        separator_before: row indices before which the text format draws a rule (used for
            summary rows); ignored by Markdown.

    Returns:
        The table as one string without a trailing newline.
    """
    if fmt not in ("markdown", "text"):
        raise ConfigError(f"table format must be 'markdown' or 'text', got {fmt!r}")
    n_cols = len(headers)
    cells = [[NA if c is None else str(c) for c in row] for row in rows]
    for row in cells:
        if len(row) != n_cols:
            raise ConfigError(f"table row has {len(row)} cells, expected {n_cols}")
    if align is None:
        align = ["l"] + ["r"] * (n_cols - 1)
    if fmt == "markdown":
        head = [_md_cell(h) for h in headers]
        body = [[_md_cell(c) for c in row] for row in cells]
        rule = [":---" if a == "l" else "---:" for a in align]
        lines = ["| " + " | ".join(r) + " |" for r in [head, rule, *body]]
        return "\n".join(lines)
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h))
              for i, h in enumerate(headers)]

    def line(row: Sequence[str]) -> str:
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [line([str(h) for h in headers]), rule]
    for i, row in enumerate(cells):
        if i in separator_before:
            out.append(rule)
        out.append(line(row))
    return "\n".join(out)


def _with_title(title: str | None, table: str, fmt: TableFormat) -> str:
    if not title:
        return table
    return f"**{title}**\n\n{table}" if fmt == "markdown" else f"{title}\n\n{table}"


_METRIC_COLUMNS = (("tpr", "TPR"), ("tnr", "TNR"), ("ppv", "PPV"), ("npv", "NPV"), ("acc", "ACC"))


def per_class_table(
    report: ClassificationReport,
    *,
    fmt: TableFormat = "markdown",
    title: str | None = None,
    class_header: str = "Class",
    percent: bool = True,
    split_counts: Mapping[str, Mapping[str, int]] | None = None,
    summary: bool = True,
    notes: bool = True,
) -> str:
    """Per-class table (Deep-RSI Tables 3/5, DeepMammo Table 2).

    Columns: class, [split count columns], n (evaluated samples), TPR, TNR, PPV, NPV, ACC
    (one-vs-rest accuracy) and AUC (one-vs-rest). TPR = sensitivity (DeepMammo "SEN"),
    TNR = specificity ("SPE").

    Args:
        report: from :func:`medforensics.eval.classification.classification_report`.
        fmt: ``"markdown"`` or ``"text"``.
        title: optional caption printed above the table.
        class_header: title of the first column (e.g. ``"Manufacturer"``).
        percent: ratios as percentages with 2 decimals (default) or fractions with 3.
        split_counts: optional ``{column title: {class name: count}}``, e.g.
            ``{"Total": ..., "Training": ..., "Test": ...}``; missing classes print 0.
        summary: add the "Macro average" row and a line with overall accuracy, balanced
            accuracy and macro AUC.
        notes: append the report's notes (skipped classes, undefined values).

    Returns:
        The table text.
    """
    unit = " (%)" if percent else ""
    ratio = fmt_pct if percent else (lambda v: fmt_float(v, 3))
    splits = dict(split_counts or {})
    headers = [class_header, *splits, "n", *(f"{t}{unit}" for _, t in _METRIC_COLUMNS), "AUC"]
    rows: list[list[str]] = []
    for m in report.per_class:
        rows.append(
            [
                m.label,
                *(str(int(splits[s].get(m.label, 0))) for s in splits),
                str(m.n),
                *(ratio(getattr(m, key)) for key, _ in _METRIC_COLUMNS),
                fmt_float(m.auc, 3),
            ]
        )
    sep: list[int] = []
    if summary:
        sep.append(len(rows))
        rows.append(
            [
                "Macro average",
                *(str(sum(int(v) for v in splits[s].values())) for s in splits),
                str(report.n),
                *(ratio(report.macro[key]) for key, _ in _METRIC_COLUMNS),
                fmt_float(report.macro_auc, 3),
            ]
        )
    text = _with_title(title, render_table(headers, rows, fmt=fmt, separator_before=sep), fmt)
    extra: list[str] = []
    if summary:
        n_auc = len(report.macro_auc_classes)
        acc = fmt_pct(report.accuracy) + (" %" if not _undefined(report.accuracy) else "")
        bal = fmt_pct(report.balanced_accuracy)
        bal += " %" if not _undefined(report.balanced_accuracy) else ""
        extra.append(
            f"Overall accuracy {acc} (n = {report.n}); balanced accuracy {bal}; "
            f"macro AUC {fmt_float(report.macro_auc, 3)} over {n_auc} of "
            f"{len(report.classes)} classes."
        )
    if notes and report.notes:
        extra.extend(f"Note: {n}" for n in report.notes)
    if extra:
        glue = "\n\n" if fmt == "markdown" else "\n"
        text += "\n\n" + glue.join(extra)
    return text


def grouped_accuracy_table(
    grouped: GroupedAccuracy,
    *,
    fmt: TableFormat = "markdown",
    title: str | None = None,
    group_header: str = "Group",
    group_name: Callable[[str], str] | None = None,
) -> str:
    """Accuracy per group with a total row (Deep-RSI Table 4: Sites, Total samples, Accuracy).

    Args:
        grouped: from :func:`medforensics.eval.classification.grouped_accuracy`.
        fmt: ``"markdown"`` or ``"text"``.
        title: optional caption.
        group_header: title of the first column, e.g. ``"Body part"``.
        group_name: how a group key is shown, e.g. :func:`uid_name` for transfer syntaxes
            grouped by UID; default the key itself.

    Returns:
        The table text.
    """
    show = group_name or str
    headers = [group_header, "Total samples", "Correct", "Accuracy (%)"]
    rows = [[show(g.group), str(g.n), str(g.correct), fmt_pct(g.accuracy)]
            for g in grouped.groups]
    t = grouped.total
    rows.append(["Total", str(t.n), str(t.correct), fmt_pct(t.accuracy)])
    table = render_table(headers, rows, fmt=fmt, separator_before=[len(rows) - 1])
    return _with_title(title, table, fmt)


def binary_metrics_table(
    metrics: BinaryMetrics | Mapping[str, BinaryMetrics],
    *,
    fmt: TableFormat = "markdown",
    title: str | None = None,
    row_header: str = "Method",
) -> str:
    """Binary detection metrics (forgery), one row per method / data set.

    Args:
        metrics: one :class:`BinaryMetrics` or ``{row name: BinaryMetrics}``.
        fmt: ``"markdown"`` or ``"text"``.
        title: optional caption.
        row_header: title of the first column.

    Returns:
        The table text (columns: n, positives, threshold, accuracy, precision, recall,
        specificity, F1 in %, AUC).
    """
    items = {"all": metrics} if isinstance(metrics, BinaryMetrics) else dict(metrics)
    headers = [
        row_header, "n", "pos", "Threshold", "Accuracy (%)", "Precision (%)", "Recall (%)",
        "Specificity (%)", "F1 (%)", "AUC",
    ]
    rows = [
        [
            name, str(m.n), str(m.n_pos), f"{m.threshold:.4g}", fmt_pct(m.accuracy),
            fmt_pct(m.precision), fmt_pct(m.recall), fmt_pct(m.specificity), fmt_pct(m.f1),
            fmt_float(m.auc, 3),
        ]
        for name, m in items.items()
    ]
    return _with_title(title, render_table(headers, rows, fmt=fmt), fmt)


def confusion_table(
    report: ClassificationReport,
    *,
    fmt: TableFormat = "markdown",
    normalised: bool = False,
    title: str | None = None,
) -> str:
    """Confusion matrix as a table (rows = true class, columns = predicted class).

    Args:
        report: classification report.
        fmt: ``"markdown"`` or ``"text"``.
        normalised: row-normalised percentages instead of counts.
        title: optional caption.

    Returns:
        The table text.
    """
    headers = ["true \\ predicted", *report.classes]
    rows = []
    for name, counts, norm in zip(report.classes, report.confusion, report.confusion_normalised):
        values = [fmt_pct(v, 1) for v in norm] if normalised else [str(c) for c in counts]
        rows.append([name, *values])
    return _with_title(title, render_table(headers, rows, fmt=fmt), fmt)
