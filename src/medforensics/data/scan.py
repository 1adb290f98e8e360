"""One manifest row per file: the manifest's columns and the per-file scan that fills them.

:func:`scan_file` reads a file's header (and, with ``verify``, its pixels) through the pixel
contract's reader and returns its row: hashes, DICOM keywords, normalised labels, and a status
(``eligible`` or the reason it is not). It runs in worker processes during ingest; one bad file
never stops the others.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medforensics.common.hashing import file_sha256
from medforensics.data.labels import clean_text, device_labels
from medforensics.errors import ReadError
from medforensics.io import check_header, read_header, read_image
from medforensics.io.dicom import NATIVE_SYNTAXES, expected_native_bytes

logger = logging.getLogger(__name__)


ELIGIBLE = "eligible"



#: Manifest columns, in file order (``split`` is appended after splitting).
COLUMNS: tuple[str, ...] = (
    "path",
    "sha256",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "DeviceSerialNumber",
    "StationName",
    "InstitutionName",
    "SoftwareVersions",
    "BodyPartExamined",
    "ViewPosition",
    "ImageLaterality",
    "Rows",
    "Columns",
    "BitsStored",
    "PhotometricInterpretation",
    "NumberOfFrames",
    "TransferSyntaxUID",
    "lossy",
    "PresentationIntentType",
    "manufacturer",
    "model",
    "unit",
    "status",
    "reason_detail",
)



LABEL_COLUMNS: tuple[str, ...] = ("manufacturer", "model", "unit")



INT_COLUMNS = frozenset({"Rows", "Columns", "BitsStored", "NumberOfFrames"})



BOOL_COLUMNS = frozenset({"lossy"})



# ImageMeta attribute -> manifest column (the documented ImageMeta fields).
_META_FIELDS: tuple[tuple[str, str], ...] = (
    ("sop_uid", "SOPInstanceUID"),
    ("study_uid", "StudyInstanceUID"),
    ("series_uid", "SeriesInstanceUID"),
    ("patient_id", "PatientID"),
    ("modality", "Modality"),
    ("manufacturer", "Manufacturer"),
    ("model", "ManufacturerModelName"),
    ("serial", "DeviceSerialNumber"),
    ("station", "StationName"),
    ("institution", "InstitutionName"),
    ("body_part", "BodyPartExamined"),
    ("view", "ViewPosition"),
    ("laterality", "ImageLaterality"),
    ("photometric", "PhotometricInterpretation"),
    ("transfer_syntax", "TransferSyntaxUID"),
    ("software_versions", "SoftwareVersions"),
    ("presentation_intent", "PresentationIntentType"),
)



_QC_PATTERN = re.compile(
    r"\b(QC|QA|PHANTOM|CALIB\w*|TEST|FLAT[\s_-]?FIELD|UNIFORMITY|CONSTANCY)\b", re.IGNORECASE
)



# Reader reasons that are statuses of their own; every other ReadError reason is "unreadable".
_OWN_STATUS_REASONS = frozenset({"no-pixel-data", "not-an-image", "unsupported-photometric"})



class _DropPydicomWarnings(logging.Filter):
    """Drop pydicom's per-file warnings (non-conformant values) during an ingest."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING



PYDICOM_FILTER = _DropPydicomWarnings()



def init_worker() -> None:
    """Process-pool initializer: keep worker logs free of pydicom value warnings."""
    logging.getLogger("pydicom").addFilter(PYDICOM_FILTER)



def empty_row(path: str) -> dict[str, Any]:
    row: dict[str, Any] = {c: "" for c in COLUMNS}
    for c in INT_COLUMNS | BOOL_COLUMNS:
        row[c] = None
    row["path"] = path
    return row



def _read_error_status(exc: ReadError) -> tuple[str, str]:
    reason = getattr(exc, "reason", "unreadable") or "unreadable"
    message = str(exc)
    if exc.path and message.startswith(exc.path + ": "):
        message = message[len(exc.path) + 2 :]
    if reason in _OWN_STATUS_REASONS:
        return reason, message
    return "unreadable", f"{reason}: {message}"



def _as_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None



def default_workers() -> int:
    """Worker count for :func:`ingest`: the CPUs this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(8, n))



def scan_file(path: Path | str, *, verify: bool = False, force: bool = False) -> dict[str, Any]:
    """One manifest row for one file, with the per-file status (step 1 of :func:`ingest`).

    Never raises for a bad file: every problem becomes a status. The row also carries the
    private key ``_qc`` (the QC keyword found, or "") used by :func:`ingest`.

    Args:
        path: the file.
        verify: also decode the first frame (slow) to catch undecodable pixel data.
        force: read DICOM without file meta (ACR-NEMA style), as the reader's ``force``.

    Returns:
        A dict with the :data:`COLUMNS` keys; ``status`` is "" when the file passed.
    """
    spath = str(path)
    row = empty_row(spath)
    row["_qc"] = ""
    try:
        row["sha256"] = file_sha256(spath)
    except OSError as exc:
        row["status"] = "unreadable"
        row["reason_detail"] = f"file-access: {exc.strerror or exc}"
        return row
    try:
        meta = read_header(spath, force=force)
    except ReadError as exc:
        row["status"], row["reason_detail"] = _read_error_status(exc)
        return row
    except Exception as exc:  # noqa: BLE001 - a batch never stops on one file
        logger.warning("%s: unexpected reader failure: %r", spath, exc)
        row["status"] = "unreadable"
        row["reason_detail"] = f"reader-bug: {type(exc).__name__}: {exc}"
        return row
    _fill_from_meta(row, meta)
    status = _intrinsic_status(row, meta)
    if status is None and verify:
        status = verify_pixels(spath, force)
    if status is not None:
        row["status"], row["reason_detail"] = status
        return row
    notes = _header_notes(meta)
    if verify:
        notes += _unused_bits_notes(spath, meta, force)
    if notes:
        row["reason_detail"] = "; ".join(f"note: {n}" for n in notes)
    return row



def _header_number(meta: Any, keyword: str) -> float | None:
    text = str((getattr(meta, "header", None) or {}).get(keyword, "") or "").strip()
    if not text:
        return None
    try:
        return float(text.split("\\")[0])
    except ValueError:
        return None



def _header_notes(meta: Any) -> list[str]:
    """What the header shows that does not stop the file from being used (eligible rows)."""
    notes: list[str] = []
    if getattr(meta, "format", "") != "dicom":
        return notes
    have = getattr(meta, "pixel_data_bytes", None)
    if meta.transfer_syntax in NATIVE_SYNTAXES and have is not None:
        need = expected_native_bytes(meta)
        if have > need + 1:  # one pad byte makes an odd length even
            notes.append(
                f"Pixel Data holds {have} bytes but {meta.rows}x{meta.cols}x{meta.n_frames} "
                f"frames x {meta.bits_allocated} bits needs {need}: {have - need} bytes are "
                "not part of the image (Rows x Columns smaller than the pixel data?)")
    return notes



def _blank_status(meta: Any) -> tuple[str, str] | None:
    slope = _header_number(meta, "RescaleSlope")
    if slope is not None and slope == 0.0:
        return ("blank-image", ("RescaleSlope is 0: every pixel becomes the intercept "
                                "(a blank image, nothing to analyse)"))
    return None



def _unused_bits_notes(path: str, meta: Any, force: bool) -> list[str]:
    """Stored values using bits above BitsStored (native DICOM only; the reader masks them)."""
    if (getattr(meta, "format", "") != "dicom" or meta.transfer_syntax not in NATIVE_SYNTAXES
            or meta.bits_allocated not in (8, 16, 32)
            or not 0 < meta.bits_stored < meta.bits_allocated):
        return []
    try:
        import numpy as np
        import pydicom

        ds = pydicom.dcmread(path, force=force)
        raw = bytes(ds.PixelData)
        big = meta.transfer_syntax == "1.2.840.10008.1.2.2"
        dtype = np.dtype(f"{'>' if big else '<'}u{meta.bits_allocated // 8}")
        n = meta.rows * meta.cols * meta.n_frames
        values = np.frombuffer(raw, dtype=dtype, count=min(n, len(raw) // dtype.itemsize))
        bs = int(meta.bits_stored)
        high = values >> np.array(bs, dtype=values.dtype)
        if int(getattr(meta, "pixel_representation", 0) or 0) == 1:
            # signed: the unused bits may repeat the sign bit (sign extension)
            sign = (values >> np.array(bs - 1, dtype=values.dtype)) & 1
            full = (1 << (meta.bits_allocated - bs)) - 1
            bad = ~(((high == 0) & (sign == 0)) | ((high == full) & (sign == 1)))
        else:
            bad = high != 0
        count = int(np.count_nonzero(bad))
    except Exception as exc:  # noqa: BLE001 - a note is never worth failing a file for
        logger.debug("%s: unused-bits check skipped: %r", path, exc)
        return []
    if not count:
        return []
    note = (f"{count} stored value(s) use bits above BitsStored={bs} (of "
            f"{meta.bits_allocated} allocated; overlay data or a wrong BitsStored?); the "
            "reader masks them")
    return [note]



def _fill_from_meta(row: dict[str, Any], meta: Any) -> None:
    for attr, column in _META_FIELDS:
        row[column] = clean_text(getattr(meta, attr, None))
    row["Rows"] = _as_int(getattr(meta, "rows", None))
    row["Columns"] = _as_int(getattr(meta, "cols", None))
    row["BitsStored"] = _as_int(getattr(meta, "bits_stored", None))
    row["NumberOfFrames"] = _as_int(getattr(meta, "n_frames", None))
    lossy = getattr(meta, "lossy", None)
    row["lossy"] = None if lossy is None else bool(lossy)
    row.update(
        device_labels(
            row["Manufacturer"],
            row["ManufacturerModelName"],
            row["DeviceSerialNumber"],
            row["StationName"],
        )
    )
    qc_text = " ".join(
        clean_text(getattr(meta, attr, "")).replace("\\", " ")
        for attr in ("image_type", "series_description")
    )
    match = _QC_PATTERN.search(qc_text)
    row["_qc"] = match.group(0) if match else ""



def _intrinsic_status(row: dict[str, Any], meta: Any) -> tuple[str, str] | None:
    """Per-file exclusion from the header alone, or None when the file passes.

    DICOM: the reader's own header checks (:func:`medforensics.io.dicom_pixels.check_header`: SOP
    class, Pixel Data presence, photometric, bit depth, size guard, native Pixel Data length,
    decoder availability). Every file: Rows and Columns must be known.
    """
    try:
        check_header(meta)
    except ReadError as exc:
        return _read_error_status(exc)
    if not row["Rows"] or not row["Columns"]:
        return "not-an-image", "no Rows/Columns: not an image object"
    return _blank_status(meta)



def verify_pixels(path: str, force: bool) -> tuple[str, str] | None:
    """Decode the pixels: ``None`` when they decode, else the row's (status, detail)."""
    try:
        read_image(path, force=force)
    except ReadError as exc:
        return _read_error_status(exc)
    except Exception as exc:  # noqa: BLE001 - a batch never stops on one file
        logger.warning("%s: unexpected decoder failure: %r", path, exc)
        return "unreadable", f"decode-failed: {type(exc).__name__}: {exc}"
    return None


def scan_chunk(paths: Sequence[str], verify: bool, force: bool) -> list[dict[str, Any]]:
    return [scan_file(p, verify=verify, force=force) for p in paths]
