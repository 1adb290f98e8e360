"""Evaluate a trained source-identification run on one split of a manifest.

:func:`evaluate_run` predicts every eligible image of the split with
:class:`medforensics.source.predictor.SourcePredictor`, then writes into ``out_dir``:

* ``metrics.json``: image-level and patient-level reports (overall accuracy, balanced
  accuracy, macro AUC, per-class n/TPR/TNR/PPV/NPV/ACC/AUC, confusion matrices), accuracy per
  body part and per transfer syntax, unit-level results from the reference patterns when the
  run has them, calibration figures, 95 % confidence intervals of the headline figures
  (bootstrap over patients: the images of one patient move together, see
  :func:`headline_intervals`), and the list of images that could not be read;
* ``predictions.csv``: one row per image (path, truth, prediction, probability);
* ``report.md``: the tables, laid out like Deep-RSI Tables 3-5 / DeepMammo Table 2;
* ``confusion.png``, ``roc.png``, ``accuracy_by_body_part.png``, ``reliability.png`` and,
  when the run has a training log, ``training.png``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medforensics.common.atomic import atomic_write_bytes
from medforensics.common.jsonio import atomic_write_json, to_jsonable
from medforensics.common.progress import iter_progress, library_mode
from medforensics.errors import ConfigError
from medforensics.eval import classification as C
from medforensics.eval import metrics as M
from medforensics.eval import plots, tables
from medforensics.eval.calibration import expected_calibration_error
from medforensics.io import read_image
from medforensics.source.predictor import SourcePredictor, identify_image

__all__ = ["evaluate_run", "EvaluationResult", "headline_intervals"]

log = logging.getLogger(__name__)


class EvaluationResult(dict):
    """The ``metrics.json`` content (a dict), plus ``out_dir``."""

    out_dir: Path


def headline_intervals(y_true: np.ndarray, probs: np.ndarray, patients: Sequence[str], *,
                       n_boot: int = 1000, level: float = 0.95, seed: int = 0
                       ) -> dict[str, Any]:
    """Patient-cluster bootstrap intervals of accuracy, balanced accuracy, macro AUC, per-class TPR.

    Args:
        y_true: int (N,) class indices.
        probs: float (N, C) class probabilities (rows sum to 1).
        patients: (N,) patient key per image; a patient's images are resampled together.
        n_boot: bootstrap resamples.
        level: two-sided coverage.
        seed: random seed.

    Returns:
        ``{"level", "n_boot", "unit": "patient", "n_clusters", "accuracy": [lo, hi],
        "balanced_accuracy": [lo, hi], "macro_auc": [lo, hi], "tpr": {class index: [lo, hi]}}``
        (NaN bounds when a figure is undefined in most resamples).
    """
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    yp = p.argmax(axis=1)
    n_classes = p.shape[1]
    present = [c for c in range(n_classes) if (y == c).any()]

    def tpr(ix: np.ndarray, c: int) -> float:
        sel = y[ix] == c
        return float(np.mean(yp[ix][sel] == c)) if sel.any() else float("nan")

    def defined_mean(vals: list[float]) -> float:
        vals = [v for v in vals if v == v]  # NaN: class absent from the resample
        return float(np.mean(vals)) if vals else float("nan")

    def balanced(ix: np.ndarray) -> float:
        return defined_mean([tpr(ix, c) for c in present])

    def macro_auc(ix: np.ndarray) -> float:
        return defined_mean([M.binary_auc(y[ix] == c, p[ix, c]) for c in present])

    def iv(stat: Any) -> list[float]:
        return list(M.bootstrap_interval(stat, y.size, clusters=list(patients), n_boot=n_boot,
                                         level=level, seed=seed))

    return {
        "level": level, "n_boot": n_boot, "unit": "patient",
        "n_clusters": len(set(patients)),
        "accuracy": iv(lambda ix: float(np.mean(yp[ix] == y[ix]))),
        "balanced_accuracy": iv(balanced),
        "macro_auc": iv(macro_auc) if n_classes > 1 else [float("nan")] * 2,
        "tpr": {int(c): iv(lambda ix, c=c: tpr(ix, c)) for c in present},
    }


@dataclass
class _Predictions:
    """What the model and the identify verdict said about each evaluated image."""

    kept: list[Mapping[str, Any]] = field(default_factory=list)
    y_true: list[int] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    unit_true: list[str] = field(default_factory=list)
    unit_pred: list[str | None] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)  # named right / named wrong / not named
    named_by: list[str | None] = field(default_factory=list)


def _select_rows(pred: SourcePredictor, rows: Sequence[Mapping[str, Any]], split: str
                 ) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]], list[str]]:
    """(selected rows, rows of known classes, unseen class names) of ``split``."""
    col = pred.label_column
    sel = [
        r
        for r in rows
        if r.get("status", "eligible") == "eligible" and (split == "all" or r.get("split") == split)
    ]
    if not sel:
        raise ConfigError(f"no eligible rows with split == {split!r} in the manifest")
    unseen = sorted({str(r.get(col)) for r in sel if str(r.get(col)) not in pred.classes})
    known = [r for r in sel if str(r.get(col)) in pred.classes]
    if not known:
        raise ConfigError(f"no {split} image has a class the model was trained on")
    return sel, known, unseen


def _predict_rows(pred: SourcePredictor, known: Sequence[Mapping[str, Any]], *,
                  progress: bool, split: str) -> _Predictions:
    """Predict and judge every row; an unreadable file is listed, never fatal."""
    col = pred.label_column
    index = {c: i for i, c in enumerate(pred.classes)}
    out = _Predictions()
    fps = pred.fingerprints
    for row in iter_progress(known, len(known), f"evaluate {split}", library_mode(progress),
                             unit="images", emit=log.info):
        try:
            img = read_image(row["path"])
            p = pred.predict(img.pixels)
            v, _ = identify_image(pred, img.pixels, img.meta, str(row["path"]), prediction=p)
        except Exception as exc:  # one bad file never stops an evaluation; it is listed
            out.failures.append({"path": str(row["path"]),
                                 "error": f"{type(exc).__name__}: {exc}"})
            continue
        out.outcomes.append("not named" if not v.confident else
                            "named right" if v.predicted == str(row[col]) else "named wrong")
        out.named_by.append(v.named_by)
        out.y_true.append(index[str(row[col])])
        out.probs.append(p.probs)
        out.kept.append(row)
        if fps is not None and row.get("unit"):
            unit, _score = fps.identify_unit(img.pixels)
            out.unit_true.append(str(row["unit"]))
            out.unit_pred.append(unit)
    if not out.kept:
        raise ConfigError("every image of the split failed to read; see the log")
    return out


def _verdict_shares(got: _Predictions) -> dict[str, Any]:
    n_out = len(got.outcomes)
    return {
        "what": "the identify verdict on each image: a device named right, named wrong, or "
                "not named (UNKNOWN or insufficient-evidence)",
        "named_right": got.outcomes.count("named right") / n_out,
        "named_wrong": got.outcomes.count("named wrong") / n_out,
        "not_named": got.outcomes.count("not named") / n_out,
        "named_by_unit_pattern": got.named_by.count("unit-pattern"),
        "named_by_classifier": got.named_by.count("classifier"),
    }


def _write_predictions_csv(path: Path, pred: SourcePredictor, got: _Predictions,
                           yt: np.ndarray, pr: np.ndarray) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "PatientID", "truth", "predicted", "probability", "correct"])
        for r, t, p_row in zip(got.kept, yt, pr):
            k = int(p_row.argmax())
            w.writerow([r["path"], r.get("PatientID", ""), pred.classes[t], pred.classes[k],
                        f"{p_row[k]:.4f}", int(k == t)])


def _figures(out: Path, run_dir: Path, report: Any, by_body: Any, yt: np.ndarray,
             pr: np.ndarray, classes: Sequence[str], col: str, split: str) -> dict[str, Any]:
    figures = {
        "confusion": plots.plot_confusion_matrix(report.confusion_array, classes,
                                                 out / "confusion.png",
                                                 title=f"{col}: {split} images"),
        "roc": plots.plot_roc_curves(yt, pr, classes, out / "roc.png",
                                     title=f"{col}: {split} images"),
        "body_part": plots.plot_group_accuracy(by_body, out / "accuracy_by_body_part.png",
                                               title="Accuracy per body part",
                                               xlabel="body part"),
        "reliability": plots.plot_reliability(pr, yt, out / "reliability.png"),
    }
    log_path = run_dir / "metrics.jsonl"
    if log_path.is_file():
        figures["training"] = plots.plot_training_curves(log_path, out / "training.png")
    return figures


def _report_markdown(result: Mapping[str, Any], reports: Mapping[str, Any],
                     figures: Mapping[str, Any], run_dir: Path) -> str:
    """``report.md``: the headline figures, then the tables laid out like the papers'."""
    report, patient_report = reports["image"], reports["patient"]
    intervals = result["intervals"]
    iv = {k: tables.fmt_interval(v, 3) for k, v in (intervals or {}).items()
          if k in ("accuracy", "balanced_accuracy", "macro_auc")}
    n_unseen = result["n_images_of_unseen_classes"]
    md = [
        f"# Evaluation of `{run_dir.name}` ({result['preset']}, label `{result['label']}`, "
        f"split `{result['split']}`)",
        "",
        f"Images: {result['n_images']} evaluated, {result['n_failed']} unreadable, "
        f"{n_unseen} of classes the model does not know.",
        "",
        f"Accuracy {report.accuracy:.4f}{iv.get('accuracy', '')}, balanced accuracy "
        f"{report.balanced_accuracy:.4f}{iv.get('balanced_accuracy', '')}, "
        f"macro AUC {report.macro_auc:.4f}{iv.get('macro_auc', '')}."
        + ("" if intervals is None else
           f" In brackets: {100 * intervals['level']:.0f} % bootstrap intervals over "
           f"{intervals['n_clusters']} patients."),
        "",
        tables.per_class_table(report, title="Image level, per class"),
        "",
        tables.per_class_table(patient_report, title="Patient level (mean probability), per class"),
        "",
        tables.grouped_accuracy_table(reports["by_body"], title="Accuracy per body part",
                                      group_header="Body part"),
        "",
        tables.grouped_accuracy_table(reports["by_ts"], title="Accuracy per transfer syntax",
                                      group_header="Transfer syntax",
                                      group_name=tables.uid_name),
        "",
    ]
    vd = result["verdicts"]
    md += [f"Identify verdicts on these images: named right {vd['named_right']:.1%}, named "
           f"wrong {vd['named_wrong']:.1%}, not named {vd['not_named']:.1%} (false UNKNOWN or "
           f"insufficient evidence); named by a unit pattern {vd['named_by_unit_pattern']}, "
           f"by the classifier alone {vd['named_by_classifier']}.", ""]
    if "unit_level" in result:
        u = result["unit_level"]
        md += [f"Unit level ({u['method']}): accuracy {u['accuracy']:.4f} on {u['n_images']} "
               f"images, {u['rejected_as_unknown']} rejected as unknown unit.", ""]
    md += [f"![{k}]({Path(v).name})" for k, v in figures.items()]
    return "\n".join(md) + "\n"


def evaluate_run(
    run_dir: str | Path,
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    *,
    split: str = "test",
    device: str = "cpu",
    n_patches: int | None = None,
    progress: bool = True,
    n_boot: int = 1000,
    allow_modified: bool = False,
) -> EvaluationResult:
    """Evaluate ``run_dir`` on the ``split`` rows of a manifest.

    Args:
        run_dir: run directory with ``model.safetensors`` + ``model.json``.
        rows: manifest rows (need ``path``, ``split``, ``status`` and the run's label column).
        out_dir: where metrics, tables and figures go (created).
        split: which split to evaluate (``test`` by default; ``all`` for every eligible row).
        device: torch device.
        n_patches: inference patches per image (default: the run's calibration setting).
        progress: report progress: a bar on a terminal, a log line every few images
            otherwise.
        n_boot: bootstrap resamples for the 95 % intervals (``intervals``; 0 = none).
        allow_modified: evaluate a run whose files differ from its run manifest (the result's
            ``run_integrity`` then says ``"modified"``) instead of refusing it.

    Returns:
        The metrics dictionary (also written to ``out_dir/metrics.json``).

    Raises:
        ConfigError: no eligible rows in the split.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pred = SourcePredictor.from_run(run_dir, device=device, n_patches=n_patches,
                                    allow_modified=allow_modified)
    col = pred.label_column
    sel, known, unseen = _select_rows(pred, rows, split)
    got = _predict_rows(pred, known, progress=progress, split=split)
    kept = got.kept
    yt = np.asarray(got.y_true)
    pr = np.stack(got.probs).astype(np.float64)
    pr = pr / pr.sum(axis=1, keepdims=True)
    report = C.classification_report(yt, pr, pred.classes)
    yp = pr.argmax(axis=1)

    patients = [str(r.get("PatientID") or "(missing)") for r in kept]
    grouped = C.aggregate_by_group(pr, [f"{p}|{t}" for p, t in zip(patients, yt)], "mean", y_true=yt)
    patient_report = C.classification_report(grouped.y_true, grouped.probs, pred.classes)
    intervals = None
    if n_boot > 0:  # an image without PatientID is its own cluster
        intervals = headline_intervals(yt, pr, [str(r.get("PatientID") or r["path"])
                                                for r in kept], n_boot=n_boot)
        intervals["tpr"] = {pred.classes[c]: v for c, v in intervals["tpr"].items()}
    by_body = C.grouped_accuracy(yt, yp, [r.get("BodyPartExamined") or "(none)" for r in kept])
    by_ts = C.grouped_accuracy(yt, yp, [r.get("TransferSyntaxUID") or "(none)" for r in kept])

    result: dict[str, Any] = {
        "run": str(run_dir),
        "run_integrity": pred.run_integrity,
        "split": split,
        "label": col,
        "preset": pred.preset,
        "classes": pred.classes,
        "n_images": int(len(kept)),
        "n_failed": len(got.failures),
        "failures": got.failures,
        "classes_not_in_model": unseen,
        "n_images_of_unseen_classes": len(sel) - len(known),
        "image_level": to_jsonable(report),
        "patient_level": to_jsonable(patient_report),
        "intervals": to_jsonable(intervals),
        "by_body_part": to_jsonable(by_body),
        "by_transfer_syntax": to_jsonable(by_ts),
        "calibration": {
            "temperature": pred.temperature,
            "unknown_threshold": pred.unknown_threshold,
            "ece": float(expected_calibration_error(pr, yt)),
            "flagged_unknown_fraction": float((pr.max(axis=1) < pred.unknown_threshold).mean()),
        },
        "verdicts": _verdict_shares(got),
    }
    if got.unit_true:
        ok = [t == p for t, p in zip(got.unit_true, got.unit_pred)]
        result["unit_level"] = {
            "method": "reference-pattern correlation (PCE)",
            "n_images": len(ok),
            "accuracy": float(np.mean(ok)),
            "rejected_as_unknown": int(sum(p is None for p in got.unit_pred)),
        }

    _write_predictions_csv(out / "predictions.csv", pred, got, yt, pr)
    atomic_write_json(out / "metrics.json", to_jsonable(result), indent=2)
    figures = _figures(out, Path(run_dir), report, by_body, yt, pr, pred.classes, col, split)
    reports = {"image": report, "patient": patient_report, "by_body": by_body, "by_ts": by_ts}
    atomic_write_bytes(out / "report.md",
                       _report_markdown(result, reports, figures, Path(run_dir)).encode())
    res = EvaluationResult(result)
    res.out_dir = out
    return res
