"""Source-device inference: a trained run turned into class probabilities for one image.

:class:`SourcePredictor` wraps a run directory written by :func:`medforensics.training.engine.train`
(``model.safetensors`` + ``model.json``), its optional calibration (``calibration.json``:
temperature and open-set threshold, written by
:func:`medforensics.source.calibrate.calibrate_run`) and its optional unit
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
model (:mod:`medforensics.source.patches`; bounded prefetch, so memory stays flat); the results are
exactly those of ``workers=0`` (in-process, the default here; the ``identify`` command
defaults to :func:`medforensics.common.runtime.decode_workers`, one per CPU for a batch). See
``docs/performance.md``.
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

from medforensics.errors import (
    ConfigError,
    MemoryBudgetError,
    ModelFileError,
    ReadError,
)
from medforensics.io import read_image
from medforensics.models.io import load_model
from medforensics.models.patch import aggregate_patch_logprobs
from medforensics.models.runfiles import (
    CALIBRATION_BOUNDS,
    MAX_N_PATCHES,
    MAX_PATCH_PIXELS,
    check_patch_budget,
    check_values,
    record_files,
    verify_run,
)
from medforensics.source.openset import (
    OPENSET_BLOCKS,
    FeatureOpenSet,
)
from medforensics.source.patches import (
    InputSpec,
    image_evidence,
    map_ordered,
    model_input,
    patch_positions,
    prepare_file,
    shaped_input,
)
from medforensics.source.schema import image_ids
from medforensics.source.unit_records import FingerprintConfig
from medforensics.source.units import META_FILE, WEIGHTS_FILE, UnitFingerprints
from medforensics.source.verdicts import (
    OpenSetCheck,
    header_claim,
    insufficient,
    unreadable,
    verdict,
)

__all__ = ["SourcePredictor", "Prediction", "CALIBRATION_FILE", "OPENSET_FILE"]

log = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"
FINGERPRINT_DIR = "fingerprints"
OPENSET_FILE = "openset.safetensors"


@dataclass
class Prediction:
    """Model output for one image.

    Attributes:
        logprobs: (C,) float32 uncalibrated image-level log-probabilities.
        probs: (C,) float32 calibrated probabilities (temperature-scaled), sum 1.
        n_patches: patches used (``patch`` preset), else 1.
        feature_distance: open-set feature distance (:mod:`medforensics.source.openset`), ``None``
            when the predictor has no feature model.
        evidence: the image's :class:`medforensics.data.transforms.Evidence`, when computed.
        distance_parts: with a noise-shape block, ``{"network features": d, "noise shape":
            d}``: each block's own nearest-class distance (what the feature distance is made
            of), else None.
    """

    logprobs: np.ndarray
    probs: np.ndarray
    n_patches: int
    feature_distance: float | None = None
    evidence: Any = None
    distance_parts: dict[str, float] | None = None


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
            (:class:`medforensics.source.units.UnitFingerprints`).
        openset: optional :class:`medforensics.source.openset.FeatureOpenSet` of the run.
        feature_threshold: its UNKNOWN threshold on the feature distance (``None``: none
            could be set; with ``openset`` given, the classifier then never names a device).
        require_unit_match: a class with enrolled units is named only when one of them
            matches (see :mod:`medforensics.source.verdicts`).
        knowledge: what the model knows, said in every verdict (e.g. ``"simulated devices
            only"``).
        threshold_note: a warning about the thresholds, said in every verdict.
        noise_shape: append the image's noise shape
            (:func:`medforensics.dsp.noisetexture.image_noise_shape`) to every patch
            embedding, for an open-set model with a noise-shape block (default: when
            ``openset`` has several blocks).
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
        openset: Any = None,
        feature_threshold: float | None = None,
        require_unit_match: bool = False,
        knowledge: str | None = None,
        threshold_note: str | None = None,
        noise_shape: bool | None = None,
    ) -> None:
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
        self.openset = openset
        self.feature_threshold = None if feature_threshold is None else float(feature_threshold)
        self.require_unit_match = bool(require_unit_match)
        self.knowledge = knowledge
        self.threshold_note = threshold_note
        self.noise_shape = (bool(getattr(openset, "blocks", ())) if noise_shape is None
                            else bool(noise_shape))
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
            fps = UnitFingerprints.load(run / FINGERPRINT_DIR, verify=False)
            fps.fft_workers = max(1, torch.get_num_threads())
        if n_patches is None:
            n_patches = int(cal.get("n_patches", 64))
            if meta.get("name") == "patch":
                check_patch_budget(cal_path, n_patches,
                                   int(dict(meta.get("input_spec") or {}).get("patch", 64)))
        openset = None
        if cal.get("openset_file"):
            openset = _load_openset(run, str(cal["openset_file"]), meta)
        feat_thr = cal.get("feature_threshold")
        pred = cls(
            model,
            meta,
            device=device,
            temperature=float(cal.get("temperature", 1.0)),
            unknown_threshold=float(cal.get("unknown_threshold", 0.0)),
            n_patches=n_patches,
            fingerprints=fps,
            openset=openset,
            feature_threshold=None if feat_thr is None else float(feat_thr),
            require_unit_match=bool(cal.get("require_unit_match", False)) and fps is not None,
            knowledge=meta.get("model_knowledge"),
            threshold_note=cal.get("threshold_note"),
            **kw,
        )
        pred.run_integrity = check.status
        return pred

    # ------------------------------------------------------------------ inference
    @property
    def input_spec(self) -> Any:
        """The settings that turn an image into model input (:class:`medforensics.source.patches.InputSpec`)."""
        return InputSpec(preset=self.preset, patch=self.patch, n_patches=self.n_patches,
                         seed=self.seed, size=self.size, noise_shape=self.noise_shape)

    def _patch_positions(self, pixels: np.ndarray) -> list[tuple[int, int]]:
        return patch_positions(pixels, self.patch, self.n_patches, self.seed)

    @torch.no_grad()
    def _run(self, xb: torch.Tensor, want_emb: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and (when wanted) penultimate embeddings of a batch."""
        if not want_emb:
            return self.model(xb).float().cpu(), None
        z = self.model.embed(xb)
        return self.model.classifier(z).float().cpu(), z.float().cpu()

    @torch.no_grad()
    def _forward_full(self, inputs: np.ndarray, n: int, want_emb: bool | None = None,
                      shape: np.ndarray | None = None
                      ) -> tuple[np.ndarray, int, np.ndarray | None]:
        """Log-probabilities (C,), patches used and (n, D) embeddings of a model input.

        Embeddings are computed when ``want_emb`` (default: when an open-set model is loaded);
        the image's noise ``shape`` (F,), when given, is appended to every embedding row.
        """
        if want_emb is None:
            want_emb = self.openset is not None
        if self.preset == "patch":
            outs, embs = [], []
            for i in range(0, len(inputs), self.batch_size):
                xb = torch.from_numpy(inputs[i : i + self.batch_size])[:, None].to(self.device)
                logits, z = self._run(xb, want_emb)
                outs.append(logits)
                if z is not None:
                    embs.append(z)
            lp = aggregate_patch_logprobs(torch.cat(outs))
            emb = torch.cat(embs).numpy() if embs else None
            return lp.numpy().astype(np.float32), n, _with_shape(emb, shape)
        xb = torch.from_numpy(inputs)[None, None].to(self.device)
        logits, z = self._run(xb, want_emb)
        lp = torch.log_softmax(logits, dim=-1)[0].numpy()
        return lp.astype(np.float32), 1, _with_shape(None if z is None else z.numpy(), shape)

    def _forward(self, inputs: np.ndarray, n: int) -> tuple[np.ndarray, int]:
        """Image-level log-probabilities from a :func:`medforensics.source.patches.model_input`."""
        lp, used, _ = self._forward_full(inputs, n)
        return lp, used

    def embeddings(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Uncalibrated log-probabilities (C,) and per-patch embeddings (n, D) of one image.

        Raises:
            InvalidArrayError: image not 2-D or smaller than one patch.
        """
        inputs, n, shape = shaped_input(pixels, self.input_spec)
        lp, _, emb = self._forward_full(inputs, n, want_emb=True, shape=shape)
        if emb is None:
            raise ModelFileError(f"preset {self.preset!r} has no embedding")
        return lp, emb

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
        return self._forward(*model_input(pixels, self.input_spec))

    def predict(self, pixels: np.ndarray) -> Prediction:
        """Calibrated prediction for one image (see :meth:`logprobs`), with its evidence count.

        An image below the evidence floor gets ``n_patches == 0`` and uniform probabilities
        (the model is not run on it).
        """
        evidence = image_evidence(pixels, self.input_spec)
        if not evidence.enough():
            return self._no_evidence(evidence)
        inputs, n, shape = shaped_input(pixels, self.input_spec)
        pred = self._calibrated(*self._forward_full(inputs, n, shape=shape))
        pred.evidence = evidence
        return pred

    def _no_evidence(self, evidence: Any) -> Prediction:
        """The prediction of an image below the evidence floor: model not run, uniform."""
        c = len(self.classes)
        return Prediction(np.full(c, -np.log(c), np.float32), np.full(c, 1 / c, np.float32),
                          0, None, evidence)

    def _calibrated(self, lp: np.ndarray, n: int, emb: np.ndarray | None = None) -> Prediction:
        z = lp / self.temperature
        z = z - z.max()
        probs = np.exp(z)
        probs = (probs / probs.sum()).astype(np.float32)
        dist = parts = None
        if self.openset is not None and emb is not None:
            dist, block = self.openset.distance_and_parts(emb)
            if len(block) == len(OPENSET_BLOCKS):
                parts = dict(zip(OPENSET_BLOCKS, block))
        return Prediction(logprobs=lp, probs=probs, n_patches=n, feature_distance=dist,
                          distance_parts=parts)

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

        if workers < 0:
            raise ConfigError(f"workers must be >= 0, got {workers}")
        prep = partial(prepare_file, spec=self.input_spec, keep_pixels=keep_pixels)
        items = (map_ordered(prep, paths, workers=workers, prefetch=prefetch) if workers
                 else map(prep, paths))
        for item in items:
            if item.error is None and item.inputs is None and item.evidence is not None:
                yield item.path, self._no_evidence(item.evidence), item.meta, None, item.pixels
                continue
            if item.error is not None or item.inputs is None:
                yield item.path, None, None, item.error, None
                continue
            pred = self._calibrated(*self._forward_full(item.inputs, item.n_patches,
                                                        shape=item.noise_shape))
            pred.evidence = item.evidence
            yield item.path, pred, item.meta, None, item.pixels



def identify_files(
    predictor: SourcePredictor, paths: Iterable[str | Path], *, workers: int = 0,
    prefetch: int | None = None,
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Verdicts for files: yields ``(Verdict, extra)`` per file, streaming, never stopping.

    ``extra`` carries what the pixel-level verdict does not: the image's ``frame`` and DICOM
    UIDs (:func:`medforensics.source.schema.image_ids`), the unit decided by the reference
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
    fps = predictor.fingerprints
    for path, pred, meta, err, pixels in predictor._stream(paths, workers, prefetch,
                                                           fps is not None):
        if err is not None or pred is None:
            yield (unreadable(err, path, level=_verdict_level(predictor)),
                   {**_integrity(predictor), **image_ids(path, meta)})
            continue
        yield _verdict_of(predictor, pred, meta, pixels, path)


def identify_image(predictor: SourcePredictor, pixels: np.ndarray, meta: Any, path: str = "",
                   prediction: Prediction | None = None) -> tuple[Any, dict[str, Any]]:
    """The :func:`identify_files` verdict of an image that is already decoded.

    Args:
        predictor: a loaded :class:`SourcePredictor`.
        pixels: (H, W) float32 stored values (pixel contract of ``read_image``).
        meta: its ``ImageMeta`` (the header claim comes from it).
        path: shown in the verdict.
        prediction: ``predictor.predict(pixels)`` when the caller has it already (not
            recomputed).

    Returns:
        ``(Verdict, extra)`` as :func:`identify_files` yields them.

    Raises:
        InvalidArrayError: the image is not 2-D or smaller than one patch.
    """
    if prediction is None:
        prediction = predictor.predict(pixels)
    return _verdict_of(predictor, prediction, meta, pixels, path)


def _integrity(predictor: SourcePredictor) -> dict[str, Any]:
    """``{"run_integrity": ...}`` of a predictor loaded from a run, else ``{}``."""
    status = getattr(predictor, "run_integrity", None)
    return {} if status is None else {"run_integrity": status}


def _verdict_level(predictor: SourcePredictor) -> str:
    col = predictor.label_column
    return col if col in ("manufacturer", "model", "unit") else "model"


def _verdict_of(predictor: SourcePredictor, pred: Prediction, meta: Any,
                pixels: np.ndarray | None, path: str) -> tuple[Any, dict[str, Any]]:
    """The verdict of one predicted image: evidence floor, unit patterns, open set, claim."""
    level = _verdict_level(predictor)
    claim = header_claim(meta, level)
    extra: dict[str, Any] = {"n_patches": pred.n_patches, **_integrity(predictor),
                             **image_ids(path, meta)}
    if pred.distance_parts is not None:
        extra["distance_parts"] = pred.distance_parts
    ev = pred.evidence
    if ev is not None:
        extra["informative_windows"] = ev.informative
    if ev is not None and not ev.enough():
        return insufficient(path, ev.informative, min_informative=ev.required,
                            reason=ev.reason, header_label=claim, level=level,
                            knowledge=predictor.knowledge), extra
    check = OpenSetCheck(
        feature_distance=pred.feature_distance,
        distance_parts=pred.distance_parts,
        feature_threshold=predictor.feature_threshold,
        features_required=True,  # the classifier alone names a device only past an open-set test
        informative=None if ev is None else ev.informative,
        min_informative=4 if ev is None else ev.required,
        knowledge=predictor.knowledge,
        threshold_note=predictor.threshold_note,
    )
    fps = predictor.fingerprints
    if fps is not None and pixels is not None:
        cands = unit_candidates(fps, predictor.classes, pred.probs,
                                header_claim(meta, "model"), level=level)
        try:
            unit, best = fps.decide_unit(pixels, candidates=cands)
        except MemoryBudgetError as exc:
            # the verdict would miss its unit check: a per-file error, the batch goes on

            log.warning("%s: unit patterns not compared: %s", path or "image", exc)
            extra["unit_error"] = str(exc)
            return unreadable(exc, path, header_label=claim, level=level), extra
        n_units = (len(fps.units) if cands is None
                   else sum(len(fps.matching_units(m)) for m in cands))
        extra.update(unit=unit, unit_score=float(getattr(best, fps.config.score)),
                     unit_claim=header_claim(meta, "unit"), units_compared=n_units,
                     unit_window=[*best.origin, *best.overlap])
        top = predictor.classes[int(np.argmax(pred.probs))]
        if unit is not None:
            check.unit = unit
            check.unit_class = next((c for c in predictor.classes
                                     if unit in fps.matching_units(c)), None)
        elif predictor.require_unit_match and fps.matching_units(top):
            check.unit_required = True
    v = verdict(pred.probs, predictor.classes, claim, predictor.unknown_threshold, path=path,
                level=level, check=check)
    return v, extra


def _with_shape(emb: np.ndarray | None, shape: np.ndarray | None) -> np.ndarray | None:
    """``emb`` (n, D) with the noise ``shape`` (F,) appended to every row: (n, D + F)."""
    if emb is None or shape is None:
        return emb
    return np.hstack([emb, np.broadcast_to(np.asarray(shape, emb.dtype), (len(emb), len(shape)))])


def _load_openset(run: Path, name: str, meta: Mapping[str, Any]) -> Any:
    """The run's :class:`medforensics.source.openset.FeatureOpenSet` (safetensors, shapes checked)."""
    from safetensors.numpy import load_file

    if Path(name).name != name or name.startswith("."):
        raise ModelFileError(f"{run / CALIBRATION_FILE}: openset_file must be a file name in "
                             f"the run folder, got {name!r}")
    path = run / name
    try:
        arrays = load_file(str(path))
        return FeatureOpenSet.from_arrays(arrays, meta["classes"])
    except (OSError, ValueError, ConfigError) as exc:
        raise ModelFileError(f"{path}: unusable open-set file ({exc})") from exc


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
        fingerprints: the enrolled :class:`medforensics.source.units.UnitFingerprints`.
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
    window: int | None = None,
) -> Any:
    """Build unit reference patterns from the training split and save them in ``RUN/fingerprints``
    (their hashes go into the run manifest ``RUN/run.json``).

    The decision threshold is calibrated on the validation split's images of the same units
    (see :meth:`medforensics.source.units.UnitFingerprints.calibrate_threshold`).

    Args:
        run_dir: run directory to write into.
        rows: manifest rows with ``unit``, ``split`` and ``status`` columns.
        max_images_per_unit: cap on reference images per unit.
        progress: log progress per unit.
        window: side (px) of the window of a query compared with the patterns, 0 = the
            whole overlap (default: :class:`~medforensics.source.unit_records.
            FingerprintConfig`'s); saved with the patterns.

    Returns:
        The fitted :class:`medforensics.source.units.UnitFingerprints`.
    """
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
    fps = UnitFingerprints(FingerprintConfig() if window is None
                           else FingerprintConfig(window=int(window)))
    fps.fit({u: images(p) for u, p in train_units.items()})
    val_units = {u: p for u, p in by_unit("val").items() if u in train_units}
    if val_units:
        fps.calibrate_threshold({u: images(p) for u, p in val_units.items()})
    fps.save(Path(run_dir) / FINGERPRINT_DIR)

    record_files(run_dir, [f"{FINGERPRINT_DIR}/{WEIGHTS_FILE}", f"{FINGERPRINT_DIR}/{META_FILE}"])
    if progress:
        log.info("enrolled %d units from %d images", len(train_units),
                 sum(len(p) for p in train_units.values()))
    return fps
