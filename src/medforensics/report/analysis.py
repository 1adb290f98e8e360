"""Case analysis: one image file decoded once, then its device and forgery analysed.

:func:`analyse_case` gathers everything a case report shows into a :class:`CaseAnalysis` of
plain JSON-able values and two base64 PNGs; :mod:`medforensics.report.html` renders it. The
image is decoded once and the same stored values feed the device verdict
(:func:`medforensics.source.predictor.identify_image`), the forgery detector and the display
preview. Unreadable files still give a case (the reader's ``reason`` and message, and the
header when it can still be read). Every message that could carry the file path or an
identifier goes through :mod:`medforensics.report.redaction` first.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medforensics.common.hashing import file_sha256
from medforensics.errors import InvalidArrayError, MedForensicsError, ReadError
from medforensics.forgery.detector import json_tree
from medforensics.io import ImageMeta, read_header, read_image
from medforensics.report.images import (
    DISPLAY_MAX_SIDE,
    DISPLAY_WINDOW_PERCENTILES,
    display_preview,
    overlay_rgb,
    png_b64,
)
from medforensics.report.marks import annotate_regions
from medforensics.report.provenance import (
    load_forgery,
    load_source,
    software_versions,
    source_parameters,
)
from medforensics.report.redaction import (
    MASKED,
    HeaderRow,
    header_rows,
    redact,
    strip_path_prefix,
)
from medforensics.source.predictor import identify_image
from medforensics.source.schema import image_ids
from medforensics.source.verdicts import unreadable

__all__ = ["CaseAnalysis", "analyse_case", "dataclass_scalars", "finite_or_none", "json_scalar"]

log = logging.getLogger(__name__)

#: Scalar fields of a forgery result shown on their own (the others go to ``details``).
_FORGERY_MAIN = ("score", "verdict", "forged_area_percent", "ela_score", "inconclusive_reason",
                 "covered_fraction")


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
        image_ids: ``frame`` and the three DICOM UIDs (``None`` where unknown), to join the
            verdicts with a PACS; not shown on the page.
    """

    display_name: str | None
    file: dict[str, Any]
    read_error: dict[str, str] | None = None
    image_png: str | None = None
    window: tuple[float, float] | None = None
    device: dict[str, Any] = field(default_factory=dict)
    forgery: dict[str, Any] = field(default_factory=dict)
    header: list[HeaderRow] = field(default_factory=list)
    n_masked: int = 0
    burned_in: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    mask_identifiers: bool = True
    image_ids: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- JSON values


def finite_or_none(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` (not a number, NaN or infinite)."""
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


# ----------------------------------------------------------------------------- sections


@dataclass
class _Redactor:
    """Replaces the forms of the file path (and, when masking, identifying values found in
    the header) in messages shown on a page."""

    forms: list[str]
    replacement: str

    def __call__(self, text: str) -> str:
        return redact(text, self.forms, self.replacement)

    @classmethod
    def for_file(cls, path: str, filename: str | None, mask: bool) -> _Redactor:
        shown = filename or os.path.basename(path)
        forms = [path, os.path.abspath(path), Path(path).as_posix()]
        if mask and shown and len(shown) > 3:
            forms.append(shown)
        return cls(forms, "[file]" if mask else (filename or path))


def _device_section(predictor: Any, img: Any, path: str, redact_text: Callable[[str], str]
                    ) -> dict[str, Any]:
    """The device verdict of the decoded image (``{"status": "no-model"}`` without a model)."""
    if predictor is None:
        return {"status": "no-model"}
    try:  # the decoded image is reused: one decode per case
        v, extra = identify_image(predictor, img.pixels, img.meta, path)
    except InvalidArrayError as exc:
        v, extra = unreadable(ReadError(str(exc), path), path), {}
    out: dict[str, Any] = {
        "status": "done",
        "verdict": v.verdict,
        "message": redact_text(v.message),
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
        "distance_parts": extra.get("distance_parts"),
        "informative_windows": v.informative_windows,
        "model_knowledge": v.model_knowledge,
        "has_unit_patterns": predictor.fingerprints is not None,
        "run_integrity": getattr(predictor, "run_integrity", None),
    }
    if "unit" in extra:
        out.update(unit=extra["unit"], unit_score=finite_or_none(extra.get("unit_score")),
                   unit_claim=extra.get("unit_claim"))
    return out


def _forgery_lists(res: Any, redact_text: Callable[[str], str]) -> dict[str, Any]:
    """The cue scores, notes, flagged regions and copy-move pairs of a forgery result
    (only those it has)."""
    out: dict[str, Any] = {}
    cues = getattr(res, "cues", None)
    if isinstance(cues, Mapping):
        out["cues"] = {str(k): json_scalar(v) for k, v in cues.items()}
    notes = getattr(res, "notes", None)
    if isinstance(notes, (list, tuple)):
        out["notes"] = [redact_text(str(n)) for n in notes]
    regions = getattr(res, "regions", None)
    if isinstance(regions, (list, tuple)) and regions:
        out["regions"] = [json_tree(r) for r in regions if isinstance(r, Mapping)]
    pairs = getattr(res, "copy_moves", None)
    if isinstance(pairs, (list, tuple)) and pairs:
        out["copy_moves"] = [json_tree(c) for c in pairs if isinstance(c, Mapping)]
    return out


def _forgery_section(detector: Any, img: Any, max_side: int,
                     redact_text: Callable[[str], str]) -> dict[str, Any]:
    """The forgery result of the decoded image with its heat-map overlay
    (``{"status": "no-model"}`` without a detector, ``"failed"`` when detection refused)."""
    if detector is None:
        return {"status": "no-model"}
    try:
        res = detector.detect(img.pixels, img.meta)
    except MedForensicsError as exc:
        return {"status": "failed", "message": redact_text(str(exc)),
                "reason": getattr(exc, "reason", type(exc).__name__)}
    out: dict[str, Any] = {"status": "done"}
    extras = dataclass_scalars(res)
    for name in _FORGERY_MAIN:
        out[name] = json_scalar(getattr(res, name, None))
        extras.pop(name, None)
    for name in ("note", "message"):
        if isinstance(extras.get(name), str):
            extras[name] = redact_text(extras[name])
    out["details"] = dict(sorted(extras.items()))
    out.update(_forgery_lists(res, redact_text))
    prob = getattr(res, "prob_map", None)
    out["overlay_png"] = None
    if prob is not None:  # marks numbered like the flagged-area table; the caption has the scale
        over = overlay_rgb(img.pixels, np.asarray(prob), max_side=max_side)
        out["overlay_png"] = png_b64(annotate_regions(
            over, out.get("regions") or [], over.shape[1] / img.pixels.shape[1],
            copy_moves=out.get("copy_moves") or [], legend=False))
    return out


# ----------------------------------------------------------------------------- one case


def _file_info(path: str) -> dict[str, Any]:
    """``sha256`` (``None`` when the file cannot be read) and ``size_bytes`` of the input."""
    info: dict[str, Any] = {}
    try:
        info["sha256"] = file_sha256(path)
        info["size_bytes"] = os.path.getsize(path)
    except OSError as exc:
        info["sha256"] = None
        log.warning("cannot hash %s: %s", path, exc.strerror or exc)
    return info


def _read_case(case: CaseAnalysis, path: str, force: bool, redactor: _Redactor
               ) -> tuple[Any, ImageMeta | None]:
    """Decode the image (once); on a read error record it in ``case`` and fall back to the
    header. Returns ``(image or None, meta or None)``."""
    try:
        img = read_image(path, force=force)
        return img, img.meta
    except ReadError as exc:
        case.read_error = {"reason": exc.reason,
                           "message": redactor(strip_path_prefix(str(exc), [exc.path]))}
    try:
        return None, read_header(path, force=force)
    except ReadError:
        return None, None


def _describe_file(case: CaseAnalysis, meta: ImageMeta, path: str, redactor: _Redactor) -> None:
    """Fill the file description and the header summary of ``case`` from ``meta``."""
    case.file.update(format=meta.format, rows=meta.rows, cols=meta.cols,
                     n_frames=meta.n_frames, bits_stored=meta.bits_stored,
                     photometric=meta.photometric, transfer_syntax=meta.transfer_syntax,
                     lossy=bool(meta.lossy))
    case.header, case.n_masked, case.burned_in = header_rows(meta, path, case.mask_identifiers)
    if case.mask_identifiers:
        # identifying values must not leak through messages either
        redactor.forms += [v for v in (meta.patient_id, meta.institution) if v and len(v) > 2]


def _case_provenance(case: CaseAnalysis, predictor: Any, s_prov: Any, f_prov: Any, *,
                     force: bool, max_side: int, device: str) -> dict[str, Any]:
    """The provenance section: input, models, software and the analysis parameters."""
    params: dict[str, Any] = {
        "frame": 0,
        "force": force,
        "mask_identifiers": case.mask_identifiers,
        "display_window_percentiles": list(DISPLAY_WINDOW_PERCENTILES),
        "display_max_side": max_side,
        "device": device,
    }
    if predictor is not None:
        params["source"] = source_parameters(predictor)
    return {
        "input": {"sha256": case.file.get("sha256"), "size_bytes": case.file.get("size_bytes"),
                  "path": case.display_name if case.display_name is not None else MASKED},
        "source_model": s_prov,
        "forgery_model": f_prov,
        "software": software_versions(),
        "parameters": params,
    }


def analyse_case(
    path: str | Path,
    *,
    source: Any = None,
    forgery: Any = None,
    mask_identifiers: bool = True,
    force: bool = False,
    filename: str | None = None,
    max_side: int = DISPLAY_MAX_SIDE,
    device: str = "cpu",
    allow_modified_run: bool = False,
    _source_prov: dict[str, Any] | None = None,
    _forgery_prov: dict[str, Any] | None = None,
) -> CaseAnalysis:
    """Analyse one image file for a case report.

    Args:
        path, source, forgery, mask_identifiers, force, filename, max_side, device,
            allow_modified_run: as for :func:`medforensics.report.html.render_case_report`.
        _source_prov, _forgery_prov: provenance of ``source`` / ``forgery`` when they are
            already loaded objects (a batch loads and hashes the models once).

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
    predictor, s_prov = load_source(source, device, allow_modified_run) \
        if _source_prov is None else (source, _source_prov)
    detector, f_prov = load_forgery(forgery, allow_modified_run) \
        if _forgery_prov is None else (forgery, _forgery_prov)
    redactor = _Redactor.for_file(spath, filename, mask_identifiers)
    case = CaseAnalysis(display_name=None if mask_identifiers else (filename or spath),
                        file=_file_info(spath), mask_identifiers=mask_identifiers)
    img, meta = _read_case(case, spath, force, redactor)
    case.image_ids = image_ids(None, meta)  # the header read once above
    if meta is not None:
        _describe_file(case, meta, spath, redactor)
    if img is not None:
        preview, lo, hi = display_preview(img.pixels, max_side)
        case.window = (lo, hi)
        case.image_png = png_b64(preview)
        case.device = _device_section(predictor, img, spath, redactor)
        case.forgery = _forgery_section(detector, img, max_side, redactor)
    else:
        case.device = {"status": "no-model"} if predictor is None else {"status": "unreadable"}
        case.forgery = {"status": "no-model"} if detector is None else {"status": "unreadable"}
    case.provenance = _case_provenance(case, predictor, s_prov, f_prov, force=force,
                                       max_side=max_side, device=device)
    return case
