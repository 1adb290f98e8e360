"""Source-device inference: a trained run turned into class probabilities for one image.

:class:`SourcePredictor` wraps a run directory written by :func:`medforensics.train.engine.train`
(``model.safetensors`` + ``model.json``), its optional calibration (``calibration.json``:
temperature and open-set threshold, written by :func:`calibrate_run`) and its optional unit
reference patterns (``fingerprints/``), all checked against the run manifest ``run.json``
(:mod:`medforensics.models.runfiles`). It is the one place where pixels become predictions;
``evaluate``, ``identify``, the report and the web service all go through it.

Inference policy per preset:

* ``patch``: ``n_patches`` native-resolution patches are chosen with
  :func:`medforensics.data.transforms.sample_patch_positions` (skipping flat, saturated and
  collimated windows) from a generator seeded by ``seed`` only, so an image always gets the
  same verdict; the per-patch log-probabilities are averaged
  (:func:`medforensics.models.patch.aggregate_patch_logprobs`).
* ``deep-rsi`` / ``deepmammo``: the papers' preprocessing
  (:func:`medforensics.data.transforms.paper_preprocess`: 8-bit min-max + resize to 256),
  one forward pass.

Throughput: :meth:`SourcePredictor.predict_paths` and :func:`identify_files` take
``workers=N`` to decode files and choose patch positions in ``N`` worker processes ahead of the
model (:mod:`medforensics.prefetch`; bounded prefetch, so memory stays flat); the results are
exactly those of ``workers=0`` (in-process, the default). See ``docs/performance.md``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medforensics.errors import ConfigError, InvalidArrayError, ModelFileError, ReadError

__all__ = ["SourcePredictor", "Prediction", "calibrate_run", "CALIBRATION_FILE"]

log = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"
FINGERPRINT_DIR = "fingerprints"


@dataclass
class Prediction:
    """Model output for one image.

    Attributes:
        logprobs: (C,) float32 uncalibrated image-level log-probabilities.
        probs: (C,) float32 calibrated probabilities (temperature-scaled), sum 1.
        n_patches: patches used (``patch`` preset), else 1.
    """

    logprobs: np.ndarray
    probs: np.ndarray
    n_patches: int


class SourcePredictor:
    """Predict the source device of images with a trained run.

    Args:
        model: a model from :func:`medforensics.models.io.load_model` (eval mode).
        metadata: its ``model.json`` metadata (needs ``classes`` and ``name``).
        device: torch device for inference.
        temperature: calibration temperature (1.0 = uncalibrated).
        unknown_threshold: open-set threshold on the calibrated max-probability (0 = never
            UNKNOWN).
        n_patches: patches per image for the ``patch`` preset.
        seed: seed of the inference patch positions.
        batch_size: patches per forward pass.
        fingerprints: optional unit reference patterns
            (:class:`medforensics.fingerprint.UnitFingerprints`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        metadata: Mapping[str, Any],
        *,
        device: str | torch.device = "cpu",
        temperature: float = 1.0,
        unknown_threshold: float = 0.0,
        n_patches: int = 64,
        seed: int = 0,
        batch_size: int = 256,
        fingerprints: Any = None,
    ) -> None:
        from medforensics.models.runfiles import MAX_N_PATCHES, MAX_PATCH_PIXELS

        classes = metadata.get("classes")
        if not classes:
            raise ModelFileError("model metadata has no 'classes' list")
        if not 1 <= int(n_patches) <= MAX_N_PATCHES:
            raise ConfigError(f"n_patches must be >= 1 and <= {MAX_N_PATCHES}, got {n_patches}")
        self.model = model.eval().to(device)
        self.metadata = dict(metadata)
        self.device = torch.device(device)
        self.classes: list[str] = [str(c) for c in classes]
        self.preset: str = str(metadata.get("name", ""))
        self.label_column: str = str(metadata.get("label_column", "model"))
        self.temperature = float(temperature)
        self.unknown_threshold = float(unknown_threshold)
        self.n_patches = int(n_patches)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.fingerprints = fingerprints
        spec = dict(metadata.get("input_spec", {}))
        self.patch = int(spec.get("patch", 64))
        self.size = int(spec.get("size", 256))
        if self.preset == "patch" and self.n_patches * self.patch**2 > MAX_PATCH_PIXELS:
            raise ConfigError(f"n_patches {self.n_patches} of {self.patch} px exceed "
                              f"{MAX_PATCH_PIXELS} pixels per image")
        #: "verified", "modified" or "unverified" for a predictor loaded with from_run
        #: (see medforensics.models.runfiles); None when built from objects in memory.
        self.run_integrity: str | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_run(
        cls, run_dir: str | Path, *, device: str = "cpu", n_patches: int | None = None,
        allow_modified: bool = False, **kw: Any
    ) -> SourcePredictor:
        """Load a run directory (model, calibration and fingerprints when present).

        The run's files are first checked against its manifest ``run.json`` and the side
        files' values against their ranges (:mod:`medforensics.models.runfiles`); the result
        is :attr:`run_integrity`, carried by every verdict.

        Args:
            run_dir: the run folder.
            device: torch device.
            n_patches: inference patches per image (default: the calibration's, else 64).
            allow_modified: load a run whose files differ from its manifest (logged; the
                verdicts say ``run_integrity: "modified"``) instead of refusing it. Values
                out of range are refused either way.
            **kw: further constructor arguments.

        Raises:
            ModelFileError: no model in ``run_dir`` or a malformed file.
            RunIntegrityError: a changed, missing or unlisted run file (unless
                ``allow_modified``), or a side-file value out of range.
        """
        from medforensics.models.io import load_model
        from medforensics.models.runfiles import (
            CALIBRATION_BOUNDS,
            check_patch_budget,
            check_values,
            verify_run,
        )

        run = Path(run_dir)
        check = verify_run(run, allow_modified=allow_modified)
        model, meta = load_model(run, map_location=device)
        cal: dict[str, Any] = {}
        cal_path = run / CALIBRATION_FILE
        if cal_path.is_file():
            try:
                cal = json.loads(cal_path.read_text())
            except (OSError, ValueError) as exc:
                raise ModelFileError(f"{cal_path}: unreadable calibration file ({exc})") from exc
            check_values(cal_path, cal, CALIBRATION_BOUNDS)
        fps = None
        if (run / FINGERPRINT_DIR).is_dir():
            from medforensics.fingerprint import UnitFingerprints

            fps = UnitFingerprints.load(run / FINGERPRINT_DIR, verify=False)
        if n_patches is None:
            n_patches = int(cal.get("n_patches", 64))
            if meta.get("name") == "patch":
                check_patch_budget(cal_path, n_patches,
                                   int(dict(meta.get("input_spec") or {}).get("patch", 64)))
        pred = cls(
            model,
            meta,
            device=device,
            temperature=float(cal.get("temperature", 1.0)),
            unknown_threshold=float(cal.get("unknown_threshold", 0.0)),
            n_patches=n_patches,
            fingerprints=fps,
            **kw,
        )
        pred.run_integrity = check.status
        return pred

    # ------------------------------------------------------------------ inference
    @property
    def input_spec(self) -> Any:
        """The settings that turn an image into model input (:class:`medforensics.prefetch.InputSpec`)."""
        from medforensics.prefetch import InputSpec

        return InputSpec(preset=self.preset, patch=self.patch, n_patches=self.n_patches,
                         seed=self.seed, size=self.size)

    def _patch_positions(self, pixels: np.ndarray) -> list[tuple[int, int]]:
        from medforensics.prefetch import patch_positions

        return patch_positions(pixels, self.patch, self.n_patches, self.seed)

    @torch.no_grad()
    def _forward(self, inputs: np.ndarray, n: int) -> tuple[np.ndarray, int]:
        """Image-level log-probabilities from a :func:`medforensics.prefetch.model_input`."""
        if self.preset == "patch":
            from medforensics.models.patch import aggregate_patch_logprobs

            outs = []
            for i in range(0, len(inputs), self.batch_size):
                xb = torch.from_numpy(inputs[i : i + self.batch_size])[:, None].to(self.device)
                outs.append(self.model(xb).float().cpu())
            lp = aggregate_patch_logprobs(torch.cat(outs))
            return lp.numpy().astype(np.float32), n
        xb = torch.from_numpy(inputs)[None, None].to(self.device)
        lp = torch.log_softmax(self.model(xb).float(), dim=-1)[0].cpu().numpy()
        return lp.astype(np.float32), 1

    @torch.no_grad()
    def logprobs(self, pixels: np.ndarray) -> tuple[np.ndarray, int]:
        """Uncalibrated image-level log-probabilities.

        Args:
            pixels: (H, W) float32 stored values (pixel contract of ``read_image``).

        Returns:
            ``(logprobs (C,) float32, n_patches_used)``.

        Raises:
            InvalidArrayError: image not 2-D or smaller than one patch.
        """
        from medforensics.prefetch import model_input

        return self._forward(*model_input(pixels, self.input_spec))

    def predict(self, pixels: np.ndarray) -> Prediction:
        """Calibrated prediction for one image (see :meth:`logprobs`)."""
        return self._calibrated(*self.logprobs(pixels))

    def _calibrated(self, lp: np.ndarray, n: int) -> Prediction:
        z = lp / self.temperature
        z = z - z.max()
        probs = np.exp(z)
        probs = (probs / probs.sum()).astype(np.float32)
        return Prediction(logprobs=lp, probs=probs, n_patches=n)

    def predict_paths(
        self, paths: Iterable[str | Path], *, workers: int = 0, prefetch: int | None = None
    ) -> Iterator[tuple[str, Prediction | None, Any, ReadError | None]]:
        """Stream predictions over files: yields ``(path, prediction, meta, error)``.

        A file that cannot be read yields ``(path, None, None, error)`` and the stream goes on;
        nothing is accumulated, so memory stays flat over any number of files.

        Args:
            paths: image files, consumed lazily.
            workers: 0 (default) reads and prepares each file in this process; N >= 1 does
                it in N worker processes ahead of the model (same results, same order).
                Worth it from a few dozen files on a machine with free cores: the workers
                take about a second to start.
            prefetch: files in flight with workers (default ``2 * workers``): bounds memory.
        """
        for path, pred, meta, err, _ in self._stream(paths, workers, prefetch, False):
            yield path, pred, meta, err

    def _stream(
        self, paths: Iterable[str | Path], workers: int, prefetch: int | None, keep_pixels: bool
    ) -> Iterator[tuple[str, Prediction | None, Any, ReadError | None, np.ndarray | None]]:
        """predict_paths plus the decoded pixels (when ``keep_pixels``)."""
        from functools import partial

        from medforensics.prefetch import map_ordered, prepare_file

        if workers < 0:
            raise ConfigError(f"workers must be >= 0, got {workers}")
        prep = partial(prepare_file, spec=self.input_spec, keep_pixels=keep_pixels)
        items = (map_ordered(prep, paths, workers=workers, prefetch=prefetch) if workers
                 else map(prep, paths))
        for item in items:
            if item.error is not None or item.inputs is None:
                yield item.path, None, None, item.error, None
                continue
            pred = self._calibrated(*self._forward(item.inputs, item.n_patches))
            yield item.path, pred, item.meta, None, item.pixels


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
    allow_modified: bool = False,
) -> dict[str, Any]:
    """Fit temperature scaling and the open-set threshold on the validation split.

    The temperature minimises the validation negative log-likelihood; the UNKNOWN threshold is
    the ``target_false_unknown`` quantile of the calibrated max-probability of correctly and
    incorrectly classified known-device validation images, so that about that fraction of
    known-device images would be called UNKNOWN. Writes ``RUN/calibration.json`` (atomically)
    and records its hash in the run manifest ``RUN/run.json``.

    The run is checked like :meth:`SourcePredictor.from_run`, but an existing calibration is
    not read (so an out-of-range one can be replaced by calibrating again).

    Args:
        run_dir: trained run directory.
        rows: manifest rows; only ``split == "val"`` eligible rows are used.
        target_false_unknown: wanted false-UNKNOWN rate on known devices.
        n_patches: inference patches per image (``patch`` preset).
        device: torch device.
        allow_modified: calibrate a run whose files differ from its manifest (the changed
            files stay listed as changed: only ``calibration.json`` is re-hashed).

    Returns:
        The calibration record written to ``calibration.json``.

    Raises:
        ConfigError: no validation images with a known class.
        RunIntegrityError: a changed, missing or unlisted run file (unless
            ``allow_modified``).
    """
    from medforensics.eval.calibration import (
        expected_calibration_error,
        fit_temperature,
        fit_unknown_threshold,
        softmax,
    )
    from medforensics.io import read_image
    from medforensics.models.io import load_model
    from medforensics.models.runfiles import atomic_write_json, record_files, verify_run

    check = verify_run(run_dir, allow_modified=allow_modified)
    model, meta = load_model(run_dir, map_location=device)
    pred = SourcePredictor(model, meta, device=device, n_patches=n_patches)
    pred.run_integrity = check.status
    val = [r for r in rows if r.get("split") == "val" and r.get("status", "eligible") == "eligible"]
    ys = _labels_of(val, pred.label_column, pred.classes)
    logits, labels = [], []
    for row, y in zip(val, ys):
        if y < 0:
            continue
        lp, _ = pred.logprobs(read_image(row["path"]).pixels)
        logits.append(lp)
        labels.append(y)
    if not logits:
        raise ConfigError("calibration needs validation images (split == 'val') of known classes")
    z = np.stack(logits)
    y_arr = np.asarray(labels)
    # Lower bound 0.5: when the validation images are all classified correctly the NLL keeps
    # falling as T -> 0, and an unbounded fit only makes test probabilities overconfident.
    t = float(fit_temperature(z, y_arr, bounds=(0.5, 20.0)))
    probs = softmax(z / t)
    thr = float(fit_unknown_threshold(probs.max(axis=1), target_false_unknown))
    record = {
        "temperature": t,
        "unknown_threshold": thr,
        "target_false_unknown": target_false_unknown,
        "n_patches": n_patches,
        "n_val_images": int(len(y_arr)),
        "val_accuracy": float((probs.argmax(1) == y_arr).mean()),
        "val_ece_before": float(expected_calibration_error(softmax(z), y_arr)),
        "val_ece_after": float(expected_calibration_error(probs, y_arr)),
        "score": "calibrated max-probability",
    }
    atomic_write_json(Path(run_dir) / CALIBRATION_FILE, record, indent=2)
    record_files(run_dir, [CALIBRATION_FILE])
    log.info("calibration: T=%.3f, UNKNOWN below p=%.3f (val n=%d)", t, thr, len(y_arr))
    return record


def identify_files(
    predictor: SourcePredictor, paths: Iterable[str | Path], *, workers: int = 0,
    prefetch: int | None = None,
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Verdicts for files: yields ``(Verdict, extra)`` per file, streaming, never stopping.

    ``extra`` carries what the pixel-level verdict does not: the unit decided by the reference
    patterns (``unit``, ``unit_score``; ``unit`` is ``None`` when no enrolled unit's pattern
    is present), the number of patches used and, for a predictor loaded from a run, the
    run's ``run_integrity`` (``"verified"``, ``"modified"`` or ``"unverified"``; see
    :mod:`medforensics.models.runfiles`), which unreadable files' ``extra`` carries too.

    Args:
        predictor: a loaded :class:`SourcePredictor`.
        paths: image files (DICOM/PNG/JPEG/TIFF).
        workers: decode-ahead worker processes (see :meth:`SourcePredictor.predict_paths`).
        prefetch: files in flight with workers (default ``2 * workers``).

    Each file is decoded once: the unit patterns reuse the pixels the model saw.
    """
    from medforensics.identify import unreadable

    fps = predictor.fingerprints
    for path, pred, meta, err, pixels in predictor._stream(paths, workers, prefetch,
                                                           fps is not None):
        if err is not None or pred is None:
            yield unreadable(err, path, level=_verdict_level(predictor)), _integrity(predictor)
            continue
        yield _verdict_of(predictor, pred, meta, pixels, path)


def identify_image(predictor: SourcePredictor, pixels: np.ndarray, meta: Any, path: str = ""
                   ) -> tuple[Any, dict[str, Any]]:
    """The :func:`identify_files` verdict of an image that is already decoded.

    Args:
        predictor: a loaded :class:`SourcePredictor`.
        pixels: (H, W) float32 stored values (pixel contract of ``read_image``).
        meta: its ``ImageMeta`` (the header claim comes from it).
        path: shown in the verdict.

    Returns:
        ``(Verdict, extra)`` as :func:`identify_files` yields them.

    Raises:
        InvalidArrayError: the image is not 2-D or smaller than one patch.
    """
    return _verdict_of(predictor, predictor.predict(pixels), meta, pixels, path)


def _integrity(predictor: SourcePredictor) -> dict[str, Any]:
    """``{"run_integrity": ...}`` of a predictor loaded from a run, else ``{}``."""
    status = getattr(predictor, "run_integrity", None)
    return {} if status is None else {"run_integrity": status}


def _verdict_level(predictor: SourcePredictor) -> str:
    col = predictor.label_column
    return col if col in ("manufacturer", "model", "unit") else "model"


def _verdict_of(predictor: SourcePredictor, pred: Prediction, meta: Any,
                pixels: np.ndarray | None, path: str) -> tuple[Any, dict[str, Any]]:
    from medforensics.identify import header_claim, verdict

    level = _verdict_level(predictor)
    v = verdict(pred.probs, predictor.classes, header_claim(meta, level),
                predictor.unknown_threshold, path=path, level=level)
    extra: dict[str, Any] = {"n_patches": pred.n_patches, **_integrity(predictor)}
    fps = predictor.fingerprints
    if fps is not None and pixels is not None:
        cands = unit_candidates(fps, predictor.classes, pred.probs,
                                header_claim(meta, "model"), level=level)
        unit, score = fps.identify_unit(pixels, candidates=cands)
        n_units = (len(fps.units) if cands is None
                   else sum(len(fps.matching_units(m)) for m in cands))
        extra.update(unit=unit, unit_score=float(score), unit_claim=header_claim(meta, "unit"),
                     units_compared=n_units)
    return v, extra


#: Models whose summed calibrated probability reaches this are kept for the unit check.
UNIT_CHECK_COVERAGE = 0.999


def unit_candidates(fingerprints: Any, classes: Sequence[str], probs: np.ndarray,
                    claimed_model: str | None, *, level: str = "model",
                    coverage: float = UNIT_CHECK_COVERAGE) -> list[str] | None:
    """Models whose enrolled units the unit-pattern check must compare with.

    The unit check costs two FFTs of the image per enrolled unit. When the classifier works
    at model level, only the units of the models it does not rule out can have made the
    image: the most probable models up to a summed probability of ``coverage``, plus the
    model the header claims (so that a unit claim is always checked). Units are named
    ``"<model> #<serial>"``.

    Args:
        fingerprints: the enrolled :class:`medforensics.fingerprint.UnitFingerprints`.
        classes: the classifier's model names.
        probs: (C,) calibrated probabilities.
        claimed_model: the header's model label, or None.
        level: the classifier's label column; only ``"model"`` restricts.
        coverage: probability mass to keep (0 < coverage <= 1).

    Returns:
        Model names that have enrolled units (for ``identify_unit(candidates=...)``), or
        None for "every unit" (other label levels, or none of the kept models has a unit).
    """
    if level != "model":
        return None
    order = np.argsort(-np.asarray(probs, dtype=np.float64), kind="stable")
    kept: list[str] = []
    mass = 0.0
    for i in order.tolist():
        kept.append(str(classes[i]))
        mass += float(probs[i])
        if mass >= coverage:
            break
    if claimed_model and claimed_model not in kept:
        kept.append(claimed_model)
    with_units = [m for m in kept if fingerprints.matching_units(m)]
    return with_units or None


def enroll_units(
    run_dir: str | Path,
    rows: Sequence[Mapping[str, Any]],
    *,
    max_images_per_unit: int = 40,
    progress: bool = True,
) -> Any:
    """Build unit reference patterns from the training split and save them in ``RUN/fingerprints``
    (their hashes go into the run manifest ``RUN/run.json``).

    The decision threshold is calibrated on the validation split's images of the same units
    (see :meth:`medforensics.fingerprint.UnitFingerprints.calibrate_threshold`).

    Args:
        run_dir: run directory to write into.
        rows: manifest rows with ``unit``, ``split`` and ``status`` columns.
        max_images_per_unit: cap on reference images per unit.
        progress: log progress per unit.

    Returns:
        The fitted :class:`medforensics.fingerprint.UnitFingerprints`.
    """
    from medforensics.fingerprint import UnitFingerprints
    from medforensics.io import read_image

    def by_unit(split: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for r in rows:
            if r.get("split") == split and r.get("status", "eligible") == "eligible" and r.get("unit"):
                out.setdefault(str(r["unit"]), []).append(str(r["path"]))
        return {u: p[:max_images_per_unit] for u, p in sorted(out.items())}

    def images(paths: list[str]) -> Iterator[np.ndarray]:
        for p in paths:
            try:
                yield read_image(p).pixels
            except ReadError as exc:
                log.warning("fingerprint enrolment skips %s: %s", p, exc)

    train_units = by_unit("train")
    if not train_units:
        raise ConfigError("no training images with a 'unit' label to enrol")
    fps = UnitFingerprints()
    fps.fit({u: images(p) for u, p in train_units.items()})
    val_units = {u: p for u, p in by_unit("val").items() if u in train_units}
    if val_units:
        fps.calibrate_threshold({u: images(p) for u, p in val_units.items()})
    fps.save(Path(run_dir) / FINGERPRINT_DIR)
    from medforensics.fingerprint import META_FILE, WEIGHTS_FILE
    from medforensics.models.runfiles import record_files

    record_files(run_dir, [f"{FINGERPRINT_DIR}/{WEIGHTS_FILE}", f"{FINGERPRINT_DIR}/{META_FILE}"])
    if progress:
        log.info("enrolled %d units from %d images", len(train_units),
                 sum(len(p) for p in train_units.values()))
    return fps
