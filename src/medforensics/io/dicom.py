"""DICOM side of the reader: header parsing, pre-decode checks, decoding to the pixel contract.

Everything pydicom raises is turned into a :class:`~medforensics.errors.ReadError` subclass
here. Checks that need only the header (:func:`check_header`) run before any decoding, so a
decompression bomb, a truncated native Pixel Data or a missing decoder plugin is refused
without touching the pixels.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pydicom
from pydicom import uid as _uid
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, get_decoder

from medforensics.errors import (
    ConfigError,
    CorruptHeaderError,
    DecodeError,
    ImageTooLargeError,
    MissingDecoderError,
    MissingFileMetaError,
    NoPixelDataError,
    NotAnImageError,
    ReadError,
    TruncatedPixelDataError,
    UnsupportedPhotometricError,
)
from medforensics.io.meta import DEFAULT_MAX_PIXELS, HEADER_KEYWORDS, ImageMeta

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

_JPEG_FAMILY = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
    }
)
_J2K_FAMILY = frozenset(str(u) for u in _uid.JPEG2000TransferSyntaxes)

_PIP_HINTS: dict[str, str] = {
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
_NO_PLUGIN_HINT = (
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
def _quiet() -> Iterator[None]:
    """Silence pydicom's UserWarnings (non-conformant values) and log them at DEBUG."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        logger.debug("pydicom: %s", w.message)


def _uid_name(value: str) -> str:
    """Human name of a UID (the UID itself when unknown); never warns on malformed UIDs."""
    if not value:
        return "(empty)"
    with _quiet():
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


def _walk_items(buf: bytes | memoryview) -> tuple[list[tuple[int, int]], int, str]:
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
            _, stop, status = _walk_items(data)
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
    with _quiet():
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
        with _quiet():
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
    with _quiet():
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


# --------------------------------------------------------------------------- checks


def expected_native_bytes(meta: ImageMeta) -> int:
    """Bytes a native (uncompressed) Pixel Data needs: Rows x Columns x Samples x Frames x
    BitsAllocated / 8 (bit-packed for BitsAllocated 1)."""
    n = meta.rows * meta.cols * max(1, meta.samples_per_pixel) * meta.n_frames
    return (n * meta.bits_allocated + 7) // 8


def check_header(
    meta: ImageMeta, *, max_pixels: int = DEFAULT_MAX_PIXELS, frame: int | None = None
) -> None:
    """Run every check that needs only the header; raise the matching ReadError.

    Used by :func:`medforensics.io.read_image` before decoding, and by ingest after
    :func:`medforensics.io.read_header` to classify files without decoding them.

    Args:
        meta: header metadata (DICOM).
        max_pixels: decompression-bomb guard on Rows x Columns x Frames.
        frame: when given, also check that this frame index exists.

    Raises:
        NotAnImageError, NoPixelDataError, CorruptHeaderError, UnsupportedPhotometricError,
        ImageTooLargeError, MissingDecoderError, TruncatedPixelDataError; ConfigError for an
        out-of-range ``frame``.
    """
    path = meta.path
    if meta.format != "dicom":
        return
    if is_non_image_sop_class(meta.sop_class_uid):
        raise NotAnImageError(
            f"SOP class {meta.sop_class_uid} ({_uid_name(meta.sop_class_uid)}) is not an "
            "image (report, presentation state, document, waveform, segmentation, ...)",
            path,
        )
    if not meta.has_pixel_data:
        if meta.rows == 0 or meta.cols == 0:
            raise NotAnImageError(
                "no Image Pixel module (no Rows/Columns/Pixel Data): not an image object",
                path,
            )
        raise NoPixelDataError(
            f"header declares a {meta.rows}x{meta.cols} image but the file has no Pixel Data "
            "element (header-only copy?)",
            path,
        )
    keyword = meta.header.get("PixelDataElement", "PixelData")
    if keyword != "PixelData":
        raise NotAnImageError(
            f"{keyword} (float parametric map) is not an acquired image", path
        )
    if meta.rows <= 0 or meta.cols <= 0:
        raise CorruptHeaderError(
            f"Rows/Columns missing or zero ({meta.rows}x{meta.cols})", path
        )
    photometric = meta.photometric or "MONOCHROME2"
    if meta.samples_per_pixel != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedPhotometricError(
            f"photometric interpretation {photometric!r} with {meta.samples_per_pixel} "
            "sample(s) per pixel: only greyscale MONOCHROME1/MONOCHROME2 images are analysed",
            path,
        )
    if meta.bits_allocated not in (1, 8, 16, 32) or not 0 < meta.bits_stored <= meta.bits_allocated:
        raise CorruptHeaderError(
            f"inconsistent BitsAllocated={meta.bits_allocated} / BitsStored={meta.bits_stored}",
            path,
        )
    total = meta.rows * meta.cols * meta.n_frames
    if total > max_pixels:
        raise ImageTooLargeError(
            f"declared size {meta.rows}x{meta.cols}x{meta.n_frames} frames = {total} pixels "
            f"exceeds max_pixels={max_pixels} (decompression-bomb guard; raise max_pixels if "
            "the file is genuine)",
            path,
        )
    if frame is not None and not 0 <= frame < meta.n_frames:
        raise ConfigError(f"{path}: frame {frame} out of range (file has {meta.n_frames})")
    ts = meta.transfer_syntax
    if ts in NATIVE_SYNTAXES:
        need = expected_native_bytes(meta)
        if meta.pixel_data_bytes is not None and meta.pixel_data_bytes < need:
            raise TruncatedPixelDataError(
                f"Pixel Data holds {meta.pixel_data_bytes} bytes but {meta.rows}x{meta.cols}"
                f"x{meta.n_frames} frames x {meta.bits_allocated} bits needs {need}: the file "
                "is cut short (incomplete transfer/copy?)",
                path,
            )
        return
    _check_decoder(ts, path)


def _check_decoder(ts: str, path: str) -> None:
    name = _uid_name(ts)
    try:
        with _quiet():
            decoder = get_decoder(ts)
    except NotImplementedError:
        raise MissingDecoderError(
            f"compressed transfer syntax {ts} ({name}): {_NO_PLUGIN_HINT}", path
        ) from None
    except Exception:  # noqa: BLE001 - invalid UID strings
        raise MissingDecoderError(
            f"unknown transfer syntax {ts!r}: {_NO_PLUGIN_HINT}", path
        ) from None
    if not decoder.is_available:
        hint = _PIP_HINTS.get(ts, _NO_PLUGIN_HINT)
        raise MissingDecoderError(
            f"no installed plugin decodes {name} ({ts}); install one: {hint}", path
        )


# --------------------------------------------------------------------------- encapsulated


def _encapsulated_items(buf: bytes | memoryview, path: str) -> list[tuple[int, int]]:
    """Items of encapsulated Pixel Data as (value offset, length).

    Raises:
        TruncatedPixelDataError: an item runs past the end of the data.
        DecodeError: the item structure is malformed or holds no item.
    """
    items, stop, status = _walk_items(buf)
    if status == "overrun":
        length = struct.unpack_from("<I", buf, stop + 4)[0]
        raise TruncatedPixelDataError(
            f"encapsulated Pixel Data item at byte {stop} declares {length} bytes but only "
            f"{len(buf) - stop - 8} remain: the compressed stream is cut short",
            path,
        )
    if status == "partial":
        raise TruncatedPixelDataError(
            "encapsulated Pixel Data ends inside an item header: the file is cut short", path
        )
    if status == "bad-tag":
        group, elem = struct.unpack_from("<HH", buf, stop)
        raise DecodeError(
            f"malformed encapsulated Pixel Data: unexpected tag ({group:04X},{elem:04X}) at "
            f"byte {stop}",
            path,
        )
    if not items:
        raise DecodeError("encapsulated Pixel Data has no items (no Basic Offset Table)", path)
    return items


def _stream_dims(ts: str, head: bytes) -> tuple[int, int] | None:
    """(rows, cols) declared by a JPEG / JPEG-LS / JPEG 2000 code stream, if found."""
    if ts in _JPEG_FAMILY:
        p = 2 if head[:2] == b"\xff\xd8" else None
        while p is not None and p + 9 <= len(head):
            if head[p] != 0xFF:
                return None
            marker = head[p + 1]
            if marker == 0xFF:
                p += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                p += 2
                continue
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                          0xCE, 0xCF, 0xF7):
                rows, cols = struct.unpack_from(">HH", head, p + 5)
                return rows, cols
            p += 2 + struct.unpack_from(">H", head, p + 2)[0]
        return None
    if ts in _J2K_FAMILY:
        i = head.find(b"\xff\x4f\xff\x51")
        if i < 0 or i + 24 > len(head):
            return None
        xsiz, ysiz, xo, yo = struct.unpack_from(">IIII", head, i + 8)
        return ysiz - yo, xsiz - xo
    return None


def _check_encapsulated(ds: Dataset, meta: ImageMeta) -> None:
    buf = ds.PixelData
    items = _encapsulated_items(buf, meta.path)
    fragments = items[1:]
    if len(fragments) < 1:
        raise TruncatedPixelDataError("encapsulated Pixel Data holds no fragment", meta.path)
    bot_off, bot_len = items[0]
    if bot_len == 0 and len(fragments) < meta.n_frames:
        raise TruncatedPixelDataError(
            f"encapsulated Pixel Data holds {len(fragments)} fragment(s) for "
            f"{meta.n_frames} frames",
            meta.path,
        )
    if bot_len and bot_len // 4 < meta.n_frames:
        logger.debug("%s: Basic Offset Table shorter than NumberOfFrames", meta.path)
    off, length = fragments[0]
    dims = _stream_dims(meta.transfer_syntax, bytes(buf[off : off + min(length, 65536)]))
    if dims is not None:
        rows, cols = dims
        if cols != meta.cols or (rows != 0 and rows != meta.rows):
            raise DecodeError(
                f"compressed stream declares {rows}x{cols} pixels but the header says "
                f"{meta.rows}x{meta.cols}: inconsistent file, refusing to decode",
                meta.path,
            )


# --------------------------------------------------------------------------- decoding


def _decode_options(meta: ImageMeta) -> dict[str, Any]:
    opts: dict[str, Any] = {"raw": True}
    if meta.transfer_syntax in NATIVE_SYNTAXES:
        if meta.bits_stored < meta.bits_allocated:
            opts["correct_unused_bits"] = True  # mask overlay/garbage bits above BitsStored
        else:
            opts["view_only"] = True  # no copy: the float conversion copies once
    else:
        opts["correct_unused_bits"] = True
    return opts


def _decode_error(exc: BaseException, meta: ImageMeta) -> ReadError:
    if isinstance(exc, ReadError):
        return exc
    if isinstance(exc, MemoryError):
        return ImageTooLargeError(
            f"out of memory decoding a {meta.rows}x{meta.cols} frame", meta.path
        )
    msg = str(exc)
    if "missing dependencies" in msg:
        hint = _PIP_HINTS.get(meta.transfer_syntax, _NO_PLUGIN_HINT)
        return MissingDecoderError(f"{msg.strip()}; install one: {hint}", meta.path)
    name = _uid_name(meta.transfer_syntax)
    return DecodeError(
        f"the {name} decoder failed on this file (corrupt or non-conformant stream): "
        f"{type(exc).__name__}: {msg.strip()}",
        meta.path,
    )


def prepare_for_decoding(ds: Dataset, meta: ImageMeta) -> None:
    """Checks on the loaded Pixel Data (after :func:`check_header` and :func:`load_pixels`):
    encapsulated items complete, code-stream dimensions matching the header."""
    if "PhotometricInterpretation" not in ds:
        ds.PhotometricInterpretation = "MONOCHROME2"
    if meta.transfer_syntax not in NATIVE_SYNTAXES:
        _check_encapsulated(ds, meta)


def _checked_frame(decode: Callable[[], tuple[np.ndarray, Any]], meta: ImageMeta) -> np.ndarray:
    """Run one pydicom decoder call quietly and check the frame it returns.

    Args:
        decode: returns ``(array, info)`` as ``Decoder.as_array`` / ``next(iter_array)`` do.
        meta: the header of the file (for the expected shape and the error messages).

    Returns:
        The decoded (rows, cols) integer array.

    Raises:
        ReadError: from :func:`_decode_error` when the decoder fails.
        DecodeError: the frame shape differs from the header's (rows, cols).
    """
    try:
        with _quiet():
            arr, _ = decode()
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise _decode_error(exc, meta) from exc
    if arr.shape != (meta.rows, meta.cols):
        raise DecodeError(
            f"decoded frame has shape {arr.shape}, expected ({meta.rows}, {meta.cols})",
            meta.path,
        )
    return arr


def decode_stored(ds: Dataset, meta: ImageMeta, frame: int) -> np.ndarray:
    """Decode one frame to its stored values (no Modality LUT, no inversion).

    Returns:
        Integer array (rows, cols), dtype of the stored values (uint8/int8/uint16/int16/...);
        may be a read-only view of the data set's buffer for native syntaxes.
    """
    decoder = get_decoder(meta.transfer_syntax)
    return _checked_frame(
        lambda: decoder.as_array(ds, index=frame, **_decode_options(meta)), meta
    )


def iter_stored(ds: Dataset, meta: ImageMeta) -> Iterator[np.ndarray]:
    """Yield every frame's stored values in order (see :func:`decode_stored`)."""
    decoder = get_decoder(meta.transfer_syntax)
    it = decoder.iter_array(ds, **_decode_options(meta))
    for _ in range(meta.n_frames):
        yield _checked_frame(lambda: next(it), meta)


def _float_value(ds: Dataset, keyword: str, default: float, path: str) -> float:
    if keyword not in ds:
        return default
    value = ds[keyword].value
    if isinstance(value, MultiValue):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CorruptHeaderError(f"{keyword} value {value!r} is not a number", path) from None
    if not np.isfinite(number) or abs(number) > 1e30:
        raise CorruptHeaderError(f"{keyword} value {value!r} is not a usable number", path)
    return number


def make_modality_transform(ds: Dataset, meta: ImageMeta) -> Callable[[np.ndarray], np.ndarray]:
    """Return ``f(stored) -> float32`` applying the pixel contract to one frame.

    Modality LUT Sequence (via pydicom's ``apply_modality_lut``) takes precedence over Rescale
    Slope/Intercept, as in the standard; then MONOCHROME1 is inverted as ``min + max - x``
    with the frame's actual range.
    """
    path = meta.path
    with _quiet():
        try:
            use_lut = bool(ds.get("ModalityLUTSequence"))
        except Exception as exc:  # noqa: BLE001 - malformed sequence
            raise CorruptHeaderError(
                f"Modality LUT Sequence cannot be parsed: {exc}", path
            ) from exc
        slope = 1.0 if use_lut else _float_value(ds, "RescaleSlope", 1.0, path)
        intercept = 0.0 if use_lut else _float_value(ds, "RescaleIntercept", 0.0, path)
    invert = (meta.photometric or "MONOCHROME2") == "MONOCHROME1"

    def transform(stored: np.ndarray) -> np.ndarray:
        if use_lut:
            try:
                with _quiet():
                    mapped = apply_modality_lut(stored, ds)
            except Exception as exc:  # noqa: BLE001
                raise CorruptHeaderError(
                    f"Modality LUT Sequence cannot be applied: {type(exc).__name__}: {exc}", path
                ) from exc
            out = np.asarray(mapped, dtype=np.float32)
        else:
            out = stored.astype(np.float32)  # the one copy/conversion
            if slope != 1.0:
                out *= np.float32(slope)
            if intercept != 0.0:
                out += np.float32(intercept)
        if invert and out.size:
            lo, hi = out.min(), out.max()
            np.subtract(lo + hi, out, out=out)
        return out

    return transform
