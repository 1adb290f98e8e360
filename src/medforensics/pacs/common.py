"""What the SR and SEG writers share: the source image's header, the producer's identity,
stable UIDs, the optional-package check and atomic file writes."""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pydicom.config
import pydicom.valuerep
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from medforensics import __version__
from medforensics.errors import ReadError
from medforensics.io import read_header
from medforensics.pacs.errors import DicomBuildError, MissingDicomExtraError

log = logging.getLogger(__name__)

__all__ = [
    "Producer",
    "derived_uid",
    "model_fingerprint",
    "require",
    "source_header",
    "write_dataset",
]

#: Type 2 patient / study attributes that highdicom copies from the source image; a source
#: without them (allowed for some of them in older objects) gets them empty
_TYPE2_DEFAULTS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                   "AccessionNumber", "StudyID", "StudyDate", "StudyTime",
                   "ReferringPhysicianName")
#: namespace of the name-based UUIDs behind the result UIDs
_UID_NAMESPACE = uuid.UUID("8f1c7a52-3d4e-5b6f-9a1b-2c3d4e5f6a7b")
#: what a result object must be able to reference
_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def require(package: str) -> Any:
    """Import an optional package of the ``dicom`` extra, or say how to install it.

    Raises:
        MissingDicomExtraError: the package is not installed.
    """
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        pip_name = {"dicomweb_client": "dicomweb-client"}.get(package, package)
        raise MissingDicomExtraError(
            f"{pip_name} is not installed: pip install 'medforensics[dicom]' (or pip install "
            f"{pip_name})") from None


@dataclass(frozen=True)
class Producer:
    """Who made a result object (the software; each result names its own model).

    Attributes:
        software: software name (Manufacturer / Manufacturer's Model Name of the objects).
        version: software version (Software Versions); default: the installed package's.
        institution: Institution Name written into the objects (optional).
    """

    software: str = "medforensics"
    version: str = ""
    institution: str | None = None

    def resolved_version(self) -> str:
        """:attr:`version`, else the installed package's version."""
        if self.version:
            return self.version

        return __version__


def model_fingerprint(producer: Producer, *models: Mapping[str, Any] | None) -> str:
    """A stable text naming the software version and the models (seeds the result UIDs).

    A model is the ``model`` entry of a result: ``name``, ``run``, ``sha256`` (of its
    weights), ``run_integrity``; any may be missing.
    """
    parts = [producer.software, producer.resolved_version()]
    for m in models:
        m = m or {}
        parts += [str(m.get("name", "")), str(m.get("sha256", ""))]
    return "|".join(parts)


def derived_uid(*parts: str) -> str:
    """A UID under the ``2.25`` root computed from ``parts`` (same parts, same UID): the
    decimal value of a name-based (version 5) UUID, as PS3.5 B.2 allows.

    Result objects take their UIDs from the source instance, the kind of object and the
    producer, so analysing an image again with the same model yields the same SR / SEG
    UIDs: a PACS then replaces or ignores the copy instead of holding duplicates.
    """
    return "2.25." + str(uuid.uuid5(_UID_NAMESPACE, "|".join(str(p) for p in parts)).int)


def source_header(source: Dataset | str | os.PathLike[str]) -> Dataset:
    """The header of the analysed DICOM image, ready to be referenced by a result object.

    A copy without Pixel Data; Type 2 patient and study attributes that the source lacks
    are added empty (highdicom copies them).

    Args:
        source: the image's data set (pixels optional), or a DICOM file path.

    Raises:
        DicomBuildError: not DICOM, or no SOP Class / SOP Instance / Study / Series UID.
        ReadError: the file cannot be read.
    """
    if isinstance(source, Dataset):
        ds = source
        name = str(source.get("SOPInstanceUID", "<dataset>"))
    else:
        name = os.fspath(source)

        meta = read_header(name)
        if meta.format != "dicom":
            raise DicomBuildError(
                f"{name}: a {meta.format.upper()} file has no DICOM identity to reference "
                "(SOP Instance UID, study, series); DICOM results need a DICOM source")
        try:
            ds = dcmread(name, stop_before_pixels=True, force=True)
        except (OSError, ValueError, EOFError, AttributeError, KeyError) as exc:
            raise ReadError(f"cannot parse the header: {exc}", name) from None
    header = Dataset()  # new top level: the caller's data set is left as it was
    for elem in ds:
        if elem.tag.group != 0x7FE0:
            header.add(copy.deepcopy(elem))
    ds = header
    missing = [k for k in _REQUIRED if not str(ds.get(k, "") or "").strip()]
    if missing:
        raise DicomBuildError(f"{name}: the source has no {', '.join(missing)}; a result "
                              "object cannot reference it")
    for kw in _TYPE2_DEFAULTS:
        if kw not in ds or ds[kw].value is None:
            setattr(ds, kw, "")
    _blank_invalid_values(ds, name)
    return ds


#: text, name and date VRs whose values a result copies and highdicom / validators check
_CHECKED_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "PN", "SH", "TM"})


def _blank_invalid_values(ds: Dataset, name: str) -> None:
    """Values a result copies from its source must be valid for their VR; de-identified
    archives often hold hashes where a date or a 16-character accession number belongs. Such
    a value is left out of the result (empty: these attributes are Type 2 or 3 there) with a
    log line, never a failed or invalid result object."""
    for elem in list(ds):
        if elem.VR not in _CHECKED_VRS or elem.value in (None, "", b""):
            continue
        values = elem.value if isinstance(elem.value, MultiValue) else [elem.value]
        try:
            for value in values:
                pydicom.valuerep.validate_value(elem.VR, value, pydicom.config.RAISE)
        except (ValueError, TypeError) as exc:
            log.info("%s: %s left empty in the results (%s)", name, elem.keyword or elem.tag,
                     exc)
            elem.value = ""


def write_dataset(ds: Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``ds`` as a DICOM file atomically (temporary file in the folder, then rename).

    Returns:
        The path written.

    Raises:
        OSError: the folder cannot be created or written.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".dcm", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            ds.save_as(fh, enforce_file_format=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
