"""Calibrating a trained source run on its validation split: temperature, open-set tests.

:func:`calibrate_run` fits the softmax temperature, the probability threshold and the
feature-distance open-set model (:mod:`medforensics.source.openset`) on the validation images,
each open-set test at half the target false-UNKNOWN rate, and writes ``calibration.json`` and
``openset.safetensors`` into the run (recorded in ``run.json``). It refuses a threshold that
too few validation images back. See docs/openset.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medforensics.common.jsonio import atomic_write_json
from medforensics.dsp.noisetexture import TEXTURE_LAGS
from medforensics.errors import ConfigError, InvalidArrayError, ReadError
from medforensics.eval.calibration import (
    expected_calibration_error,
    fit_temperature,
    fit_unknown_threshold,
    softmax,
)
from medforensics.io import read_image
from medforensics.models.io import load_model
from medforensics.models.runfiles import record_files, verify_run
from medforensics.source.openset import (
    OPENSET_BLOCKS,
    FeatureOpenSet,
    TooFewImagesError,
    conformal_threshold,
    leave_one_class_out,
    min_images_for,
)
from medforensics.source.predictor import (
    CALIBRATION_FILE,
    OPENSET_FILE,
    SourcePredictor,
)
from medforensics.synth.outliers import write_outlier_images

log = logging.getLogger(__name__)

__all__ = ["calibrate_run", "calibration_summary"]


def _labels_of(rows: Sequence[Mapping[str, Any]], column: str, classes: Sequence[str]) -> list[int]:
    index = {c: i for i, c in enumerate(classes)}
    return [index.get(str(r.get(column, "")), -1) for r in rows]



def calibrate_run(
    run_dir: str | Path,
    rows: Sequence[Mapping[str, Any]],
    *,
    target_false_unknown: float = 0.05,
    n_patches: int = 64,
    device: str = "cpu",
    require_unit_match: bool = True,
    fit_images_per_class: int = 30,
    outlier_devices: int = 8,
    allow_modified: bool = False,
    noise_shape: bool = False,
) -> dict[str, Any]:
    """Fit temperature, the open-set model and its thresholds; write ``RUN/calibration.json``.

    * Temperature: maximum a-posteriori fit on the validation images (prior on ``log T``,
      :func:`medforensics.eval.calibration.fit_temperature`), so separable validation
      data no longer pin it to a bound.
    * Probability threshold: the ``target_false_unknown / 2`` quantile of the validation
      images' calibrated max-probability.
    * Feature open set (:mod:`medforensics.source.openset`): class means and tied covariance of the
      penultimate embeddings of up to ``fit_images_per_class`` training images per class;
      the UNKNOWN threshold on the feature distance is the split-conformal quantile of the
      validation images' distances at ``target_false_unknown / 2``. Both tests must pass, so
      each has half the false-UNKNOWN budget. With too few validation images for that rate
      (39 for a 5 % target) no feature threshold is set, the calibration says so, and the
      classifier alone will then name no device (a matching unit pattern still can).
      With ``noise_shape`` the open-set model has a second block, the image's noise shape
      (:func:`medforensics.dsp.noisetexture.image_noise_shape`: how the device's chain
      correlates its noise), and the distance is the larger of the two blocks': a device is
      named only when its pixels resemble a known one both to the network and in that
      physical measurement. The network's features of an unseen *real* device can fall among
      the simulated devices' (docs/openset.md); its noise shape rarely does.
    * Estimates of how often an unseen device would be named (nothing is tuned on them):
      leave-one-class-out on the validation images, and ``outlier_devices`` freshly drawn
      outlier devices (:mod:`medforensics.synth.outliers`, another seed than training's).

    Writes ``RUN/calibration.json`` and ``RUN/openset.safetensors`` atomically and records
    their hashes in the run manifest ``RUN/run.json``. The run is checked like
    :meth:`SourcePredictor.from_run`, but an existing calibration is not read (so an
    out-of-range one can be replaced by calibrating again).

    Args:
        run_dir: trained run directory.
        rows: manifest rows; ``split == "train"`` rows fit the feature model, ``"val"``
            rows the temperature and thresholds (eligible rows of known classes only).
        target_false_unknown: wanted false-UNKNOWN rate on known devices, in (0, 0.5].
        n_patches: inference patches per image (``patch`` preset).
        device: torch device.
        require_unit_match: with enrolled unit patterns, name a class that has enrolled
            units only when one of them matches (see :mod:`medforensics.source.verdicts`).
        fit_images_per_class: training images per class for the feature model.
        outlier_devices: outlier devices drawn for the estimate (0 = skip).
        allow_modified: calibrate a run whose files differ from its manifest (the changed
            files stay listed as changed: only ``calibration.json`` is re-hashed).
        noise_shape: add the noise-shape block to the open-set model (see above; off by
            default: with one threshold on the larger block distance it loosens the
            network-feature test, and the classifier alone then names pure uniform noise
            more often - docs/openset.md).

    Returns:
        The calibration record written to ``calibration.json``.

    Raises:
        ConfigError: no validation images with a known class, or a bad rate.
        RunIntegrityError: a changed, missing or unlisted run file (unless
            ``allow_modified``).
    """
    from safetensors.numpy import save_file

    if not 0.0 < float(target_false_unknown) <= 0.5:
        raise ConfigError(f"target_false_unknown must be in (0, 0.5], got {target_false_unknown}")

    run = Path(run_dir)
    check = verify_run(run, allow_modified=allow_modified)
    model, meta = load_model(run, map_location=device)
    pred = SourcePredictor(model, meta, device=device, n_patches=n_patches,
                           noise_shape=noise_shape)
    pred.run_integrity = check.status

    val = _usable(rows, "val", pred)
    if not val:
        raise ConfigError("calibration needs validation images (split == 'val') of known classes")
    openset, n_fit = _fit_openset(pred, _usable(rows, "train", pred), fit_images_per_class)
    # Two tests must both pass to name a device, so each gets half the false-UNKNOWN budget
    # (Bonferroni): together they reject at most ``target_false_unknown`` of known images.
    alpha = float(target_false_unknown) / 2.0
    fit = _fit_on_validation(pred, openset, val, alpha)
    z, y_arr, probs = fit.logprobs, fit.labels, fit.probs
    t, thr, feat_thr = fit.temperature, fit.p_threshold, fit.feature_threshold
    loco = leave_one_class_out(openset, fit.embeddings, y_arr, target_false_unknown)
    outlier_rate = None
    if outlier_devices and feat_thr is not None:
        outlier_rate = _outlier_named_rate(pred, openset, t, thr, feat_thr, outlier_devices)
    save_file(openset.to_arrays(), str(run / OPENSET_FILE))
    record = {
        "temperature": t,
        "temperature_fit": "MAP, prior sd 1 on log T",
        "unknown_threshold": thr,
        "target_false_unknown": target_false_unknown,
        "n_patches": n_patches,
        "n_val_images": int(len(y_arr)),
        "val_accuracy": float((probs.argmax(1) == y_arr).mean()),
        "val_ece_before": float(expected_calibration_error(softmax(z), y_arr)),
        "val_ece_after": float(expected_calibration_error(probs, y_arr)),
        "score": "calibrated max-probability and feature distance",
        "openset_file": OPENSET_FILE,
        "openset_fit_images": n_fit,
        "openset_shrinkage": openset.shrinkage,
        "openset_blocks": list(OPENSET_BLOCKS[: len(openset.blocks) or 1]),
        "feature_threshold": feat_thr,
        "val_false_unknown": (None if feat_thr is None else
                              float(np.mean((probs.max(1) < thr) | (fit.distances > feat_thr)))),
        "leave_one_class_out_unknown_rate": loco["mean"],
        "leave_one_class_out": loco["per_class"],
        "outlier_devices_named_rate": outlier_rate,
        "require_unit_match": bool(require_unit_match),
        "threshold_note": fit.note,
    }
    atomic_write_json(run / CALIBRATION_FILE, record, indent=2)
    record_files(run, [CALIBRATION_FILE, OPENSET_FILE])
    log.info("calibration: T=%.3f, UNKNOWN below p=%.3f or above feature distance %s "
             "(val n=%d)", t, thr, "none" if feat_thr is None else f"{feat_thr:.3g}", len(y_arr))
    return record


def _usable(rows: Sequence[Mapping[str, Any]], split: str,
            pred: SourcePredictor) -> list[tuple[Mapping[str, Any], int]]:
    """The eligible rows of ``split`` with a class the model knows, each with its class
    index: only they can say anything about the model's own classes."""
    chosen = [r for r in rows
              if r.get("split") == split and r.get("status", "eligible") == "eligible"]
    return [(r, y) for r, y in zip(chosen, _labels_of(chosen, pred.label_column,
                                                      pred.classes)) if y >= 0]


def _embed_rows(pred: SourcePredictor, items: Sequence[tuple[Mapping[str, Any], int]]
                ) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Log-probabilities, embeddings and classes of the images that can be read; an
    unreadable image is left out with a warning rather than stopping the calibration."""
    lps, embs, ys = [], [], []
    for row, y in items:
        try:
            lp, emb = pred.embeddings(read_image(row["path"]).pixels)
        except (ReadError, InvalidArrayError) as exc:
            log.warning("calibration skips %s: %s", row["path"], exc)
            continue
        lps.append(lp)
        embs.append(emb)
        ys.append(y)
    return lps, embs, ys


def _fit_openset(pred: SourcePredictor, train: Sequence[tuple[Mapping[str, Any], int]],
                 per_class_cap: int) -> tuple[FeatureOpenSet, int]:
    """The feature open-set model fitted on up to ``per_class_cap`` training images per
    class (bounded, so calibration time does not grow with the training set), and how many
    images it was fitted on. With ``pred.noise_shape``, a class none of whose images has a
    measurable noise shape turns the noise-shape block off (``pred.noise_shape`` becomes
    False, with a warning): a block that cannot describe every known device cannot judge.

    Raises:
        ConfigError: a class without any readable training image.
    """
    per_class: dict[int, int] = {}
    fit_items = []
    for row, y in train:
        if per_class.get(y, 0) < per_class_cap:
            per_class[y] = per_class.get(y, 0) + 1
            fit_items.append((row, y))
    _, fit_embs, fit_ys = _embed_rows(pred, fit_items)
    missing = sorted(set(range(len(pred.classes))) - set(fit_ys))
    if missing:
        raise ConfigError("calibration needs training images of every class for the open-set "
                          f"model; none of {[pred.classes[i] for i in missing]}")
    k = len(TEXTURE_LAGS)
    if pred.noise_shape:
        measured = {y for e, y in zip(fit_embs, fit_ys) if np.all(np.isfinite(e[0, -k:]))}
        unmeasured = [pred.classes[i] for i in range(len(pred.classes)) if i not in measured]
        if unmeasured:
            log.warning("no training image of %s has a measurable noise shape (too small or "
                        "too flat); the open-set test uses the network's features only",
                        unmeasured)
            pred.noise_shape = False
            fit_embs = [e[:, :-k] for e in fit_embs]
    width = fit_embs[0].shape[1]
    blocks = (width - k, k) if pred.noise_shape else ()
    openset = FeatureOpenSet.fit(
        np.concatenate(fit_embs), np.concatenate([[y] * len(e) for e, y in zip(fit_embs, fit_ys)]),
        pred.classes, blocks=blocks)
    return openset, len(fit_ys)


@dataclass(frozen=True)
class _ValidationFit:
    """What the validation images give: the temperature and both UNKNOWN thresholds, with
    the per-image values the calibration record reports on."""

    logprobs: np.ndarray
    labels: np.ndarray
    embeddings: list[np.ndarray]
    temperature: float
    probs: np.ndarray
    p_threshold: float
    distances: np.ndarray
    feature_threshold: float | None
    note: str | None


def _fit_on_validation(pred: SourcePredictor, openset: FeatureOpenSet,
                       val: Sequence[tuple[Mapping[str, Any], int]],
                       alpha: float) -> _ValidationFit:
    """Temperature, probability threshold and feature-distance threshold, each test at
    false-UNKNOWN rate ``alpha``; no feature threshold (with a note saying why) when too
    few validation images back one at that rate."""
    val_lps, val_embs, val_ys = _embed_rows(pred, val)
    z = np.stack(val_lps)
    y_arr = np.asarray(val_ys)
    t = float(fit_temperature(z, y_arr, prior_sd=1.0))
    probs = softmax(z / t)
    thr = float(fit_unknown_threshold(probs.max(axis=1), alpha))
    dist = np.array([openset.distance(e) for e in val_embs])
    note = None
    try:
        feat_thr: float | None = conformal_threshold(dist, alpha)
    except TooFewImagesError as exc:
        feat_thr = None
        note = (f"open-set threshold not set: {len(dist)} validation images, "
                f"{min_images_for(alpha)} needed")
        log.warning("%s", exc)
    return _ValidationFit(z, y_arr, val_embs, t, probs, thr, dist, feat_thr, note)


def calibration_summary(cal: Mapping[str, Any]) -> str:
    """One line describing a calibration record (for the command line and reports)."""
    feat = cal.get("feature_threshold")
    text = (f"T={cal['temperature']:.2f}; UNKNOWN below p={cal['unknown_threshold']:.3f}"
            + (f" or above feature distance {feat:.3g}" if feat is not None else
               " (no feature threshold: " + str(cal.get("threshold_note")) + ")")
            + f"; {cal.get('n_val_images')} validation images")
    loco = cal.get("leave_one_class_out_unknown_rate")
    out = cal.get("outlier_devices_named_rate")
    if feat is None:
        # without a feature threshold the classifier alone names nothing: an estimate of
        # what it would reject is not what the run does
        text += "; the classifier alone names no device (only enrolled unit patterns can)"
    elif loco is not None or out is not None:
        text += "; unseen devices, classifier alone: " + ", ".join(
            x for x in (None if loco is None else f"{loco:.0%} of left-out classes rejected",
                        None if out is None else f"{out:.0%} of outlier devices named") if x)
    return text



def _outlier_named_rate(pred: SourcePredictor, openset: Any, temperature: float,
                        p_threshold: float, feature_threshold: float, devices: int) -> float:
    """Share of freshly drawn outlier-device images the classifier alone would name."""
    import tempfile

    named = []
    with tempfile.TemporaryDirectory(prefix="medforensics-outliers-") as tmp:
        for row in write_outlier_images(tmp, devices=devices, images_per_device=3,
                                        seed=10_000 + int(pred.metadata.get("seed") or 0)):
            lp, emb = pred.embeddings(read_image(row["path"]).pixels)
            p = softmax(lp / temperature)
            named.append(p.max() >= p_threshold and openset.distance(emb) <= feature_threshold)
    return float(np.mean(named))
