"""The JSON result of one image: the image reference, the one error shape, and the identify
result.

One schema per verdict kind, shared by every producer: ``medforensics identify --json`` prints
:func:`identify_record` lines, the web service's ``/v1/identify`` answers the same dict (plus an
optional preview), and the demo writes it. The forgery result
(:mod:`medforensics.forgery.schema`) reuses :class:`ImageRef` and :class:`ErrorRecord` from here,
so both commands share one image reference and one error shape.

Every line starts with the same keys:

``status``             ``"done"`` (the image was analysed) or ``"error"`` (it could not be).
``path``               the file as given (the service: the uploaded file's name).
``frame``              the frame analysed (0-based; 0 for single-frame images).
``SOPInstanceUID``,    the DICOM identifiers of the image, so results can be joined with a
``SeriesInstanceUID``, PACS; ``null`` for PNG/JPEG/TIFF and for headers that cannot be read.
``StudyInstanceUID``

An error line adds ``reason`` (machine-readable: the reader's ``ReadError.reason`` such as
``file-access`` or ``truncated-pixel-data``, or ``invalid-image``) and ``message`` (one human
sentence), nothing else. An identify line adds the verdict (``verdict`` is never
``"unreadable"`` there: an unreadable file is an error line).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from medforensics.common.jsonio import to_jsonable
from medforensics.errors import ReadError
from medforensics.io import read_header
from medforensics.source.verdicts import UNREADABLE, Verdict

__all__ = [
    "STATUS_DONE",
    "STATUS_ERROR",
    "UID_KEYS",
    "ErrorRecord",
    "IdentifyLine",
    "IdentifyRecord",
    "ImageRef",
    "TopClass",
    "error_record",
    "identify_record",
    "image_ids",
    "image_ref",
    "validate_identify_line",
]

log = logging.getLogger(__name__)

STATUS_DONE = "done"
STATUS_ERROR = "error"
#: DICOM keyword of each identifier in a result -> the ``ImageMeta`` attribute it comes from.
UID_KEYS: dict[str, str] = {"SOPInstanceUID": "sop_uid", "SeriesInstanceUID": "series_uid",
                            "StudyInstanceUID": "study_uid"}

#: The verdicts of an analysed image (every one of :data:`VERDICTS` but ``unreadable``).
AnalysedVerdict = Literal["consistent", "MISMATCH", "UNKNOWN", "claim-not-in-model",
                          "no-header-claim", "insufficient-evidence"]


class ImageRef(BaseModel):
    """Which image a result is about: its path, frame and DICOM identifiers."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["done", "error"]
    path: str | None
    frame: int = Field(ge=0)
    SOPInstanceUID: str | None
    SeriesInstanceUID: str | None
    StudyInstanceUID: str | None


class ErrorRecord(ImageRef):
    """An image that could not be analysed (the one error shape of every command)."""

    status: Literal["error"]
    reason: str
    message: str


class TopClass(BaseModel):
    """One of the most probable classes."""

    model_config = ConfigDict(extra="forbid")
    label: str
    probability: float | None


class IdentifyRecord(ImageRef):
    """The device verdict of one analysed image (see :mod:`medforensics.source.verdicts`).

    ``named`` is the device the verdict names (``null`` unless a unit pattern or the open-set
    test named one); ``predicted`` is the classifier's nearest class, for the record only.
    The unit keys are present (possibly ``null``) when the run has enrolled units;
    ``distance_parts`` when the run's open-set model has the noise-shape block (each block's
    own distance to its nearest known device: what ``feature_distance`` is made of).
    """

    status: Literal["done"]
    verdict: AnalysedVerdict
    message: str
    level: str
    predicted: str | None
    probability: float | None
    top: list[TopClass]
    confident: bool | None
    named: str | None
    named_by: str | None
    header_claim: str | None
    claim_class: str | None
    claim_probability: float | None
    claim_in_classes: bool | None
    unknown_threshold: float | None
    score: float | None
    feature_distance: float | None
    feature_threshold: float | None
    informative_windows: int | None
    model_knowledge: str | None
    n_patches: int | None = None
    run_integrity: str | None = None
    unit: str | None = None
    unit_score: float | None = None
    unit_claim: str | None = None
    units_compared: int | None = None
    unit_window: list[int] | None = None
    """[row, column, height, width] of the pixels the unit patterns were compared on."""
    distance_parts: dict[str, float] | None = None


#: An ``identify --json`` line: a verdict or an error (told apart by ``status``).
IdentifyLine = Annotated[IdentifyRecord | ErrorRecord, Field(discriminator="status")]
_IDENTIFY_LINE: TypeAdapter[Any] = TypeAdapter(IdentifyLine)


def validate_identify_line(data: Mapping[str, Any]) -> IdentifyRecord | ErrorRecord:
    """Parse one ``identify --json`` line (a dict) against the schema.

    Raises:
        pydantic.ValidationError: a missing, mistyped or unknown key.
    """
    return _IDENTIFY_LINE.validate_python(dict(data))


def image_ids(path: str | Path | None, meta: Any = None, *, frame: int = 0) -> dict[str, Any]:
    """``frame`` and the three DICOM UIDs of an image, from its ``ImageMeta``.

    When ``meta`` is ``None`` (the file could not be decoded) the header is read, if it can
    be, so that an error line still names the image's UIDs; a header that cannot be read,
    and a PNG/JPEG/TIFF, give ``None`` UIDs.

    Args:
        path: the file as given.
        meta: its :class:`medforensics.io.ImageMeta`, or ``None``.
        frame: the frame analysed.
    """
    if meta is None and path is not None and Path(path).is_file():
        try:
            meta = read_header(path)
        except ReadError:
            meta = None
    out: dict[str, Any] = {"frame": int(frame)}
    for key, attr in UID_KEYS.items():
        out[key] = (getattr(meta, attr, "") or None) if meta is not None else None
    return out


def image_ref(path: str | Path | None, meta: Any = None, *, frame: int = 0,
              status: str = STATUS_DONE) -> dict[str, Any]:
    """The keys every result starts with: ``status``, ``path`` and :func:`image_ids`."""
    return {"status": status, "path": None if path is None else str(path),
            **image_ids(path, meta, frame=frame)}


def error_record(path: str | Path | None, reason: str, message: str, meta: Any = None, *,
                 frame: int = 0) -> dict[str, Any]:
    """The error line of an image that could not be analysed (strict JSON dict)."""
    rec = {**image_ref(path, meta, frame=frame, status=STATUS_ERROR), "reason": str(reason),
           "message": str(message)}
    return ErrorRecord.model_validate(rec).model_dump(mode="json")


def _known(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` restricted to the model's keys (a key a producer adds without adding it to
    the schema is dropped, with a debug line, rather than breaking the output)."""
    extra = sorted(set(data) - set(model.model_fields))
    if extra:
        log.debug("not in the %s schema, left out: %s", model.__name__, ", ".join(extra))
    return {k: v for k, v in data.items() if k in model.model_fields}


def identify_record(v: Verdict, extra: Mapping[str, Any]) -> dict[str, Any]:
    """One ``identify`` result as the strict-JSON dict every consumer gets.

    Args:
        v: the verdict of :func:`medforensics.source.predictor.identify_files` (or
            ``identify_image``).
        extra: its ``extra`` dict (unit check, patches, run integrity, and the image
            reference keys of :func:`image_ref`).

    Returns:
        An :class:`ErrorRecord` dict for an unreadable file, else an :class:`IdentifyRecord`
        dict.
    """
    frame = int(extra.get("frame") or 0)
    ref = {"path": v.path, "frame": frame, **{k: extra.get(k) for k in UID_KEYS}}
    if v.verdict == UNREADABLE:
        reason = v.reason or UNREADABLE
        prefix = f"{UNREADABLE} ({reason}): "
        message = v.message.removeprefix(prefix)
        rec = {**ref, "status": STATUS_ERROR, "reason": reason, "message": message}
        return ErrorRecord.model_validate(rec).model_dump(mode="json")
    data = {**v.to_dict(), **to_jsonable(dict(extra)), **ref, "status": STATUS_DONE}
    return IdentifyRecord.model_validate(_known(IdentifyRecord, data)).model_dump(mode="json")
