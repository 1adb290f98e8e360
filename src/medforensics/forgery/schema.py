"""The JSON result of checking one image for forgery, shared by every producer.

``medforensics forgery detect --json`` prints :func:`forgery_record` lines, the web service's
``/v1/forgery`` answers the same dict (plus ``overlay_png_b64``), so a result can be read the
same way wherever it came from. The image reference (``status``, ``path``, ``frame``, the DICOM
UIDs) and the error line are those of :mod:`medforensics.source.schema`: one shape for both
commands.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter

from medforensics.source.schema import (
    STATUS_DONE,
    ErrorRecord,
    ImageRef,
    image_ref,
)

__all__ = ["ForgeryLine", "ForgeryRecord", "forgery_record", "validate_forgery_line"]


class ForgeryRecord(ImageRef):
    """The forgery analysis of one image (see :class:`medforensics.forgery.detector.ForgeryResult`).

    ``files`` is present only when map files were written (``forgery detect --maps``).
    """

    model_config = ConfigDict(extra="forbid")
    status: Literal["done"]
    score: float | None
    verdict: Literal["tampered", "inconclusive", "authentic"]
    inconclusive_reason: str | None
    covered_fraction: float | None
    forged_area_percent: float | None
    ela_score: float | None
    threshold: float
    inconclusive_from: float
    map_threshold: float
    method: str
    cues: dict[str, float | None]
    notes: list[str]
    regions: list[dict[str, Any]]
    copy_moves: list[dict[str, Any]]
    rows: int
    cols: int
    run_integrity: str | None
    files: dict[str, str] | None = None


#: A ``forgery detect --json`` line: a result or an error (told apart by ``status``).
ForgeryLine = Annotated[ForgeryRecord | ErrorRecord, Field(discriminator="status")]
_FORGERY_LINE: TypeAdapter[Any] = TypeAdapter(ForgeryLine)


def validate_forgery_line(data: Mapping[str, Any]) -> ForgeryRecord | ErrorRecord:
    """Parse one ``forgery detect --json`` line (a dict) against the schema.

    Raises:
        pydantic.ValidationError: a missing, mistyped or unknown key.
    """
    return _FORGERY_LINE.validate_python(dict(data))


def forgery_record(result: Any, path: str | Path | None, meta: Any = None, *, frame: int = 0,
                   files: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One forgery result as the strict-JSON dict every consumer gets.

    Args:
        result: a :class:`medforensics.forgery.detector.ForgeryResult` (its ``to_dict()``).
        path: the file as given (the service: the uploaded file's name).
        meta: the image's :class:`medforensics.io.ImageMeta` (for the UIDs).
        frame: the frame analysed.
        files: map files written for it, if any.
    """
    data = {**image_ref(path, meta, frame=frame, status=STATUS_DONE), **result.to_dict()}
    if files:
        data["files"] = dict(files)
    return ForgeryRecord.model_validate(data).model_dump(mode="json", exclude_none=False,
                                                         exclude={"files"} if not files
                                                         else None)
