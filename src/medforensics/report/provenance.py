"""Provenance of a case report: which model files, which training, which software.

A case report is evidence, so it records what produced it: the SHA-256 of every file of the
source and forgery runs, what their ``model.json`` says about training (preset,
preprocessing, training-manifest hash, seed, ...), the run-integrity status, the detector's
parameters and the versions of the software involved. The models are loaded here too
(:func:`load_source`, :func:`load_forgery`), so a model and its provenance always come from
the same run folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from collections.abc import Mapping
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

from medforensics import __version__
from medforensics.common.hashing import cached_file_sha256
from medforensics.forgery.detector import ForgeryDetector
from medforensics.models.metadata import upgrade_legacy_keys
from medforensics.source.predictor import SourcePredictor

__all__ = [
    "TRAINING_FREE", "load_forgery", "load_source", "run_provenance", "software_versions",
    "source_parameters",
]

#: ``forgery=`` values (and ``--forgery-model`` arguments) meaning the training-free
#: detector, ``ForgeryDetector.from_run(None)``, unless a folder of that name exists.
TRAINING_FREE = ("cues", "none")

#: Software whose versions are recorded in the provenance.
_SOFTWARE = ("numpy", "scipy", "torch", "safetensors", "pydicom", "pylibjpeg",
             "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "pillow", "tifffile")

#: Files of a run directory hashed in the provenance (plus everything in ``fingerprints/``).
_RUN_FILES = ("model.json", "model.safetensors", "calibration.json", "config.json", "run.json")

#: ``model.json`` keys copied into the provenance (an older run's ``manifest_sha256`` is read
#: as ``training_manifest_sha256``, see :mod:`medforensics.models.metadata`).
_MODEL_KEYS = ("task", "name", "preset", "preprocess", "preprocessing_description",
               "label_column", "num_classes", "weights_sha256", "training_manifest_sha256",
               "seed", "epochs", "best_epoch", "software_version", "torch_version", "created")


def software_versions() -> dict[str, str]:
    """Versions of medforensics, Python and the installed packages of :data:`_SOFTWARE`
    (packages that are not installed are left out)."""
    out = {"medforensics": __version__, "python": platform.python_version()}
    for name in _SOFTWARE:
        try:
            out[name] = pkg_metadata.version(name)
        except pkg_metadata.PackageNotFoundError:
            continue
    return out


def _run_file_hashes(run_path: Path) -> dict[str, str]:
    """SHA-256 of the run's model files and of every file in ``fingerprints/``."""
    files: dict[str, str] = {}
    for name in _RUN_FILES:
        if (run_path / name).is_file():
            files[name] = cached_file_sha256(run_path / name)
    for sub in ("fingerprints",):
        if (run_path / sub).is_dir():
            for f in sorted((run_path / sub).iterdir()):
                if f.is_file():
                    files[f"{sub}/{f.name}"] = cached_file_sha256(f)
    return files


def run_provenance(run_dir: str | Path | None, metadata: Mapping[str, Any] | None) -> dict:
    """Provenance of a trained run: file hashes and what ``model.json`` says about training.

    Args:
        run_dir: the run directory, when known (its files are hashed).
        metadata: the model's ``model.json`` metadata (e.g. ``SourcePredictor.metadata``);
            read from ``run_dir`` when not given.

    Returns:
        ``{"run": str | None, "files": {name: sha256}, "model": {...}}`` where ``model``
        holds the preset, preprocessing, classes count, label column, training-manifest
        hash, seed, weights hash, software version and creation time of the model.
    """
    meta = upgrade_legacy_keys(dict(metadata or {}))
    files: dict[str, str] = {}
    run = None
    if run_dir is not None:
        run_path = Path(run_dir)
        run = str(run_path.resolve())
        files = _run_file_hashes(run_path)
        if not meta and (run_path / "model.json").is_file():
            try:
                meta = upgrade_legacy_keys(
                    json.loads((run_path / "model.json").read_text(encoding="utf-8")))
            except (OSError, ValueError):
                meta = {}
    model = {k: meta.get(k) for k in _MODEL_KEYS if meta.get(k) is not None}
    if "weights_sha256" in model and "model.safetensors" in files:
        model["weights_match_model_json"] = files["model.safetensors"] == model["weights_sha256"]
    return {"run": run, "files": files, "model": model}


def load_source(source: Any, device: str, allow_modified: bool = False
                ) -> tuple[Any, dict[str, Any] | None]:
    """The source predictor of a report and its provenance.

    Args:
        source: ``None``, a :class:`SourcePredictor` (its ``run_dir``, when set, is hashed) or
            a run directory (loaded with ``SourcePredictor.from_run``).
        device: torch device when ``source`` is a run directory.
        allow_modified: load a run whose files differ from its run manifest.

    Returns:
        ``(predictor, provenance)``, both ``None`` when ``source`` is ``None``.

    Raises:
        ModelFileError: the run cannot be loaded.
    """
    if source is None:
        return None, None
    if isinstance(source, (str, os.PathLike)):
        run = Path(source)
        predictor = SourcePredictor.from_run(run, device=device, allow_modified=allow_modified)
        prov = run_provenance(run, predictor.metadata)
    else:
        predictor = source
        prov = run_provenance(getattr(source, "run_dir", None), getattr(source, "metadata", None))
    prov["run_integrity"] = getattr(predictor, "run_integrity", None)
    return predictor, prov


def _detector_parameters(detector: Any) -> dict[str, Any] | None:
    """The detector's ``params`` or ``config`` (a mapping or a dataclass) as plain JSON."""
    params = getattr(detector, "params", None) or getattr(detector, "config", None)
    if isinstance(params, Mapping):
        return json.loads(json.dumps(dict(params), default=str, sort_keys=True))
    if params is not None and dataclasses.is_dataclass(params) and not isinstance(params, type):
        return json.loads(json.dumps(dataclasses.asdict(params), default=str, sort_keys=True))
    return None


def load_forgery(forgery: Any, allow_modified: bool = False
                 ) -> tuple[Any, dict[str, Any] | None]:
    """The forgery detector of a report and its provenance.

    Args:
        forgery: ``None``, a detector object (anything with ``detect(pixels, meta)``), a run
            directory, or one of :data:`TRAINING_FREE` for the training-free detector.
        allow_modified: load a run whose files differ from its run manifest.

    Returns:
        ``(detector, provenance)``, both ``None`` when ``forgery`` is ``None``; the
        provenance adds ``detector`` (class name), ``run_integrity`` and ``parameters``.

    Raises:
        ModelFileError: the run cannot be loaded.
    """
    if forgery is None:
        return None, None
    if isinstance(forgery, (str, os.PathLike)):
        run: Path | None = Path(forgery)
        if str(forgery).lower() in TRAINING_FREE and not Path(forgery).exists():
            run = None  # the training-free cue detector
        detector = ForgeryDetector.from_run(run, allow_modified=allow_modified)
        prov = run_provenance(run, getattr(detector, "metadata", None))
    else:
        detector = forgery
        prov = run_provenance(getattr(detector, "run_dir", None),
                              getattr(detector, "metadata", None))
    prov["detector"] = type(detector).__name__
    prov["run_integrity"] = getattr(detector, "run_integrity", None)
    params = _detector_parameters(detector)
    if params is not None:
        prov["parameters"] = params
    return detector, prov


def source_parameters(predictor: Any) -> dict[str, Any]:
    """The inference parameters of a source predictor (preset, patches and their seed,
    temperature, UNKNOWN threshold, classes, enrolled units)."""
    return {
        "preset": predictor.preset,
        "label_column": predictor.label_column,
        "n_patches": predictor.n_patches,
        "patch_seed": predictor.seed,
        "temperature": predictor.temperature,
        "unknown_threshold": predictor.unknown_threshold,
        "classes": list(predictor.classes),
        "unit_patterns": list(getattr(predictor.fingerprints, "units", []) or []),
    }
