"""DICOM side of the reader: header parsing without decoding, and the pixel element's location.

Everything pydicom raises while parsing is turned into a
:class:`~medforensics.errors.ReadError` subclass here. The checks and the decoding that follow
are in :mod:`medforensics.io.dicom_pixels`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import pydicom
from pydicom import uid as _uid
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue

from medforensics.errors import (
    CorruptHeaderError,
    MissingFileMetaError,
    ReadError,
)
from medforensics.io.meta import HEADER_KEYWORDS, ImageMeta

logger = logging.getLogger(__name__)

NATIVE_SYNTAXES = frozenset(
    {
        _uid.ImplicitVRLittleEndian,
        _uid.ExplicitVRLittleEndian,
        _uid.ExplicitVRBigEndian,
        _uid.DeflatedExplicitVRLittleEndian,
    }
)
#: Transfer syntaxes whose coding is always irreversible.
LOSSY_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.50",  # JPEG baseline
        "1.2.840.10008.1.2.4.51",  # JPEG extended (12-bit)
        "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
        "1.2.840.10008.1.2.4.52",  # retired lossy JPEG processes
        "1.2.840.10008.1.2.4.53",
        "1.2.840.10008.1.2.4.54",
        "1.2.840.10008.1.2.4.55",
        "1.2.840.10008.1.2.4.56",
        "1.2.840.10008.1.2.4.59",
        "1.2.840.10008.1.2.4.60",
        "1.2.840.10008.1.2.4.61",
        "1.2.840.10008.1.2.4.62",
        "1.2.840.10008.1.2.4.63",
        "1.2.840.10008.1.2.4.64",
    }
    | {str(u) for u in _uid.MPEGTransferSyntaxes}
)
#: Transfer syntaxes that may carry lossless or lossy coding (lossy unless the header says
#: LossyImageCompression "00").
LOSSY_CAPABLE_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.4.93",  # JPEG 2000 part 2
        "1.2.840.10008.1.2.4.203",  # HTJ2K
    }
)

JPEG_FAMILY = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
    }
)
J2K_FAMILY = frozenset(str(u) for u in _uid.JPEG2000TransferSyntaxes)

PIP_HINTS: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "pip install pylibjpeg pylibjpeg-libjpeg (or pillow)",
    "1.2.840.10008.1.2.4.51": "pip install pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.57": "pip install pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pip install pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pip install pylibjpeg pylibjpeg-libjpeg (or pyjpegls)",
    "1.2.840.10008.1.2.4.81": "pip install pylibjpeg pylibjpeg-libjpeg (or pyjpegls)",
    "1.2.840.10008.1.2.4.90": "pip install pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pip install pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pip install pylibjpeg 'pylibjpeg-openjpeg>=2.4'",
    "1.2.840.10008.1.2.4.202": "pip install pylibjpeg 'pylibjpeg-openjpeg>=2.4'",
    "1.2.840.10008.1.2.4.203": "pip install pylibjpeg 'pylibjpeg-openjpeg>=2.4'",
    "1.2.840.10008.1.2.5": "pip install pylibjpeg pylibjpeg-rle",
}
NO_PLUGIN_HINT = (
    "no Python decoder plugin supports it; convert the file to an uncompressed transfer "
    "syntax first (e.g. dcmtk `dcmdjpeg`/`dcmconv` or gdcm `gdcmconv --raw`)"
)

#: SOP classes that never hold an acquired image (SR, presentation states, KOS, encapsulated
#: documents, waveforms, raw data, registrations, segmentations, RT plans/structures, MR
#: spectroscopy). A UID matches when equal to, or a sub-UID of, one of these.
NON_IMAGE_SOP_CLASS_ROOTS: tuple[str, ...] = (
    "1.2.840.10008.5.1.4.1.1.88",
    "1.2.840.10008.5.1.4.1.1.11",
    "1.2.840.10008.5.1.4.1.1.104",
    "1.2.840.10008.5.1.4.1.1.9",
    "1.2.840.10008.5.1.4.1.1.66",
    "1.2.840.10008.5.1.4.1.1.481.3",
    "1.2.840.10008.5.1.4.1.1.481.5",
    "1.2.840.10008.5.1.4.1.1.4.2",
    "1.2.840.10008.5.1.4.1.1.67",
)

_PIXEL_TAGS: dict[int, str] = {
    0x7FE00010: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}
_KEYWORD_TAGS: dict[str, int] = {v: k for k, v in _PIXEL_TAGS.items()}
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "PN", "UC"})
_EXPLICIT_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ UC UN UR UT".split())
_HEADER_DEFER_SIZE = 64 * 1024


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's UserWarnings (non-conformant values) and log them at DEBUG."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        logger.debug("pydicom: %s", w.message)


def uid_name(value: str) -> str:
    """Human name of a UID (the UID itself when unknown); never warns on malformed UIDs."""
    if not value:
        return "(empty)"
    with quiet_pydicom():
        return str(_uid.UID(value).name)


def is_non_image_sop_class(sop_class_uid: str) -> bool:
    """Return True when ``sop_class_uid`` is a known non-image SOP class (SR, PR, KOS, ...)."""
    return any(
        sop_class_uid == root or sop_class_uid.startswith(root + ".")
        for root in NON_IMAGE_SOP_CLASS_ROOTS
    )


def is_lossy(transfer_syntax: str, lossy_image_compression: str) -> bool:
    """Decide whether the pixels went through lossy coding.

    Args:
        transfer_syntax: Transfer Syntax UID.
        lossy_image_compression: LossyImageCompression value (``"00"``, ``"01"`` or ``""``).

    Returns:
        True for a lossy-only syntax, for a lossy-capable syntax (JPEG 2000, HTJ2K) unless
        LossyImageCompression is ``"00"``, or when LossyImageCompression is ``"01"``.
    """
    lic = lossy_image_compression.strip()
    if lic == "01" or transfer_syntax in LOSSY_SYNTAXES:
        return True
    return transfer_syntax in LOSSY_CAPABLE_SYNTAXES and lic != "00"


def _as_str(value: Any) -> str:
    """Render a DICOM value as a plain string (multi-values joined with a backslash)."""
    if value is None:
        return ""
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(_as_str(v) for v in value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1").strip(" \x00")
    return str(value).strip(" \x00")


def guess_codec(chunks: list[bytes]) -> str:
    """Guess the codec of text written without a SpecificCharacterSet.

    UTF-8 when the bytes are valid UTF-8; ``cp1251`` (Cyrillic Windows code page) when most
    words holding non-ASCII bytes consist almost entirely of bytes >= 0xC0 (Cyrillic letters
    in cp1251, unlike Latin-1 words with the odd accented letter); otherwise ``latin-1``.

    Args:
        chunks: raw element values.

    Returns:
        A Python codec name.
    """
    data = b" ".join(chunks)
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    words = [w for w in re.findall(rb"[A-Za-z\x80-\xff]+", data) if max(w) >= 0x80]
    cyrillic = sum(1 for w in words if len(w) >= 3 and sum(b >= 0xC0 for b in w) >= 0.75 * len(w))
    if words and 2 * cyrillic > len(words):
        return "cp1251"
    return "latin-1"


class _HeaderText:
    """Reads header values as ``str``, decoding undeclared non-ASCII text by a guess."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        declared = ds.get_item(0x00080005)
        self.codec: str | None = None
        if declared is not None and _as_str(ds.get("SpecificCharacterSet")):
            self.charset = _as_str(ds.get("SpecificCharacterSet"))
            return
        self.charset = "undeclared"
        chunks = []
        for kw in HEADER_KEYWORDS:
            raw = self._raw(kw)
            if raw is not None and any(b >= 0x80 for b in raw):
                chunks.append(raw)
        if chunks:
            self.codec = guess_codec(chunks)
            self.charset = f"undeclared (guessed {self.codec})"

    def _raw(self, keyword: str) -> bytes | None:
        tag = tag_for_keyword(keyword)
        if tag is None or tag not in self.ds:
            return None
        elem = self.ds.get_item(tag, keep_deferred=True)
        if not isinstance(elem, RawDataElement) or not isinstance(elem.value, bytes):
            return None
        vr = elem.VR or _dictionary_vr(tag)
        return elem.value if vr in _TEXT_VRS else None

    def get(self, keyword: str) -> str:
        if self.codec is not None:
            raw = self._raw(keyword)
            if raw is not None:
                return raw.decode(self.codec, errors="replace").strip(" \x00")
        try:
            return _as_str(self.ds.get(keyword))
        except Exception as exc:  # noqa: BLE001 - a malformed value must not stop the read
            logger.debug("cannot convert %s: %s", keyword, exc)
            return ""


def _dictionary_vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


def _int(text: str, default: int = 0) -> int:
    try:
        return int(float(text.split("\\")[0]))
    except (ValueError, IndexError):
        return default


# --------------------------------------------------------------------------- header


def _file_size(fp: IO[bytes]) -> int:
    try:
        return os.fstat(fp.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        pos = fp.tell()
        size = fp.seek(0, os.SEEK_END)
        fp.seek(pos)
        return size


@dataclass(frozen=True)
class PixelElement:
    """Where the Pixel Data value lies in the file (found after a stop-before-pixels read).

    Attributes:
        keyword: ``PixelData``, ``FloatPixelData`` or ``DoubleFloatPixelData``.
        vr: the explicit VR, or None for implicit VR files.
        start: file offset of the value.
        length: declared value length, None for undefined length (encapsulated).
        available: bytes of the value present in the file (to the declared length or EOF).
    """

    keyword: str
    vr: str | None
    start: int
    length: int | None
    available: int


def _locate_pixel_element(fp: IO[bytes], ds: Dataset) -> PixelElement | None:
    """After a ``stop_before_pixels`` read, parse the Pixel Data element header at ``fp``."""
    pos = fp.tell()
    size = _file_size(fp)
    head = fp.read(12)
    fp.seek(pos)
    if len(head) < 8:
        return None
    implicit, little = ds.original_encoding
    endian = "<" if little is not False else ">"
    group, elem = struct.unpack(endian + "HH", head[:4])
    keyword = _PIXEL_TAGS.get(group << 16 | elem, "")
    if not keyword:
        return None
    vr: str | None = None
    if implicit:
        length = struct.unpack(endian + "I", head[4:8])[0]
        start = pos + 8
    elif head[4:6] in _EXPLICIT_LONG_VRS:
        vr = head[4:6].decode("ascii")
        length = struct.unpack(endian + "I", head[8:12])[0] if len(head) == 12 else 0
        start = pos + 12
    else:
        vr = head[4:6].decode("latin-1")
        length = struct.unpack(endian + "H", head[6:8])[0]
        start = pos + 8
    remaining = max(0, size - start)
    if length == 0xFFFFFFFF:
        return PixelElement(keyword, vr, start, None, remaining)
    return PixelElement(keyword, vr, start, length, min(length, remaining))


def walk_items(buf: bytes | memoryview) -> tuple[list[tuple[int, int]], int, str]:
    """Walk encapsulated Pixel Data items.

    Returns:
        (items as (value offset, length), offset where the walk stopped, status) with status
        ``"delimiter"`` (sequence delimiter found), ``"end"`` (data ended after a complete
        item), ``"overrun"`` (an item runs past the end), ``"partial"`` (data ends inside an
        item header) or ``"bad-tag"`` (not an item tag).
    """
    items: list[tuple[int, int]] = []
    off, end = 0, len(buf)
    while off + 8 <= end:
        group, elem, length = struct.unpack_from("<HHI", buf, off)
        tag = group << 16 | elem
        if tag == 0xFFFEE0DD:
            return items, off, "delimiter"
        if tag != 0xFFFEE000 or length == 0xFFFFFFFF:
            return items, off, "bad-tag"
        if off + 8 + length > end:
            return items, off, "overrun"
        items.append((off + 8, length))
        off += 8 + length
    return items, off, "end" if off == end else "partial"


def load_pixels(
    fp: IO[bytes], ds: Dataset, pix: PixelElement | None, meta: ImageMeta, frame: int | None
) -> bool:
    """Read the Pixel Data value into ``ds`` (undefined length: up to the sequence delimiter).

    Reading the value ourselves (instead of letting pydicom read the whole file) keeps the
    header when encapsulated data is cut short (pydicom then returns an empty data set), and
    lets a single frame of a native multi-frame file be read without loading the others.

    Args:
        fp: the open file (positions anywhere).
        ds: data set from :func:`parse_dataset` (pixels not yet loaded).
        pix: location of the Pixel Data value (None: nothing to load).
        meta: the file's metadata.
        frame: when given for a native multi-frame file with complete Pixel Data, only this
            frame is read and ``ds`` is turned into a one-frame data set.

    Returns:
        True when only ``frame`` was loaded (decode it as index 0).
    """
    if pix is None or pix.start < 0:
        return False
    tag = _KEYWORD_TAGS[pix.keyword]
    vr = pix.vr or ("OW" if meta.bits_allocated > 8 else "OB")
    if vr not in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        raise CorruptHeaderError(f"{pix.keyword} has VR {vr}, not a pixel-data VR (OB/OW)",
                                 meta.path)
    native = meta.transfer_syntax in NATIVE_SYNTAXES
    frame_bytes = meta.rows * meta.cols * max(1, meta.samples_per_pixel) * meta.bits_allocated
    if (
        frame is not None
        and native
        and meta.n_frames > 1
        and frame_bytes % 8 == 0
        and 0 <= frame < meta.n_frames
        and pix.available >= expected_native_bytes(meta)
    ):
        frame_bytes //= 8
        fp.seek(pix.start + frame * frame_bytes)
        ds.add_new(tag, vr, fp.read(frame_bytes))
        ds.NumberOfFrames = 1
        return True
    fp.seek(pix.start)
    data = fp.read(pix.available)
    if pix.length is None:
        if native:
            if data.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"):
                data = data[:-8]
        else:
            _, stop, status = walk_items(data)
            if status == "delimiter":
                data = data[:stop]
    ds.add_new(tag, vr, data)
    if pix.length is None:
        ds[tag].is_undefined_length = True
    return False


def _assumed_transfer_syntax(ds: Dataset) -> _uid.UID:
    implicit, little = ds.original_encoding
    if implicit is False:
        return _uid.ExplicitVRLittleEndian if little is not False else _uid.ExplicitVRBigEndian
    return _uid.ImplicitVRLittleEndian


def parse_dataset(
    fp: IO[bytes], path: str, *, bare: bool, force: bool, header_only: bool
) -> tuple[Dataset, PixelElement | None]:
    """Parse a DICOM data set from ``fp`` (positioned at 0).

    Args:
        fp: binary file object.
        path: name used in error messages.
        bare: the file has no 128-byte preamble + ``DICM`` marker.
        force: accept a data set without file meta, assuming an uncompressed transfer
            syntax whose encoding is detected from the first element (normally implicit VR
            little endian, the ACR-NEMA default).
        header_only: defer reading large header values (header-only use); the Pixel Data
            value is never read here (see :func:`load_pixels`).

    Returns:
        (dataset without pixels, location of the Pixel Data value or None when absent).

    Raises:
        MissingFileMetaError: no file meta / Transfer Syntax UID and ``force`` is False.
        CorruptHeaderError: the header cannot be parsed.
    """
    with quiet_pydicom():
        return _parse_dataset(fp, path, bare=bare, force=force, header_only=header_only)


def _parse_dataset(
    fp: IO[bytes], path: str, *, bare: bool, force: bool, header_only: bool
) -> tuple[Dataset, PixelElement | None]:
    try:
        ds = pydicom.dcmread(
            fp,
            force=bare,
            stop_before_pixels=True,
            defer_size=_HEADER_DEFER_SIZE if header_only else None,
        )
    except ReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on bad headers
        raise CorruptHeaderError(
            f"DICOM header cannot be parsed ({type(exc).__name__}: {exc}); the file is "
            "probably cut short or not a conformant DICOM file",
            path,
        ) from exc
    if len(ds) == 0:
        raise CorruptHeaderError(
            "DICOM file holds no data elements after the file meta (cut short?)", path
        )
    meta_ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if not meta_ts:
        if not force:
            raise MissingFileMetaError(
                "no DICOM file meta information / Transfer Syntax UID (ACR-NEMA style file "
                "without the 128-byte preamble and 'DICM'); pass force=True (CLI --force) to "
                "read it assuming an uncompressed transfer syntax",
                path,
            )
        if not hasattr(ds, "file_meta") or ds.file_meta is None:
            ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = _assumed_transfer_syntax(ds)
        logger.info("%s: no file meta; assuming %s", path, ds.file_meta.TransferSyntaxUID.name)

    if str(ds.file_meta.TransferSyntaxUID) == _uid.DeflatedExplicitVRLittleEndian:
        return _parse_deflated(fp, path, bare=bare)
    pix = _locate_pixel_element(fp, ds)
    if pix is None:
        _check_ends_cleanly(ds, _file_size(fp), path)
    return ds, pix


def _parse_deflated(fp: IO[bytes], path: str, *, bare: bool) -> tuple[Dataset, PixelElement | None]:
    """Deflated data sets cannot be located by file offset: read them whole (rare syntax)."""
    fp.seek(0)
    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(fp, force=bare)
    except Exception as exc:  # noqa: BLE001
        raise CorruptHeaderError(
            f"deflated DICOM cannot be parsed ({type(exc).__name__}: {exc})", path
        ) from exc
    for tag, keyword in _PIXEL_TAGS.items():
        if tag in ds:
            n = len(ds[tag].value or b"")
            return ds, PixelElement(keyword, None, -1, n, n)  # start -1: already loaded
    return ds, None


def _check_ends_cleanly(ds: Dataset, size: int, path: str) -> None:
    """Without Pixel Data the data set runs to the end of the file: its last element must end
    exactly there, otherwise the file was cut inside the header (pydicom reads it silently)."""
    if len(ds) == 0:
        return
    last = ds.get_item(list(ds.keys())[-1], keep_deferred=True)
    if not isinstance(last, RawDataElement) or last.length == 0xFFFFFFFF:
        return
    end = last.value_tell + last.length
    if end != size:
        raise CorruptHeaderError(
            f"the file ends inside the header (last element ({last.tag >> 16:04X},"
            f"{last.tag & 0xFFFF:04X}) should end at byte {end}, file has {size}): the file "
            "is cut short",
            path,
        )


def meta_from_dataset(ds: Dataset, path: str, pix: PixelElement | None) -> ImageMeta:
    """Build :class:`ImageMeta` from a parsed data set (header values only).

    Args:
        ds: the data set (with ``file_meta.TransferSyntaxUID`` set).
        path: file name to record.
        pix: location of the Pixel Data value, None when absent.
    """
    pixel_keyword = pix.keyword if pix is not None else ""
    pixel_bytes = pix.available if pix is not None else None
    with quiet_pydicom():
        text = _HeaderText(ds)
        header = {kw: text.get(kw) for kw in HEADER_KEYWORDS}
    ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
    header["TransferSyntaxUID"] = ts
    if pixel_keyword:
        header["PixelDataElement"] = pixel_keyword
    n_frames = max(1, _int(header["NumberOfFrames"], 1))
    return ImageMeta(
        path=path,
        format="dicom",
        rows=_int(header["Rows"]),
        cols=_int(header["Columns"]),
        n_frames=n_frames,
        bits_stored=_int(header["BitsStored"]),
        photometric=header["PhotometricInterpretation"].upper(),
        modality=header["Modality"],
        manufacturer=header["Manufacturer"],
        model=header["ManufacturerModelName"],
        serial=header["DeviceSerialNumber"],
        station=header["StationName"],
        institution=header["InstitutionName"],
        patient_id=header["PatientID"],
        study_uid=header["StudyInstanceUID"],
        series_uid=header["SeriesInstanceUID"],
        sop_uid=header["SOPInstanceUID"],
        body_part=header["BodyPartExamined"],
        view=header["ViewPosition"],
        laterality=header["ImageLaterality"] or header["Laterality"],
        transfer_syntax=ts,
        lossy=is_lossy(ts, header["LossyImageCompression"]),
        sop_class_uid=header["SOPClassUID"],
        software_versions=header["SoftwareVersions"],
        presentation_intent=header["PresentationIntentType"],
        image_type=header["ImageType"],
        series_description=header["SeriesDescription"],
        bits_allocated=_int(header["BitsAllocated"]),
        pixel_representation=_int(header["PixelRepresentation"]),
        samples_per_pixel=_int(header["SamplesPerPixel"], 1),
        has_pixel_data=bool(pixel_keyword),
        pixel_data_bytes=pixel_bytes,
        charset=text.charset,
        header=header,
    )


def expected_native_bytes(meta: ImageMeta) -> int:
    """Bytes a native (uncompressed) Pixel Data needs: Rows x Columns x Samples x Frames x
    BitsAllocated / 8 (bit-packed for BitsAllocated 1)."""
    n = meta.rows * meta.cols * max(1, meta.samples_per_pixel) * meta.n_frames
    return (n * meta.bits_allocated + 7) // 8
