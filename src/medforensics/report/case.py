"""Forensic case report: one self-contained HTML page per image.

:func:`render_case_report` analyses one image file and returns one HTML page that needs
nothing else to be read (images embedded as base64 PNG, inline CSS, no scripts, no external
resources). :func:`write_report` does it for many files: one page per image plus an
``index.html`` when the output is a folder.

What a page holds:

* **Image**: a display rendering of the first frame: a window of the stored values (the
  0.5 and 99.5 percentiles, stated on the page) mapped to 8 bits and shrunk to at most 768
  px. It is for people to look at; every analysis uses the full-depth stored values of
  :func:`medforensics.io.read_image`.
* **Device**: the verdict of :func:`medforensics.source.predictor.identify_files` (prediction,
  calibrated probability, top 3, the header's claim, consistent / MISMATCH / UNKNOWN / ...),
  and the acquisition unit from the run's reference patterns when it has them.
* **Forgery** (when a detector is given): score, verdict, forged-area percentage, ELA score
  and the probability map as a heat-map overlay (``ForgeryDetector.detect``).
* **Header**: a summary of the DICOM header (or raster file header). Patient and
  institution identifiers are shown as ``masked`` unless ``mask_identifiers=False``; the
  file path is masked too (archives often name folders after patients): the file is named
  by its SHA-256 instead. Text burned into the pixels is *not* removed.
* **Provenance**: SHA-256 of the input file and of every model file (``model.json``,
  weights, calibration, reference patterns), the model's preset, preprocessing, training
  manifest hash and seed, software versions, the analysis parameters and the time.

Determinism: the time the page was generated is the only thing that changes between two
renders of the same file with the same models; it sits on a line of its own
(``<p class="generated">``). Source inference draws its patches from a fixed seed and the
forgery detector is deterministic, so re-running gives the same numbers.

Unreadable files get a page too (the reader's ``reason`` and message, and the header when
it can still be read); a batch never stops on one file.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import html
import json
import logging
import math
import os
import platform
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medforensics import __version__
from medforensics.common.hashing import cached_file_sha256, file_sha256
from medforensics.data.files import find_files
from medforensics.errors import (
    ConfigError,
    InvalidArrayError,
    MedForensicsError,
    ReadError,
)
from medforensics.forgery.cues.ela import window_to_uint8
from medforensics.forgery.detector import ForgeryDetector, json_tree
from medforensics.io import read_header, read_image
from medforensics.report.images import heat_colours, overlay_rgb, png_b64, preview_grey
from medforensics.report.marks import annotate_regions
from medforensics.source.predictor import SourcePredictor, identify_image
from medforensics.source.verdicts import unreadable
from medforensics.common.atomic import atomic_write_text

__all__ = [
    "CaseAnalysis",
    "IDENTIFYING_KEYWORDS",
    "MASKED",
    "ReportOutput",
    "TRAINING_FREE",
    "analyse_case",
    "dataclass_scalars",
    "json_scalar",
    "render_case_report",
    "render_html",
    "write_report",
]

log = logging.getLogger(__name__)

#: ``forgery=`` values (and ``--forgery-model`` arguments) meaning the training-free
#: detector, ``ForgeryDetector.from_run(None)``, unless a folder of that name exists.
TRAINING_FREE = ("cues", "none")

#: What a masked identifier is shown as.
MASKED = "masked"

#: DICOM keywords treated as identifying the patient, the staff, the institution or the
#: examination (after DICOM PS3.15's basic profile); masked unless ``mask_identifiers=False``.
IDENTIFYING_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientAge",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientMotherBirthName",
    "MedicalRecordLocator",
    "AccessionNumber",
    "StudyID",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "ReferringPhysicianAddress",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "StudyTime",
    "SeriesTime",
    "AcquisitionTime",
    "ContentTime",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
)

#: Non-identifying header fields shown in the summary: (label, DICOM keyword).
_SHOWN_FIELDS: tuple[tuple[str, str], ...] = (
    ("SOP class", "SOPClassUID"),
    ("Modality", "Modality"),
    ("Manufacturer", "Manufacturer"),
    ("Model name", "ManufacturerModelName"),
    ("Device serial number", "DeviceSerialNumber"),
    ("Station name", "StationName"),
    ("Software versions", "SoftwareVersions"),
    ("Detector ID", "DetectorID"),
    ("Detector type", "DetectorType"),
    ("Body part", "BodyPartExamined"),
    ("View position", "ViewPosition"),
    ("Laterality", "ImageLaterality"),
    ("Image type", "ImageType"),
    ("Presentation intent", "PresentationIntentType"),
    ("Burned-in annotation", "BurnedInAnnotation"),
    ("Rows", "Rows"),
    ("Columns", "Columns"),
    ("Frames", "NumberOfFrames"),
    ("Photometric interpretation", "PhotometricInterpretation"),
    ("Bits allocated / stored", "BitsStored"),
    ("Pixel representation", "PixelRepresentation"),
    ("Rescale slope / intercept", "RescaleSlope"),
    ("Transfer syntax", "TransferSyntaxUID"),
    ("Lossy image compression", "LossyImageCompression"),
    ("Character set", "SpecificCharacterSet"),
)

#: Software whose versions are recorded in the provenance.
_SOFTWARE = ("numpy", "scipy", "torch", "safetensors", "pydicom", "pylibjpeg",
             "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "pillow", "tifffile")

#: Files of a run directory hashed in the provenance (plus everything in ``fingerprints/``).
_RUN_FILES = ("model.json", "model.safetensors", "calibration.json", "config.json", "run.json")

_WINDOW_PCT = (0.5, 99.5)
_DISPLAY_MAX_SIDE = 768

_VERDICT_CLASS = {
    "consistent": "ok",
    "MISMATCH": "bad",
    "UNKNOWN": "warn",
    "claim-not-in-model": "warn",
    "no-header-claim": "neutral",
    "insufficient-evidence": "neutral",
    "unreadable": "bad",
}


# ----------------------------------------------------------------------------- data


@dataclass
class CaseAnalysis:
    """Everything one case page shows (plain JSON-able values plus two PNGs).

    Attributes:
        display_name: how the file is named on the page (``None`` when masked).
        file: ``sha256``, ``size_bytes`` and, when readable, ``format``, ``rows``, ``cols``,
            ``n_frames``, ``bits_stored``, ``transfer_syntax``, ``lossy``.
        read_error: ``{"reason", "message"}`` when the image cannot be read, else ``None``.
        image_png: base64 PNG of the display rendering, ``None`` when unreadable.
        window: ``(lo, hi)`` stored-value window of the display rendering.
        device: the device section (see :func:`analyse_case`); ``{"status": "no-model"}``
            without a source model.
        forgery: the forgery section; ``{"status": "no-model"}`` without a detector.
        header: rows ``(label, keyword, value, masked)`` of the header summary.
        n_masked: identifying header fields present and masked.
        burned_in: the header's BurnedInAnnotation value (``""`` when absent).
        provenance: input, models, software and parameters.
        mask_identifiers: whether identifiers are masked on this page.
    """

    display_name: str | None
    file: dict[str, Any]
    read_error: dict[str, str] | None = None
    image_png: str | None = None
    window: tuple[float, float] | None = None
    device: dict[str, Any] = field(default_factory=dict)
    forgery: dict[str, Any] = field(default_factory=dict)
    header: list[tuple[str, str, str, bool]] = field(default_factory=list)
    n_masked: int = 0
    burned_in: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    mask_identifiers: bool = True


@dataclass
class ReportOutput:
    """What :func:`write_report` wrote.

    Attributes:
        pages: one HTML page per input file, in input order.
        index: the ``index.html`` (``None`` for a single ``.html`` output).
        verdicts: per page, the device verdict (or ``"no-model"``) and the forgery verdict.
        n_unreadable: inputs that could not be read (they still have a page).
        n_failed: pages whose analysis failed unexpectedly (an error page was written).
    """

    pages: list[Path]
    index: Path | None
    verdicts: list[dict[str, Any]]
    n_unreadable: int = 0
    n_failed: int = 0


# ----------------------------------------------------------------------------- helpers


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def json_scalar(value: Any) -> Any:
    """A plain JSON scalar for a result attribute.

    NumPy scalars are unwrapped; non-finite floats and anything that is not None, bool, int,
    float or str become None.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return None


def dataclass_scalars(obj: Any) -> dict[str, Any]:
    """The fields of a dataclass instance that are JSON scalars, in field order.

    Arrays and fields whose :func:`json_scalar` is None are left out; a non-dataclass gives {}.
    """
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return {}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        val = getattr(obj, f.name)
        if not isinstance(val, np.ndarray) and json_scalar(val) is not None:
            out[f.name] = json_scalar(val)
    return out


def _software_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"medforensics": __version__, "python": platform.python_version()}
    for name in _SOFTWARE:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def run_provenance(run_dir: str | Path | None, metadata: Mapping[str, Any] | None) -> dict:
    """Provenance of a trained run: file hashes and what ``model.json`` says about training.

    Args:
        run_dir: the run directory, when known (its files are hashed).
        metadata: the model's ``model.json`` metadata (e.g. ``SourcePredictor.metadata``).

    Returns:
        ``{"run": str | None, "files": {name: sha256}, "model": {...}}`` where ``model``
        holds the preset, preprocessing, classes count, label column, training-manifest
        hash, seed, weights hash, software version and creation time of the model.
    """
    meta = dict(metadata or {})
    files: dict[str, str] = {}
    run = None
    if run_dir is not None:
        run_path = Path(run_dir)
        run = str(run_path.resolve())
        for name in _RUN_FILES:
            if (run_path / name).is_file():
                files[name] = cached_file_sha256(run_path / name)
        for sub in ("fingerprints",):
            if (run_path / sub).is_dir():
                for f in sorted((run_path / sub).iterdir()):
                    if f.is_file():
                        files[f"{sub}/{f.name}"] = cached_file_sha256(f)
        if not meta and (run_path / "model.json").is_file():
            try:
                meta = json.loads((run_path / "model.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = {}
    keys = ("task", "name", "preset", "preprocess", "preprocessing_description", "label_column",
            "num_classes", "weights_sha256", "manifest_sha256", "training_manifest_sha256",
            "seed", "epochs", "best_epoch", "software_version", "torch_version", "created")
    model = {k: meta.get(k) for k in keys if meta.get(k) is not None}
    if "weights_sha256" in model and "model.safetensors" in files:
        model["weights_match_model_json"] = files["model.safetensors"] == model["weights_sha256"]
    return {"run": run, "files": files, "model": model}


def _redact(text: str, forms: Sequence[str], replacement: str) -> str:
    for form in sorted({f for f in forms if f}, key=len, reverse=True):
        text = text.replace(form, replacement)
    return text


def _without_path(exc: ReadError) -> str:
    """The error message without the ``"<path>: "`` prefix ReadError puts in front."""
    text = str(exc)
    if exc.path and text.startswith(exc.path + ": "):
        text = text[len(exc.path) + 2:]
    return text


def _read_extra_header(path: str, force: bool) -> dict[str, str]:
    """Identifying and summary DICOM values that ``ImageMeta.header`` does not carry."""
    import pydicom

    wanted = list(IDENTIFYING_KEYWORDS) + [kw for _, kw in _SHOWN_FIELDS] + [
        "BitsAllocated", "RescaleIntercept", "PatientSex"]
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                             specific_tags=[kw for kw in wanted])
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types; the page says so
        log.debug("%s: extra header read failed: %r", path, exc)
        return {}
    out: dict[str, str] = {}
    for kw in wanted:
        if kw not in ds:
            continue
        try:
            value = ds[kw].value
            if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
                text = "\\".join(str(v) for v in value)
            elif isinstance(value, bytes):
                text = value.decode("latin-1", "replace")
            else:
                text = str(value)
        except Exception:  # noqa: BLE001
            text = "(unreadable value)"
        out[kw] = text.strip(" \x00")
    return out


def _header_rows(
    meta: Any, path: str, force: bool, mask: bool
) -> tuple[list[tuple[str, str, str, bool]], int, str]:
    """Header summary rows ``(label, keyword, value, masked)``, masked count, burned-in."""
    from pydicom import uid as _uid

    raw: dict[str, str] = {}
    if meta.format == "dicom":
        raw.update(_read_extra_header(path, force))
    raw.update({k: v for k, v in (meta.header or {}).items() if v not in (None, "")})
    rows: list[tuple[str, str, str, bool]] = []
    if meta.format != "dicom":
        rows.append(("File format", "", meta.format.upper(), False))
        rows.append(("Size", "", f"{meta.cols} x {meta.rows} px, {meta.n_frames} frame(s)",
                     False))
        rows.append(("Bits per sample", "", str(meta.bits_stored), False))
        for k, v in sorted((meta.header or {}).items()):
            rows.append((k, k, str(v), False))
        return rows, 0, ""
    for label, kw in _SHOWN_FIELDS:
        value = raw.get(kw, "")
        if kw == "SOPClassUID" and value:
            value = f"{_uid.UID(value).name} ({value})" if _uid.UID(value).is_valid else value
        elif kw == "TransferSyntaxUID" and value:
            value = f"{_uid.UID(value).name} ({value})"
        elif kw == "BitsStored":
            value = f"{raw.get('BitsAllocated', '?')} / {value or '?'}"
        elif kw == "RescaleSlope":
            if not value and not raw.get("RescaleIntercept"):
                continue
            value = f"{value or '1'} / {raw.get('RescaleIntercept') or '0'}"
        if value == "":
            continue
        rows.append((label, kw, value, False))
    if raw.get("PatientSex"):
        rows.append(("Patient sex", "PatientSex", raw["PatientSex"], False))
    n_masked = 0
    for kw in IDENTIFYING_KEYWORDS:
        value = raw.get(kw, "")
        if value == "":
            continue
        label = _keyword_label(kw)
        if mask:
            n_masked += 1
            rows.append((label, kw, MASKED, True))
        else:
            rows.append((label, kw, value, True))
    return rows, n_masked, raw.get("BurnedInAnnotation", "")


def _keyword_label(keyword: str) -> str:
    from pydicom.datadict import dictionary_description, tag_for_keyword

    tag = tag_for_keyword(keyword)
    return dictionary_description(tag) if tag is not None else keyword


# ----------------------------------------------------------------------------- models


def _load_source(source: Any, device: str, allow_modified: bool = False
                 ) -> tuple[Any, dict[str, Any] | None]:
    """(predictor or None, provenance or None) from a predictor object or a run path."""
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


def _load_forgery(forgery: Any, allow_modified: bool = False
                  ) -> tuple[Any, dict[str, Any] | None]:
    """(detector or None, provenance or None) from a detector object or a run path."""
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
    params = getattr(detector, "params", None) or getattr(detector, "config", None)
    if isinstance(params, Mapping):
        prov["parameters"] = json.loads(json.dumps(dict(params), default=str, sort_keys=True))
    elif params is not None and hasattr(params, "__dataclass_fields__"):
        import dataclasses

        prov["parameters"] = json.loads(
            json.dumps(dataclasses.asdict(params), default=str, sort_keys=True))
    return detector, prov


def _source_parameters(predictor: Any) -> dict[str, Any]:
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


# ----------------------------------------------------------------------------- analysis


def _device_section(predictor: Any, img: Any, path: str, redact: Callable[[str], str]
                    ) -> dict[str, Any]:
    if predictor is None:
        return {"status": "no-model"}

    try:  # the decoded image is reused: one decode per case
        v, extra = identify_image(predictor, img.pixels, img.meta, path)
    except InvalidArrayError as exc:
        v, extra = unreadable(ReadError(str(exc), path), path), {}
    out: dict[str, Any] = {
        "status": "done",
        "verdict": v.verdict,
        "message": redact(v.message),
        "level": v.level,
        "predicted": v.predicted,
        "probability": v.probability,
        "top": [(lab, float(p)) for lab, p in v.top],
        "header_claim": v.header_claim,
        "claim_class": v.claim_class,
        "claim_probability": v.claim_probability,
        "unknown_threshold": v.unknown_threshold,
        "reason": v.reason,
        "n_patches": extra.get("n_patches"),
        "confident": v.confident,
        "named": v.predicted if v.confident else None,
        "named_by": v.named_by,
        "feature_distance": v.feature_distance,
        "feature_threshold": v.feature_threshold,
        "informative_windows": v.informative_windows,
        "model_knowledge": v.model_knowledge,
        "has_unit_patterns": predictor.fingerprints is not None,
        "run_integrity": getattr(predictor, "run_integrity", None),
    }
    if "unit" in extra:
        out.update(unit=extra["unit"], unit_score=_finite(extra.get("unit_score")),
                   unit_claim=extra.get("unit_claim"))
    return out


def _forgery_section(detector: Any, img: Any, max_side: int,
                     redact: Callable[[str], str]) -> dict[str, Any]:
    if detector is None:
        return {"status": "no-model"}

    try:
        res = detector.detect(img.pixels, img.meta)
    except MedForensicsError as exc:
        return {"status": "failed", "message": redact(str(exc)),
                "reason": getattr(exc, "reason", type(exc).__name__)}
    out: dict[str, Any] = {"status": "done"}
    extras = dataclass_scalars(res)
    for name in ("score", "verdict", "forged_area_percent", "ela_score", "inconclusive_reason",
                 "covered_fraction"):
        out[name] = json_scalar(getattr(res, name, None))
        extras.pop(name, None)
    for name in ("note", "message"):
        if isinstance(extras.get(name), str):
            extras[name] = redact(extras[name])
    out["details"] = dict(sorted(extras.items()))
    cues = getattr(res, "cues", None)
    if isinstance(cues, Mapping):
        out["cues"] = {str(k): json_scalar(v) for k, v in cues.items()}
    notes = getattr(res, "notes", None)
    if isinstance(notes, (list, tuple)):
        out["notes"] = [redact(str(n)) for n in notes]
    regions = getattr(res, "regions", None)
    if isinstance(regions, (list, tuple)) and regions:
        out["regions"] = [json_tree(r) for r in regions if isinstance(r, Mapping)]
    pairs = getattr(res, "copy_moves", None)
    if isinstance(pairs, (list, tuple)) and pairs:
        out["copy_moves"] = [json_tree(c) for c in pairs if isinstance(c, Mapping)]
    prob = getattr(res, "prob_map", None)
    out["overlay_png"] = None
    if prob is not None:  # marks numbered like the flagged-area table; the caption has the scale
        over = overlay_rgb(img.pixels, np.asarray(prob), max_side=max_side)
        out["overlay_png"] = png_b64(annotate_regions(
            over, out.get("regions") or [], over.shape[1] / img.pixels.shape[1],
            copy_moves=out.get("copy_moves") or [], legend=False))
    return out


def analyse_case(
    path: str | Path,
    *,
    source: Any = None,
    forgery: Any = None,
    mask_identifiers: bool = True,
    force: bool = False,
    filename: str | None = None,
    max_side: int = _DISPLAY_MAX_SIDE,
    device: str = "cpu",
    allow_modified_run: bool = False,
    _source_prov: dict[str, Any] | None = None,
    _forgery_prov: dict[str, Any] | None = None,
) -> CaseAnalysis:
    """Analyse one image file for a case report (see :func:`render_case_report`).

    Returns:
        A :class:`CaseAnalysis`. The ``device`` section carries the verdict fields
        (``verdict``, ``message``, ``predicted``, ``probability``, ``top``, ``header_claim``,
        ``claim_class``, ``claim_probability``, ``unknown_threshold``, ``n_patches`` and
        ``unit``/``unit_score``/``unit_claim`` when the run has reference patterns); the
        ``forgery`` section carries ``score``, ``verdict``, ``forged_area_percent``,
        ``ela_score``, ``details`` (other scalar fields of the result) and ``overlay_png``.

    Raises:
        ModelFileError: a model run given as a path cannot be loaded.
        ConfigError: a forgery run was given but this installation has no detector.
    """
    spath = str(path)
    predictor, s_prov = _load_source(source, device, allow_modified_run) \
        if _source_prov is None else (source, _source_prov)
    detector, f_prov = _load_forgery(forgery, allow_modified_run) \
        if _forgery_prov is None else (forgery, _forgery_prov)
    shown = filename or os.path.basename(spath)
    display_name = None if mask_identifiers else (filename or spath)
    forms = [spath, os.path.abspath(spath), Path(spath).as_posix()]
    if mask_identifiers:
        forms += [shown] if shown and len(shown) > 3 else []
    replacement = "[file]" if mask_identifiers else (filename or spath)

    def redact(text: str) -> str:
        return _redact(text, forms, replacement)

    file_info: dict[str, Any] = {}
    try:
        file_info["sha256"] = file_sha256(spath)
        file_info["size_bytes"] = os.path.getsize(spath)
    except OSError as exc:
        file_info["sha256"] = None
        log.warning("cannot hash %s: %s", spath, exc.strerror or exc)
    case = CaseAnalysis(display_name=display_name, file=file_info,
                        mask_identifiers=mask_identifiers)

    img = None
    try:
        img = read_image(spath, force=force)
        meta = img.meta
    except ReadError as exc:
        case.read_error = {"reason": exc.reason, "message": redact(_without_path(exc))}
        try:
            meta = read_header(spath, force=force)
        except ReadError:
            meta = None
    if meta is not None:
        file_info.update(format=meta.format, rows=meta.rows, cols=meta.cols,
                         n_frames=meta.n_frames, bits_stored=meta.bits_stored,
                         photometric=meta.photometric, transfer_syntax=meta.transfer_syntax,
                         lossy=bool(meta.lossy))
        case.header, case.n_masked, case.burned_in = _header_rows(
            meta, spath, force, mask_identifiers)
        if mask_identifiers:
            # identifying values must not leak through messages either
            forms += [v for v in (meta.patient_id, meta.institution) if v and len(v) > 2]
    if img is not None:
        _, lo, hi = window_to_uint8(np.where(np.isfinite(img.pixels), img.pixels, 0.0),
                                    None, *_WINDOW_PCT)
        case.window = (float(lo), float(hi))
        case.image_png = png_b64(preview_grey(img.pixels, max_side))
        case.device = _device_section(predictor, img, spath, redact)
        case.forgery = _forgery_section(detector, img, max_side, redact)
    else:
        case.device = {"status": "no-model"} if predictor is None else {"status": "unreadable"}
        case.forgery = {"status": "no-model"} if detector is None else {"status": "unreadable"}

    params: dict[str, Any] = {
        "frame": 0,
        "force": force,
        "mask_identifiers": mask_identifiers,
        "display_window_percentiles": list(_WINDOW_PCT),
        "display_max_side": max_side,
        "device": device,
    }
    if predictor is not None:
        params["source"] = _source_parameters(predictor)
    case.provenance = {
        "input": {"sha256": file_info.get("sha256"), "size_bytes": file_info.get("size_bytes"),
                  "path": display_name if display_name is not None else MASKED},
        "source_model": s_prov,
        "forgery_model": f_prov,
        "software": _software_versions(),
        "parameters": params,
    }
    return case


# ----------------------------------------------------------------------------- HTML

_CSS = """
:root { --ok:#1b7f3b; --bad:#b3261e; --warn:#a15c00; --neutral:#55606e; --line:#d9dde3;
        --bg:#f6f7f9; --ink:#1d2430; --muted:#5b6472; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1100px; margin:0 auto; padding:24px 28px 40px; }
header.top { border-bottom:3px solid var(--ink); padding-bottom:10px; margin-bottom:18px; }
h1 { font-size:24px; margin:0 0 4px; }
h2 { font-size:18px; margin:0 0 10px; padding-bottom:4px; border-bottom:1px solid var(--line); }
h3 { font-size:15px; margin:14px 0 6px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:16px 18px;
          margin:0 0 16px; }
.sub { color:var(--muted); margin:0; }
.mono, code { font-family: ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:13px;
              word-break:break-all; }
.summary { display:grid; grid-template-columns:1fr 1fr; gap:12px; }
.card { border:1px solid var(--line); border-radius:8px; padding:12px 14px; background:#fff; }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase;
               letter-spacing:.05em; }
.card .big { font-size:20px; font-weight:650; margin:2px 0 4px; }
.badge { display:inline-block; padding:2px 9px; border-radius:999px; color:#fff;
         font-weight:650; font-size:13px; }
.ok { background:var(--ok); } .bad { background:var(--bad); } .warn { background:var(--warn); }
.neutral { background:var(--neutral); }
.t-ok { color:var(--ok); } .t-bad { color:var(--bad); } .t-warn { color:var(--warn); }
.figs { display:flex; flex-wrap:wrap; gap:16px; }
figure { margin:0; flex:1 1 320px; }
figure img { display:block; width:100%; max-width:640px; height:auto;
             border:1px solid var(--line); background:#000; }
figcaption { color:var(--muted); font-size:13px; margin-top:4px; }
table { border-collapse:collapse; width:100%; table-layout:fixed; }
table.list { table-layout:auto; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line);
         vertical-align:top; overflow-wrap:anywhere; }
th { width:32%; color:var(--muted); font-weight:600; }
table.list th { width:auto; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
.bar { background:#e7eaf0; border-radius:3px; height:10px; width:100%; min-width:80px; }
.bar span { display:block; height:10px; border-radius:3px; background:#3d6fb6; }
.masked { color:var(--muted); font-style:italic; }
.note { color:var(--muted); font-size:13px; }
.alert { border-left:4px solid var(--bad); background:#fdf1f0; padding:8px 12px;
         margin:0 0 16px; border-radius:4px; }
.info { border-left:4px solid var(--neutral); background:#f1f3f6; padding:8px 12px;
        margin:10px 0 0; border-radius:4px; font-size:13px; }
figure img.ramp { display:inline-block; width:160px; height:10px; vertical-align:middle;
                  border:1px solid #999; }
p.generated { color:var(--muted); font-size:13px; margin:18px 0 0; }
@media print { body { background:#fff; } section { break-inside:avoid; } }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _fmt_p(p: Any) -> str:
    v = _finite(p)
    return "-" if v is None else f"{v:.3f}"


def _fmt_num(x: Any, digits: int = 3) -> str:
    v = _finite(x)
    if v is None:
        return "-"
    return f"{v:.{digits}f}"


def _badge(verdict: str | None) -> str:
    if not verdict:
        return '<span class="badge neutral">-</span>'
    cls = _VERDICT_CLASS.get(verdict, _forgery_class(verdict))
    return f'<span class="badge {cls}">{_e(verdict)}</span>'


def _forgery_class(verdict: str) -> str:
    v = verdict.lower()
    if any(w in v for w in ("forged", "tamper", "manipulat", "suspicious", "edited")):
        return "bad"
    if any(w in v for w in ("authentic", "clean", "original", "pristine")):
        return "ok"
    if "uncertain" in v or "inconclusive" in v or "unknown" in v:
        return "warn"
    return "neutral"


def _kv_table(rows: Iterable[tuple[str, str]], raw: bool = False) -> str:
    body = "".join(
        f"<tr><th>{_e(k)}</th><td>{v if raw else _e(v)}</td></tr>" for k, v in rows
    )
    return f"<table>{body}</table>"


_INTEGRITY_NOTES = {
    "modified": "the run's files differ from its run manifest (loaded with "
                "--allow-modified-run): this result is not evidence",
    "unverified": "the run has no run manifest: its files could not be checked",
}


def _integrity_note(status: Any) -> str:
    """A warning line for a ``run_integrity`` other than ``verified`` (else empty)."""
    text = _INTEGRITY_NOTES.get(str(status)) if status else None
    return f'<div class="note">run {_e(status)}: {_e(text)}</div>' if text else ""


def _device_card(dev: Mapping[str, Any]) -> str:
    status = dev.get("status")
    if status == "no-model":
        return ('<div class="card"><div class="label">Source device</div>'
                '<div class="big">not analysed</div><div class="note">no source model given'
                "</div></div>")
    if status != "done":
        return ('<div class="card"><div class="label">Source device</div>'
                f'<div class="big">{_badge("unreadable")}</div></div>')
    pred = dev.get("predicted")
    says = (f"pixels say <b>{_e(pred)}</b> (p = {_fmt_p(dev.get('probability'))})"
            if dev.get("confident") and pred is not None else "pixels name <b>no device</b>")
    return (
        '<div class="card"><div class="label">Source device</div>'
        f'<div class="big">{_badge(dev.get("verdict"))}</div>'
        f"<div>{says}; "
        f"header claims <b>{_e(dev.get('header_claim') or 'nothing')}</b></div>"
        f"{_integrity_note(dev.get('run_integrity'))}</div>"
    )


def _forgery_card(fg: Mapping[str, Any]) -> str:
    status = fg.get("status")
    if status == "no-model":
        return ('<div class="card"><div class="label">Forgery</div>'
                '<div class="big">not analysed</div><div class="note">no forgery model given'
                "</div></div>")
    if status != "done":
        text = "analysis failed" if status == "failed" else "unreadable"
        return (f'<div class="card"><div class="label">Forgery</div>'
                f'<div class="big">{_badge(text)}</div></div>')
    reason = fg.get("inconclusive_reason")
    return (
        '<div class="card"><div class="label">Forgery</div>'
        f'<div class="big">{_badge(str(fg.get("verdict") or "-"))}</div>'
        + (f'<div class="note">{_e(reason)}</div>' if reason else "")
        + f"<div>score <b>{_fmt_num(fg.get('score'))}</b>; forged area "
        f"<b>{_fmt_num(fg.get('forged_area_percent'), 2)} %</b></div>"
        f"{_integrity_note((fg.get('details') or {}).get('run_integrity'))}</div>"
    )


def _device_html(dev: Mapping[str, Any], classes: Sequence[str] | None) -> str:
    status = dev.get("status")
    if status == "no-model":
        return ('<section id="device"><h2>Source device</h2><p>No source model given: the '
                "device was not analysed.</p></section>")
    if status != "done":
        return ('<section id="device"><h2>Source device</h2><p>Not analysed: the image '
                "could not be read (see above).</p></section>")
    if dev.get("verdict") == "unreadable":
        return (f'<section id="device"><h2>Source device</h2><p>{_badge("unreadable")} '
                f"{_e(dev.get('message'))}</p></section>")
    level = dev.get("level") or "model"
    top_rows = "".join(
        f"<tr><td>{i}</td><td>{_e(lab)}</td><td class=\"num\">{p:.3f}</td>"
        f'<td><div class="bar"><span style="width:{max(0.0, min(1.0, p)) * 100:.1f}%">'
        "</span></div></td></tr>"
        for i, (lab, p) in enumerate(dev.get("top") or [], 1)
    )
    thr = dev.get("unknown_threshold")
    named = dev.get("confident") and dev.get("predicted") is not None
    pixels_say = (f"<b>{_e(dev.get('predicted'))}</b>, calibrated probability "
                  f"{_fmt_p(dev.get('probability'))}" + (
                      " (named by an enrolled unit's reference pattern)"
                      if dev.get("named_by") == "unit-pattern" else "")
                  if named else
                  "<b>no device named</b>" + (
                      f" <span class=\"note\">(nearest: {_e(dev.get('predicted'))}, "
                      f"p={_fmt_p(dev.get('probability'))})</span>"
                      if dev.get("predicted") is not None else ""))
    dist, dthr = dev.get("feature_distance"), dev.get("feature_threshold")
    rows = [
        ("Verdict", f"{_badge(dev.get('verdict'))} {_e(dev.get('message'))}"),
        (f"Pixels say ({_e(level)})", pixels_say),
        ("Open-set feature distance", "-" if dist is None else
         f"{_fmt_num(dist, 2)} (threshold {_fmt_num(dthr, 2) if dthr is not None else 'none'}"
         "; above it the pixels match no known device)"),
        ("Informative windows", _e(dev.get("informative_windows", "-"))),
        (f"Header claims ({_e(level)})", _e(dev.get("header_claim") or "nothing at this level")
         + ("" if dev.get("header_claim") is None or dev.get("claim_class") is not None
            else " <span class=\"note\">(not among the model's classes)</span>")),
        ("Probability of the claimed device", _fmt_p(dev.get("claim_probability"))
         if dev.get("claim_probability") is not None else "-"),
        ("UNKNOWN threshold", "none (uncalibrated run: no open-set rejection)"
         if not thr else f"{thr:.3f} (calibrated max-probability below it: UNKNOWN)"),
        ("Patches used", _e(dev.get("n_patches"))),
    ]
    if dev.get("has_unit_patterns") and "unit" in dev:
        unit, claim = dev.get("unit"), dev.get("unit_claim")
        if unit is None:
            unit_text = "no enrolled unit's reference pattern is present in the image"
        elif claim is not None and unit == claim:
            unit_text = f"<b>{_e(unit)}</b> <span class=\"t-ok\">(matches the header)</span>"
        else:
            unit_text = (f"<b>{_e(unit)}</b> <span class=\"t-bad\">(header claims "
                         f"{_e(claim or 'no unit')})</span>")
        rows.append(("Acquisition unit (reference patterns)",
                     f"{unit_text}; PCE {_fmt_num(dev.get('unit_score'), 1)}"))
    else:
        rows.append(("Acquisition unit", "no reference patterns in this run"))
    classes_html = ""
    if classes:
        items = "".join(f"<li>{_e(c)}</li>" for c in classes)
        classes_html = (f"<details><summary>{len(classes)} devices the model was trained on"
                        f"</summary><ul>{items}</ul></details>")
    return (
        '<section id="device"><h2>Source device</h2>'
        + _kv_table(rows, raw=True)
        + '<h3>Top 3</h3><table class="list"><tr><th>#</th><th>Device</th>'
        '<th>p</th><th style="width:40%"></th></tr>' + top_rows + "</table>"
        + classes_html
        + (f'<p class="note"><b>This model knows only {_e(dev["model_knowledge"])}.</b></p>'
           if dev.get("model_knowledge") else "")
        + '<p class="note">Probabilities are calibrated (temperature scaling on the run\'s '
        "validation split). A device is named only when an enrolled unit's reference pattern "
        "matches, or the classifier's open-set test passes (probability and feature distance "
        "within their thresholds). consistent = the named device is the claimed one; "
        "MISMATCH = another known device is named; UNKNOWN = the pixels match none of the "
        "known devices (the claim is neither confirmed nor refuted); insufficient-evidence = "
        "too little of the image carries readable detector noise.</p></section>"
    )


def _ramp_png() -> str:
    """The overlay's colour scale (``service.render.heat_colours``) as a 160x10 PNG."""
    ramp = heat_colours(np.tile(np.linspace(0.0, 1.0, 160, dtype=np.float32), (10, 1)))
    return png_b64(np.rint(ramp * 255.0).astype(np.uint8))


def _forgery_html(fg: Mapping[str, Any], image_png: str | None) -> str:
    status = fg.get("status")
    if status == "no-model":
        return ('<section id="forgery"><h2>Forgery</h2><p>No forgery model given: forgery '
                "was not analysed.</p></section>")
    if status == "unreadable":
        return ('<section id="forgery"><h2>Forgery</h2><p>Not analysed: the image could not '
                "be read (see above).</p></section>")
    if status == "failed":
        return (f'<section id="forgery"><h2>Forgery</h2><p>{_badge("analysis failed")} '
                f"{_e(fg.get('reason'))}: {_e(fg.get('message'))}</p></section>")
    ela = fg.get("ela_score")
    rows = [
        ("Verdict", _badge(str(fg.get("verdict") or "-")) + (
            f" {_e(fg['inconclusive_reason'])}" if fg.get("inconclusive_reason") else "")),
        ("Forgery score", _fmt_num(fg.get("score"))),
        ("Forged area", f"{_fmt_num(fg.get('forged_area_percent'), 2)} % of the image"),
        ("ELA score", (f"{_fmt_num(ela, 2)} <span class=\"note\">(mean error-level "
                       "difference, % of 8-bit full scale; not a share of pixels)</span>")
         if _finite(ela) is not None else
         '<span class="note">not run (ELA does not apply to this image; see the notes)</span>'),
    ]
    if _finite(fg.get("covered_fraction")) is not None:
        rows.append(("Readable share", f"{100 * float(fg['covered_fraction']):.1f} % of the "
                     "image carries measurable noise (the cues read only there)"))
    if fg.get("cues"):
        rows.append(("Cue scores", ", ".join(
            f"{_e(k)} {_fmt_num(v)}" for k, v in fg["cues"].items())))
    for k, v in (fg.get("details") or {}).items():
        rows.append((k.replace("_", " "), _e(v) if not isinstance(v, float) else f"{v:.4g}"))
    if fg.get("notes"):
        rows.append(("Notes", "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in fg["notes"])
                     + "</ul>"))
    regions = _regions_html(fg.get("regions") or []) + _copy_moves_html(
        fg.get("copy_moves") or [])
    figs = ""
    if fg.get("overlay_png"):
        figs = (
            '<div class="figs">'
            + (f'<figure><img alt="image" src="data:image/png;base64,{image_png}">'
               "<figcaption>Image (display rendering)</figcaption></figure>" if image_png else "")
            + f'<figure><img alt="forgery heat map" src="data:image/png;base64,'
            f'{fg["overlay_png"]}"><figcaption>Forgery probability map over the image: '
            f'0 <img class="ramp" alt="colour scale" src="data:image/png;base64,{_ramp_png()}">'
            " 1 (the colour's opacity grows with the probability; display only). Boxes: the "
            "flagged areas, numbered as in the table; arrow: copy-move from its source (dashed) "
            "to the pasted copy; dashed magenta line: copy-move whose direction is not known."
            "</figcaption>"
            "</figure></div>"
        )
    return ('<section id="forgery"><h2>Forgery</h2>' + _kv_table(rows, raw=True) + regions
            + figs + "</section>")


def _regions_html(regions: list[Mapping[str, Any]]) -> str:
    """Table of the flagged areas (largest first), or nothing."""
    if not regions:
        return ""
    body = []
    for i, r in enumerate(regions, 1):
        x0, y0, x1, y1 = (int(v) for v in r.get("bbox", (0, 0, 0, 0)))
        cp = r.get("copy_of") or {}
        copy = ""
        if cp:
            px0, py0, px1, py1 = (int(v) for v in cp.get("partner_bbox", (0, 0, 0, 0)))
            turn = cp.get("transform") or "identity"
            role = cp.get("role") or "undetermined"
            what = ('<span class="t-warn">direction undetermined</span>: either area could '
                    "be the paste" if role == "undetermined" else
                    f"this area: {_e(role)}" + (f" ({_e(cp['cue'])})" if cp.get("cue")
                                                else ""))
            copy = (f"partner ({px0}, {py0})-({px1}, {py1}); {what}"
                    + ("" if turn == "identity" else f", {_e(turn)}")
                    + (", matched by content" if cp.get("method") == "content" else ""))
        cue = _e(r.get("cue") or "-") + (
            " (values on a coarse lattice: scaled up from fewer grey levels)"
            if r.get("coarse_lattice") else "")
        body.append(
            f"<tr><td>{i}</td><td>({x0}, {y0})-({x1}, {y1})</td><td>{x1 - x0} x {y1 - y0}</td>"
            f"<td>{_fmt_num(r.get('area_percent'), 2)} %</td><td>{_fmt_num(r.get('mean_prob'))}"
            f"</td><td>{cue}</td><td>{copy}</td></tr>")
    return ("<h3>Flagged areas</h3><table><tr><th>#</th><th>box (x, y), ends exclusive</th>"
            "<th>size px</th><th>of the image</th><th>mean probability</th><th>cue</th>"
            "<th>copy-move</th></tr>" + "".join(body) + "</table>")


def _copy_moves_html(pairs: list[Mapping[str, Any]]) -> str:
    """Table of the copy-move pairs with their direction and its evidence, or nothing."""
    if not pairs:
        return ""

    def box(b: Any) -> str:
        if not b:
            return "-"
        x0, y0, x1, y1 = (int(v) for v in b)
        return f"({x0}, {y0})-({x1}, {y1})"

    body = []
    for i, c in enumerate(pairs, 1):
        if c.get("direction") == "undetermined" or not c.get("pasted_bbox"):
            what = ('<span class="t-warn">undetermined</span>: the two areas hold the same '
                    f"content, {box(c.get('bbox_a'))} and {box(c.get('bbox_b'))}; which one "
                    "was pasted is not known")
        else:
            what = (f"pasted at <b>{box(c.get('pasted_bbox'))}</b>, copied from "
                    f"{box(c.get('source_bbox'))}")
        turn = c.get("transform") or "identity"
        body.append(f"<tr><td>{i}</td><td>{what}</td><td>{_e(turn)}</td>"
                    f"<td>{_e(c.get('evidence') or '-')}</td></tr>")
    return ("<h3>Copy-moves</h3><table><tr><th>#</th><th>direction</th><th>transform</th>"
            "<th>evidence</th></tr>" + "".join(body) + "</table>")


def _header_html(case: CaseAnalysis) -> str:
    if not case.header:
        return ('<section id="header"><h2>Header</h2><p>The header could not be read.</p>'
                "</section>")
    body = "".join(
        f"<tr><th>{_e(label)}</th><td>"
        + (f'<span class="masked">{MASKED}</span>' if masked and value == MASKED
           else _e(value))
        + "</td></tr>"
        for label, _kw, value, masked in case.header
    )
    if case.file.get("format") not in (None, "dicom"):
        note = ("A raster file carries no DICOM header (no patient fields); "
                + ("the file path is masked." if case.mask_identifiers
                   else "identifiers are shown on this page."))
    elif case.mask_identifiers:
        note = (f"{case.n_masked} identifying field(s) masked (patient, staff, institution, "
                "dates, UIDs); the file path is masked too. Run with --show-identifiers "
                "(mask_identifiers=False) to reveal them. Masking covers the header only: "
                "text burned into the pixels is not removed.")
    else:
        note = "Identifiers are shown on this page."
    burned = ""
    if case.burned_in.upper() == "YES":
        burned = ('<div class="info">The header says the pixels carry burned-in annotation '
                  "(BurnedInAnnotation = YES): the image may show identifying text.</div>")
    return (f'<section id="header"><h2>Header</h2><table>{body}</table>'
            f'<p class="note">{_e(note)}</p>{burned}</section>')


def _json_block(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(", ", ": "))
    return f'<span class="mono">{_e(text)}</span>'


def _model_prov_rows(prov: Mapping[str, Any] | None, what: str) -> list[tuple[str, str]]:
    if prov is None:
        return [(what, f"no {what.lower()} given")]
    rows = [(f"{what}: run", _e(prov.get("run") or "none (no run directory: training-free "
                                  "or passed in as an object)"))]
    if prov.get("detector"):
        rows.append((f"{what}: detector", _e(prov["detector"])))
    if prov.get("run_integrity"):
        rows.append((f"{what}: run integrity", _e(prov["run_integrity"])
                     + _integrity_note(prov["run_integrity"])))
    for name, sha in (prov.get("files") or {}).items():
        rows.append((f"{what}: {name}", f'<span class="mono">sha256 {_e(sha)}</span>'))
    model = prov.get("model") or {}
    labels = {
        "preset": "preset", "name": "preset", "preprocess": "preprocessing",
        "preprocessing_description": "preprocessing (detail)", "label_column": "label",
        "weights_sha256": "weights sha256 (model.json)", "manifest_sha256":
        "training manifest sha256", "training_manifest_sha256": "training manifest sha256 (file)",
        "seed": "training seed", "epochs": "epochs", "best_epoch": "best epoch",
        "software_version": "trained with medforensics", "torch_version": "trained with torch",
        "created": "model created", "task": "task", "num_classes": "classes",
        "weights_match_model_json": "weights file matches model.json",
    }
    seen = set()
    for key, label in labels.items():
        if key in model and label not in seen:
            seen.add(label)
            val = model[key]
            cell = (f'<span class="mono">{_e(val)}</span>' if "sha256" in key else _e(val))
            rows.append((f"{what}: {label}", cell))
    if prov.get("parameters"):
        rows.append((f"{what}: parameters", _json_block(prov["parameters"])))
    return rows


def _provenance_html(case: CaseAnalysis) -> str:
    prov = case.provenance
    inp = prov.get("input", {})
    rows: list[tuple[str, str]] = [
        ("Input file", f'<span class="mono">sha256 {_e(inp.get("sha256") or "not readable")}'
                       f"</span>"),
        ("Input size", f"{_e(inp.get('size_bytes'))} bytes"),
        ("Input path", '<span class="masked">masked</span>' if inp.get("path") == MASKED
         else f'<span class="mono">{_e(inp.get("path"))}</span>'),
    ]
    f = case.file
    if f.get("format"):
        ts = f.get("transfer_syntax") or ""
        if ts:
            from pydicom import uid as _uid

            ts = f"{_uid.UID(ts).name} ({ts})" if _uid.UID(ts).is_valid else ts
        rows.append(("Format", _e(f"{f.get('format')} {ts}".strip())
                     + (" (lossy compression)" if f.get("lossy") else "")))
    rows += _model_prov_rows(prov.get("source_model"), "Source model")
    rows += _model_prov_rows(prov.get("forgery_model"), "Forgery model")
    sw = prov.get("software", {})
    rows.append(("Software", _e(", ".join(f"{k} {v}" for k, v in sw.items()))))
    params = dict(prov.get("parameters", {}))
    src = params.pop("source", None)
    rows.append(("Parameters", _json_block(params)))
    if src is not None:
        src = {k: v for k, v in src.items() if k not in ("classes",)}
        rows.append(("Source inference parameters", _json_block(src)))
    return '<section id="provenance"><h2>Provenance</h2>' + _kv_table(rows, raw=True) + \
        "</section>"


def _generated_line(when: _dt.datetime) -> str:
    stamp = when.astimezone(_dt.timezone.utc).isoformat(timespec="seconds")
    return f'<p class="generated">Report generated {_e(stamp)}</p>'


def _page(title: str, body: str, when: _dt.datetime) -> str:
    # The generated-time line is the only line that differs between two renders.
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="medforensics">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"{body}\n"
        f"{_generated_line(when)}\n"
        "</main>\n</body>\n</html>\n"
    )


def render_html(case: CaseAnalysis, *, generated_at: _dt.datetime | None = None) -> str:
    """The HTML page of an analysed case (see :func:`render_case_report`)."""
    when = generated_at or _dt.datetime.now(_dt.timezone.utc)
    sha = case.file.get("sha256") or ""
    name = case.display_name
    subtitle = (f'File <span class="mono">{_e(name)}</span>' if name is not None
                else "File path masked")
    parts = [
        '<header class="top"><h1>Forensic case report</h1>'
        f'<p class="sub">{subtitle} &middot; sha256 <span class="mono">{_e(sha or "-")}'
        "</span></p></header>"
    ]
    if not case.mask_identifiers:
        parts.append('<div class="alert">This page shows patient identifiers.</div>')
    if case.read_error is not None:
        parts.append(
            f'<div class="alert"><b>The image could not be read</b> '
            f'({_e(case.read_error["reason"])}): {_e(case.read_error["message"])}</div>')
    parts.append(f'<div class="summary">{_device_card(case.device)}'
                 f"{_forgery_card(case.forgery)}</div><br>")
    if case.image_png:
        f = case.file
        lo, hi = case.window or (0.0, 0.0)
        parts.append(
            '<section id="image"><h2>Image</h2><div class="figs"><figure>'
            f'<img alt="display rendering" src="data:image/png;base64,{case.image_png}">'
            "</figure></div>"
            f'<p class="note">Display rendering only: frame 1 of {_e(f.get("n_frames"))}, '
            f"{_e(f.get('cols'))} x {_e(f.get('rows'))} px, {_e(f.get('bits_stored'))}-bit "
            f"stored values windowed to 8 bits over [{lo:.6g}, {hi:.6g}] (the "
            f"{_WINDOW_PCT[0]:g} and {_WINDOW_PCT[1]:g} percentiles) and reduced to at most "
            f"{_e(case.provenance.get('parameters', {}).get('display_max_side'))} px. "
            "Every analysis on this page uses the full-depth stored values, never this "
            "rendering.</p></section>"
        )
    src_params = (case.provenance.get("parameters") or {}).get("source") or {}
    parts.append(_device_html(case.device, src_params.get("classes")))
    parts.append(_forgery_html(case.forgery, case.image_png))
    parts.append(_header_html(case))
    parts.append(_provenance_html(case))
    title = f"Case report {sha[:12]}" if sha else "Case report"
    return _page(title, "\n".join(parts), when)


def render_case_report(
    path: str | Path,
    *,
    source: Any = None,
    forgery: Any = None,
    mask_identifiers: bool = True,
    force: bool = False,
    filename: str | None = None,
    max_side: int = _DISPLAY_MAX_SIDE,
    device: str = "cpu",
    generated_at: _dt.datetime | None = None,
    allow_modified_run: bool = False,
) -> str:
    """One self-contained HTML case report for one image file.

    Args:
        path: the image (DICOM, PNG, JPEG or TIFF). The first frame is analysed.
        source: a :class:`medforensics.source.predictor.SourcePredictor`, or a trained run directory
            (loaded with ``SourcePredictor.from_run``; then its files are hashed in the
            provenance), or ``None`` ("no source model given").
        forgery: a forgery detector (an object with ``detect(pixels, meta)``, normally
            ``medforensics.forgery.detector.ForgeryDetector``), or its run directory, or
            ``"cues"`` for the training-free detector (``ForgeryDetector.from_run(None)``),
            or ``None`` ("no forgery model given").
        mask_identifiers: show patient/staff/institution identifiers, dates, UIDs and the
            file path as ``masked`` (default). ``False`` reveals them (and says so).
        force: read DICOM files without file meta (ACR-NEMA), as ``read_image(force=)``.
        filename: name to show for the file instead of ``path`` (e.g. an upload's client
            name); only shown when ``mask_identifiers`` is False.
        max_side: longest side of the display images in pixels.
        device: torch device when ``source`` is a run directory.
        generated_at: the time stamped on the page (default: now, UTC).
        allow_modified_run: load runs given as paths even when their files differ from
            their run manifest (the page then says the run was modified) instead of refusing.

    Returns:
        The HTML page (UTF-8 text). Unreadable files give a page that says why.

    Raises:
        ModelFileError: a run directory cannot be loaded.
        ConfigError: a forgery run was given but there is no forgery detector.
    """
    case = analyse_case(path, source=source, forgery=forgery, mask_identifiers=mask_identifiers,
                        force=force, filename=filename, max_side=max_side, device=device,
                        allow_modified_run=allow_modified_run)
    return render_html(case, generated_at=generated_at)


# ----------------------------------------------------------------------------- batch


def _index_html(
    entries: Sequence[dict[str, Any]],
    mask: bool,
    s_prov: Mapping[str, Any] | None,
    f_prov: Mapping[str, Any] | None,
    when: _dt.datetime,
) -> str:
    from collections import Counter

    dev_counts = Counter(e["device_verdict"] for e in entries)
    fg_counts = Counter(e["forgery_verdict"] for e in entries)
    rows = []
    for i, e in enumerate(entries, 1):
        name = (f'<span class="mono">{_e(e["name"])}</span>' if not mask else
                f'<span class="mono">sha256 {_e((e["sha256"] or "-")[:16])}</span>')
        dv = e["device_verdict"]
        pred = "" if e.get("predicted") is None else (
            f"{_e(e['predicted'])} ({_fmt_p(e.get('probability'))})")
        if e.get("reason"):
            pred = f'<span class="note">{_e(e["reason"])}</span>'
        elif e.get("error"):
            pred = f'<span class="note">{_e(e["error"])}</span>'
        fg = e["forgery_verdict"]
        fg_txt = _badge(fg) + (f" {_fmt_num(e.get('forgery_score'))}"
                               if e.get("forgery_score") is not None else "")
        rows.append(
            f'<tr><td class="num">{i}</td><td>{name}</td><td>{_badge(dv)}</td>'
            f"<td>{pred}</td><td>{_e(e.get('header_claim') or '')}</td><td>{fg_txt}</td>"
            f'<td><a href="{_e(e["page"])}">report</a></td></tr>'
        )
    counts = "; ".join(f"{k}: {n}" for k, n in sorted(dev_counts.items()))
    fg_line = "; ".join(f"{k}: {n}" for k, n in sorted(fg_counts.items()))
    model_lines = []
    for what, prov in (("Source model", s_prov), ("Forgery model", f_prov)):
        if prov is None:
            model_lines.append(f"<li>{what}: none given</li>")
            continue
        files = ", ".join(f"{k} {v[:12]}" for k, v in (prov.get("files") or {}).items())
        model_lines.append(f"<li>{what}: <span class=\"mono\">{_e(prov.get('run') or '-')}"
                           f"</span> ({_e(files) or 'no files'})</li>")
    body = (
        '<header class="top"><h1>Forensic case reports</h1>'
        f'<p class="sub">{len(entries)} image(s). Device verdicts: {_e(counts)}. '
        f"Forgery: {_e(fg_line)}.</p></header>"
        + ('<div class="alert">These pages show patient identifiers.</div>' if not mask else "")
        + '<section><table class="list"><tr><th>#</th><th>File</th><th>Device verdict</th>'
        "<th>Pixels say</th><th>Header claims</th><th>Forgery</th><th></th></tr>"
        + "".join(rows) + "</table>"
        + ('<p class="note">File paths are masked (they may contain identifiers); files are '
           "named by their SHA-256.</p>" if mask else "")
        + f"<ul>{''.join(model_lines)}</ul></section>"
    )
    return _page("Forensic case reports", body, when)


def _entry(case: CaseAnalysis, page: str, path: str) -> dict[str, Any]:
    dev, fg = case.device, case.forgery
    if case.read_error is not None:
        dv = "unreadable"
    elif dev.get("status") == "no-model":
        dv = "no-model"
    else:
        dv = dev.get("verdict") or dev.get("status")
    if fg.get("status") == "done":
        fv = str(fg.get("verdict") or "-")
    else:
        fv = {"no-model": "no-model", "failed": "failed"}.get(fg.get("status"), "unreadable")
    return {
        "page": page,
        "name": path,
        "sha256": case.file.get("sha256"),
        "device_verdict": dv,
        "predicted": dev.get("predicted") if dev.get("confident") else None,
        "probability": dev.get("probability") if dev.get("confident") else None,
        "header_claim": dev.get("header_claim"),
        "unit": dev.get("unit"),
        "forgery_verdict": fv,
        "forgery_score": fg.get("score"),
        "reason": (case.read_error or {}).get("reason"),
    }


def _error_page(path: str, exc: BaseException, mask: bool, when: _dt.datetime) -> str:
    shown = "File path masked" if mask else f'File <span class="mono">{_e(path)}</span>'
    msg = str(exc) if not mask else _redact(str(exc), [path, os.path.abspath(path)], "[file]")
    body = (f'<header class="top"><h1>Forensic case report</h1><p class="sub">{shown}</p>'
            f'</header><div class="alert"><b>The report for this file failed</b> '
            f"({_e(type(exc).__name__)}): {_e(msg)}. This is a bug in medforensics; please "
            "report it.</div>")
    return _page("Case report (failed)", body, when)


def _prepare_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a directory")
    if out.is_dir():
        others = [p for p in out.iterdir()
                  if not (p.name == "index.html" or (p.name.startswith("case-")
                                                      and p.suffix == ".html"))]
        if others:
            raise ConfigError(
                f"{out} is not empty and does not hold a previous report (found "
                f"{others[0].name}); choose a new or empty folder"
            )
        for p in out.iterdir():  # a previous report: replace it entirely
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_report(
    paths: Sequence[str | Path] | str | Path,
    out: str | Path,
    *,
    source: Any = None,
    forgery: Any = None,
    mask_identifiers: bool = True,
    force: bool = False,
    max_side: int = _DISPLAY_MAX_SIDE,
    device: str = "cpu",
    generated_at: _dt.datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
    allow_modified_run: bool = False,
) -> ReportOutput:
    """Write case reports for image files and folders (folders are walked recursively).

    ``out`` ending in ``.html``/``.htm``: exactly one image, one page. Otherwise ``out`` is
    a folder (created; a folder holding a previous report is replaced, any other non-empty
    folder is refused) receiving ``case-NNNN-<sha256 prefix>.html`` per image, in sorted
    path order, and ``index.html`` listing them with their verdicts. Models are loaded and
    hashed once.

    Args:
        paths: image files and/or folders.
        out: output ``.html`` file or folder.
        source, forgery, mask_identifiers, force, max_side, device, generated_at,
            allow_modified_run: as for :func:`render_case_report`.
        progress: called with ``(done, total)`` after each page.

    Returns:
        A :class:`ReportOutput`.

    Raises:
        ConfigError: a path does not exist, no files found, several files for one ``.html``
            output, or an unusable output folder.
        ModelFileError: a model run cannot be loaded.
        OutputWriteError: a page or the index cannot be written (disk full, ...); pages
            already written are complete, the one that failed is not left behind.
    """
    roots = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = [str(p) for p in find_files(roots)]
    if not files:
        raise ConfigError("no files found under " + ", ".join(map(str, roots)))
    out_path = Path(out)
    single = out_path.suffix.lower() in (".html", ".htm")
    if single and len(files) != 1:
        raise ConfigError(f"--out {out_path.name} is one page but {len(files)} files were "
                          "given; give a folder as --out for several images")
    when = generated_at or _dt.datetime.now(_dt.timezone.utc)
    predictor, s_prov = _load_source(source, device, allow_modified_run)
    detector, f_prov = _load_forgery(forgery, allow_modified_run)
    if not single:
        _prepare_out_dir(out_path)
    else:
        out_path.parent.mkdir(parents=True, exist_ok=True)

    result = ReportOutput(pages=[], index=None, verdicts=[])
    entries: list[dict[str, Any]] = []
    for i, path in enumerate(files, 1):
        try:
            case = analyse_case(path, source=predictor, forgery=detector,
                                mask_identifiers=mask_identifiers, force=force,
                                max_side=max_side, device=device,
                                _source_prov=s_prov, _forgery_prov=f_prov)
            page_html = render_html(case, generated_at=when)
            entry = _entry(case, "", path)
            if case.read_error is not None:
                result.n_unreadable += 1
        except Exception as exc:  # noqa: BLE001 - one bad page never stops a batch
            log.exception("report failed for file %d of %d", i, len(files))
            result.n_failed += 1
            page_html = _error_page(path, exc, mask_identifiers, when)
            try:
                sha = file_sha256(path)
            except OSError:
                sha = None
            entry = {"page": "", "name": path, "sha256": sha, "device_verdict": "report-failed",
                     "forgery_verdict": "report-failed", "error": f"{type(exc).__name__}: {exc}"}
        if single:
            target = out_path
        else:
            sha = entry.get("sha256") or "nohash"
            target = out_path / f"case-{i:04d}-{sha[:12]}.html"
        # whole or absent (temporary file + rename); a name that is not UTF-8 is escaped
        atomic_write_text(target, page_html, errors="backslashreplace")
        entry["page"] = target.name
        entries.append(entry)
        result.pages.append(target)
        result.verdicts.append({k: entry.get(k) for k in (
            "page", "device_verdict", "forgery_verdict", "reason", "error") if k in entry})
        if progress is not None:
            progress(i, len(files))
    if not single:
        index = out_path / "index.html"
        atomic_write_text(index, _index_html(entries, mask_identifiers, s_prov, f_prov, when),
                          errors="backslashreplace")
        result.index = index
    return result

