"""Identifier masking: the header summary of a case report, and paths taken out of messages.

A case report is often passed on beyond the people allowed to see patient data, so it shows
patient, staff and institution identifiers, dates and UIDs (:data:`IDENTIFYING_KEYWORDS`,
after DICOM PS3.15's basic profile) as :data:`MASKED` unless asked not to. File paths are
masked too (archives often name folders after patients), including inside error messages
(:func:`redact`). Text burned into the pixels is *not* removed; the header's
BurnedInAnnotation value is reported so a page can say so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import pydicom
from pydicom import uid as dicom_uid
from pydicom.datadict import dictionary_description, tag_for_keyword

__all__ = [
    "IDENTIFYING_KEYWORDS",
    "MASKED",
    "HeaderRow",
    "header_rows",
    "redact",
    "strip_path_prefix",
]

log = logging.getLogger(__name__)

#: What a masked identifier is shown as.
MASKED = "masked"

#: One header summary row: ``(label, DICOM keyword or "", value, is an identifier)``.
HeaderRow = tuple[str, str, str, bool]

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

#: Keywords read besides the shown and identifying ones (they complete a shown row).
_HELPER_FIELDS = ("BitsAllocated", "RescaleIntercept", "PatientSex")


def redact(text: str, forms: Iterable[str], replacement: str) -> str:
    """``text`` with every occurrence of each non-empty form replaced (longest form first,
    so a path is replaced before its own file name)."""
    for form in sorted({f for f in forms if f}, key=len, reverse=True):
        text = text.replace(form, replacement)
    return text


def strip_path_prefix(text: str, forms: Sequence[str]) -> str:
    """``text`` without a leading ``"<path>: "`` (how ReadError messages start), for each
    form of the path in turn."""
    for form in forms:
        if form and text.startswith(form + ": "):
            text = text[len(form) + 2:]
    return text


def uid_text(value: str) -> str:
    """A UID with its registered name, ``"<name> (<uid>)"``, or the value when it is not a
    valid UID."""
    uid = dicom_uid.UID(value)
    return f"{uid.name} ({value})" if uid.is_valid else value


def _value_text(element: Any) -> str:
    """A DICOM element's value as display text (multi-values joined with ``\\``)."""
    try:
        value = element.value
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            text = "\\".join(str(v) for v in value)
        elif isinstance(value, bytes):
            text = value.decode("latin-1", "replace")
        else:
            text = str(value)
    except Exception:  # noqa: BLE001 - any malformed value reads as unreadable, never fails
        text = "(unreadable value)"
    return text.strip(" \x00")


def _read_extra_header(path: str) -> dict[str, str]:
    """Identifying and summary DICOM values that ``ImageMeta.header`` does not carry.

    Read with ``force=True`` so that ACR-NEMA files without file meta are summarised too;
    a header pydicom cannot parse gives ``{}`` (the page then shows what ``ImageMeta`` has).
    """
    wanted = list(IDENTIFYING_KEYWORDS) + [kw for _, kw in _SHOWN_FIELDS] + list(_HELPER_FIELDS)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=wanted)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types; the page says so
        log.debug("%s: extra header read failed: %r", path, exc)
        return {}
    return {kw: _value_text(ds[kw]) for kw in wanted if kw in ds}


def _raster_rows(meta: Any) -> list[HeaderRow]:
    """Summary rows of a PNG/JPEG/TIFF file: format, size, bit depth and its own header."""
    rows: list[HeaderRow] = [
        ("File format", "", meta.format.upper(), False),
        ("Size", "", f"{meta.cols} x {meta.rows} px, {meta.n_frames} frame(s)", False),
        ("Bits per sample", "", str(meta.bits_stored), False),
    ]
    rows += [(k, k, str(v), False) for k, v in sorted((meta.header or {}).items())]
    return rows


def _shown_rows(raw: dict[str, str]) -> list[HeaderRow]:
    """Summary rows of the non-identifying DICOM fields present in ``raw``."""
    rows: list[HeaderRow] = []
    for label, kw in _SHOWN_FIELDS:
        value = raw.get(kw, "")
        if kw == "SOPClassUID" and value:
            value = uid_text(value)
        elif kw == "TransferSyntaxUID" and value:
            value = f"{dicom_uid.UID(value).name} ({value})"
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
    return rows


def _keyword_label(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    return dictionary_description(tag) if tag is not None else keyword


def header_rows(meta: Any, path: str, mask: bool) -> tuple[list[HeaderRow], int, str]:
    """The header summary of a case report, identifiers masked or shown.

    Args:
        meta: the file's :class:`medforensics.io.ImageMeta`.
        path: the file (DICOM files are read again for the fields ``meta`` does not carry).
        mask: show identifying values as :data:`MASKED`.

    Returns:
        ``(rows, n_masked, burned_in)``: rows ``(label, keyword, value, is identifier)``, the
        number of identifying fields present and masked, and the header's
        BurnedInAnnotation value (``""`` when absent or not DICOM).
    """
    if meta.format != "dicom":
        return _raster_rows(meta), 0, ""
    raw = _read_extra_header(path)
    raw.update({k: v for k, v in (meta.header or {}).items() if v not in (None, "")})
    rows = _shown_rows(raw)
    n_masked = 0
    for kw in IDENTIFYING_KEYWORDS:
        value = raw.get(kw, "")
        if value == "":
            continue
        n_masked += 1 if mask else 0
        rows.append((_keyword_label(kw), kw, MASKED if mask else value, True))
    return rows, n_masked, raw.get("BurnedInAnnotation", "")
