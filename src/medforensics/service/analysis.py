"""The work behind the web service: loaded models and the per-file analyses (blocking code).

:class:`CaseService` loads the source run once (and the forgery detector when given) and runs
the analyses the endpoints expose on a file written to disk by ``service.uploads``. Its
methods are blocking and are run by ``service.app`` in worker threads under a deadline.

Errors caused by the input are raised as :class:`InputError` (-> HTTP 4xx with the reader's
``reason``); everything else is a bug or a server problem and surfaces as HTTP 500.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medforensics.common.hashing import file_sha256
from medforensics.errors import (
    InvalidArrayError,
    MedForensicsError,
    ModelFileError,
    ReadError,
)
from medforensics.forgery.detector import ForgeryDetector
from medforensics.forgery.schema import forgery_record
from medforensics.io import ImageMeta, read_header, read_image
from medforensics.models.registry import list_models
from medforensics.pacs.results import dicom_results, model_identity
from medforensics.report.html import render_case_report
from medforensics.report.images import overlay_rgb, png_b64, preview_grey
from medforensics.report.marks import annotate_regions
from medforensics.report.provenance import TRAINING_FREE
from medforensics.report.redaction import redact, strip_path_prefix
from medforensics.source.predictor import SourcePredictor, identify_image
from medforensics.source.schema import identify_record

__all__ = ["CaseService", "DEFAULT_MAX_FRAME_PIXELS", "InputError", "NotAvailable"]

log = logging.getLogger(__name__)

#: Largest frame analysed by default (8192 x 8192: 256 MB as float32).
DEFAULT_MAX_FRAME_PIXELS = 2**26


class InputError(Exception):
    """The uploaded file cannot be analysed (HTTP 422).

    Attributes:
        reason: machine-readable reason (the reader's ``ReadError.reason`` when it is one).
        detail: human message, free of server paths.
    """

    def __init__(self, reason: str, detail: str, status: int = 422) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.status = status


class NotAvailable(Exception):
    """A feature the request needs is not available (HTTP 501 or 503).

    Attributes:
        status: 501 (not part of this installation) or 503 (not loaded at start-up).
        reason: machine-readable code.
    """

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


def _file_sha256(path: Path) -> str | None:
    """Hex sha256 of ``path``, or None when it is not a regular file."""
    return file_sha256(path) if path.is_file() else None


def _clean_message(text: str, path: Path, filename: str) -> str:
    """A reader message without its ``"<path>: "`` prefix and with the server's temp path
    replaced by the client's file name."""
    forms = [str(path), path.as_posix()]
    return redact(strip_path_prefix(text, forms), forms, filename)


def _run_name(run: Path | None) -> str | None:
    return None if run is None else run.resolve().name


class CaseService:
    """Loaded models and the analyses of one uploaded file.

    Args:
        source: a trained source run directory, or an already loaded
            :class:`medforensics.source.predictor.SourcePredictor`.
        forgery: ``None`` (no forgery analysis: ``/v1/forgery`` answers 503), a forgery run
            directory (loaded with ``ForgeryDetector.from_run``; ``"cues"``: the
            training-free detector), or a loaded detector object (anything with
            ``detect(pixels, meta)`` returning a
            :class:`medforensics.forgery.detector.ForgeryResult`).
        device: torch device for the source model.
        max_frame_pixels: largest frame (Rows x Columns) analysed; bigger images are refused
            from their header (reason ``too-large``) before any pixel is decoded.
        allow_modified_run: load runs whose files differ from their run manifest (every
            answer then says ``run_integrity: "modified"``) instead of refusing them.

    Raises:
        ModelFileError: the source run cannot be loaded (RunIntegrityError: a run file
            changed, or a value out of range).
    """

    def __init__(self, source: Any, forgery: Any = None, *, device: str = "cpu",
                 max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
                 allow_modified_run: bool = False) -> None:
        self.max_frame_pixels = int(max_frame_pixels)
        self.allow_modified_run = bool(allow_modified_run)

        if isinstance(source, SourcePredictor):
            self.predictor = source
            self.source_run: Path | None = None
        else:
            self.source_run = Path(source)
            if not self.source_run.is_dir():
                raise ModelFileError(f"source model run {self.source_run} is not a directory")
            self.predictor = SourcePredictor.from_run(self.source_run, device=device,
                                                      allow_modified=self.allow_modified_run)
            if getattr(self.predictor, "run_dir", None) is None:
                # where the run's files are: the case report hashes them for its provenance
                self.predictor.run_dir = self.source_run
        self.forgery_run: Path | None = None
        self.detector: Any = None
        if forgery is not None and not hasattr(forgery, "detect"):
            self.forgery_run = Path(forgery)
            self.detector = self._load_detector(self.forgery_run)
            if getattr(self.detector, "run_dir", None) is None:
                self.detector.run_dir = self.forgery_run
        elif forgery is not None:
            self.detector = forgery
        self._info = self._describe()
        log.info(
            "service models: source %s (%s, %d classes)%s", _run_name(self.source_run) or "-",
            self.predictor.preset, len(self.predictor.classes),
            "; forgery detector loaded" if self.detector is not None else "; no forgery model",
        )

    # ------------------------------------------------------------------ loading
    def _load_detector(self, run: Path) -> Any:
        """The detector of a forgery run folder, or the training-free one
        (:data:`medforensics.report.provenance.TRAINING_FREE` names)."""
        if str(run) in TRAINING_FREE:  # the training-free detector
            return ForgeryDetector.from_run(None)
        if not run.exists():
            raise ModelFileError(f"forgery model run {run} does not exist")
        return ForgeryDetector.from_run(run, allow_modified=self.allow_modified_run)

    def _describe(self) -> dict[str, Any]:
        """What is loaded (the ``/v1/models`` answer): presets, source run, forgery run."""
        p = self.predictor
        meta = p.metadata
        source: dict[str, Any] = {
            "run": _run_name(self.source_run),
            "preset": p.preset,
            "label_column": p.label_column,
            "classes": list(p.classes),
            "num_classes": len(p.classes),
            "input_spec": meta.get("input_spec"),
            "preprocessing": meta.get("preprocessing_description"),
            "software_version": meta.get("software_version"),
            "created": meta.get("created"),
            "weights_sha256": meta.get("weights_sha256"),
            "calibration": {
                "temperature": p.temperature,
                "unknown_threshold": p.unknown_threshold,
                "n_patches": p.n_patches,
            },
            "units": list(getattr(p.fingerprints, "units", []) or []),
            "run_integrity": getattr(p, "run_integrity", None),
        }
        if self.source_run is not None:
            cal_path = self.source_run / "calibration.json"
            source["model_json_sha256"] = _file_sha256(self.source_run / "model.json")
            source["calibration_sha256"] = _file_sha256(cal_path)
            if cal_path.is_file():
                source["calibration"].update(json.loads(cal_path.read_text()))
            source["calibrated"] = cal_path.is_file()
        forgery: dict[str, Any] | None = None
        if self.detector is not None:
            forgery = {"run": _run_name(self.forgery_run),
                       "detector": type(self.detector).__name__,
                       "run_integrity": getattr(self.detector, "run_integrity", None)}
            if self.forgery_run is not None and self.forgery_run.is_dir():
                forgery["files_sha256"] = {
                    f.name: _file_sha256(f) for f in sorted(self.forgery_run.iterdir())
                    if f.is_file() and f.suffix in (".json", ".safetensors")
                }
            meta_f = getattr(self.detector, "metadata", None)
            if isinstance(meta_f, Mapping):
                forgery["metadata"] = json.loads(json.dumps(dict(meta_f), default=str))
        return {"available_presets": list_models(), "source": source, "forgery": forgery}

    @property
    def has_forgery(self) -> bool:
        """Whether a forgery detector is loaded."""
        return self.detector is not None

    @property
    def has_report(self) -> bool:
        """Whether case reports can be made (always: :mod:`medforensics.report.html` is
        imported with this module); reported by ``/health``."""
        return True

    def models_info(self) -> dict[str, Any]:
        """What is loaded: presets available, classes, file hashes, calibration (JSON dict)."""
        return json.loads(json.dumps(self._info))

    # ------------------------------------------------------------------ analyses
    def check_header(self, path: Path, filename: str) -> ImageMeta:
        """Read the header only and refuse unreadable or oversized images (decode guard).

        Returns:
            The :class:`medforensics.io.ImageMeta`.

        Raises:
            InputError: unreadable header (the reader's reason) or a frame larger than
                ``max_frame_pixels`` (``too-large``).
        """
        try:
            meta = read_header(path)
        except ReadError as exc:
            raise InputError(exc.reason, _clean_message(str(exc), path, filename)) from None
        n = int(meta.rows) * int(meta.cols)
        if n > self.max_frame_pixels:
            raise InputError(
                "too-large",
                f"{meta.rows}x{meta.cols} image ({n} pixels) is larger than this service "
                f"analyses ({self.max_frame_pixels} pixels per frame)",
            )
        return meta

    def _read(self, path: Path, filename: str) -> Any:
        """Decode the file (pixel contract), refusing unreadable files as :class:`InputError`."""
        try:
            return read_image(path)
        except ReadError as exc:
            raise InputError(exc.reason, _clean_message(str(exc), path, filename)) from None

    def identify(self, path: Path, filename: str, *, preview: bool = False) -> dict[str, Any]:
        """Device verdict for one file: the ``identify --json`` line
        (:func:`medforensics.source.schema.identify_record`), plus the preview when asked.

        Args:
            path: the uploaded file.
            filename: the client's file name (used in place of ``path`` in the answer).
            preview: add ``preview_png_b64``, a windowed 8-bit PNG of the image (base64).

        Raises:
            InputError: unreadable file or image too small for the model.
        """
        self.check_header(path, filename)
        img = self._read(path, filename)  # decoded once, for the verdict and the preview
        try:
            v, extra = identify_image(self.predictor, img.pixels, img.meta, str(path))
        except InvalidArrayError as exc:
            raise InputError("invalid-image", _clean_message(str(exc), path, filename)) from None
        out = identify_record(v, extra)
        out["path"] = filename
        out["message"] = _clean_message(out["message"], path, filename)
        if preview:
            out["preview_png_b64"] = png_b64(preview_grey(img.pixels))
        return out

    def forgery(self, path: Path, filename: str) -> dict[str, Any]:
        """Forgery analysis of one file: the ``forgery detect --json`` line
        (:func:`medforensics.forgery.schema.forgery_record`) plus ``overlay_png_b64``, the
        heat map over the image.

        Raises:
            NotAvailable: no forgery detector loaded (503).
            InputError: unreadable file or an image the detector cannot analyse.
        """
        if self.detector is None:
            raise NotAvailable(503, "no-forgery-model", "no forgery model loaded (start the "
                               "service with --forgery-model RUN)")
        self.check_header(path, filename)
        img = self._read(path, filename)
        try:
            res = self.detector.detect(img.pixels, img.meta)
        except ReadError as exc:
            raise InputError(exc.reason, _clean_message(str(exc), path, filename)) from None
        except InvalidArrayError as exc:
            raise InputError("invalid-image", _clean_message(str(exc), path, filename)) from None
        out = forgery_record(res, filename, img.meta)
        over = overlay_rgb(img.pixels, res.prob_map)
        over = annotate_regions(over, out.get("regions") or [],  # the page explains them
                                over.shape[1] / img.pixels.shape[1],
                                copy_moves=out.get("copy_moves") or [], legend=False)
        out["overlay_png_b64"] = png_b64(over)
        return out

    def dicom(self, path: Path, filename: str) -> dict[str, str]:
        """The upload's results as DICOM objects for a PACS: a Comprehensive SR with the device
        verdict (and the forgery verdict and flagged areas when a detector is loaded) and a
        fractional SEG of the forgery map, zipped (:func:`medforensics.pacs.results.dicom_results`).

        Returns:
            ``{"zip_b64": ..., "filename": ...}``: the ZIP, base64 (JSON crosses the analysis
            process boundary).

        Raises:
            InputError: unreadable file, not DICOM (a PNG/JPEG has no instance to reference),
                or no result object can be built for it.
        """
        self.check_header(path, filename)
        img = self._read(path, filename)
        if img.meta.format != "dicom":
            raise InputError("not-dicom", "DICOM results reference the analysed DICOM instance; "
                             f"this upload is {img.meta.format}")
        try:
            v, extra = identify_image(self.predictor, img.pixels, img.meta, str(path))
            pred = self.predictor
            ident = {**identify_record(v, extra), "model": model_identity(
                getattr(pred, "run_dir", None), getattr(pred, "run_integrity", None))}
            res = forg = None
            if self.detector is not None:
                det = self.detector
                res = det.detect(img.pixels, img.meta)
                forg = {**forgery_record(res, filename, img.meta), "model": model_identity(
                    getattr(det, "run_dir", None), getattr(det, "run_integrity", None),
                    default_name=f"{getattr(det, 'method', 'cues')} (training-free)")}
            objects = dicom_results(path, identify=ident, forgery=forg,
                                    prob_map=None if res is None else res.prob_map)
        except (ReadError, InvalidArrayError, MedForensicsError) as exc:
            reason = getattr(exc, "reason", None) or "no-dicom-result"
            raise InputError(reason, _clean_message(str(exc), path, filename)) from None
        sop = str(objects["sr"].get("SOPInstanceUID", "result"))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for kind, ds in objects.items():
                part = io.BytesIO()
                ds.save_as(part, enforce_file_format=True)
                zf.writestr(f"{kind}.dcm", part.getvalue())
        return {"zip_b64": base64.b64encode(buf.getvalue()).decode("ascii"),
                "filename": f"medforensics-{sop}.zip"}

    def report(self, path: Path, filename: str, *, mask_identifiers: bool = True) -> str:
        """Self-contained HTML case report (:func:`medforensics.report.html.render_case_report`).

        Args:
            path: the uploaded file.
            filename: the client's file name (shown only when identifiers are revealed).
            mask_identifiers: show patient/institution identifiers as ``masked`` (default).

        Raises:
            InputError: unreadable file (the report would only say why; the API answers 422).
        """
        self.check_header(path, filename)
        self._read(path, filename)  # fail with the reader's reason before any report work
        html = render_case_report(path, source=self.predictor, forgery=self.detector,
                                  filename=filename, mask_identifiers=mask_identifiers)
        return _clean_message(str(html), path, filename if not mask_identifiers else "[file]")
