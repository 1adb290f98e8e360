"""Public reading functions: :func:`read_image`, :func:`read_header`, :func:`iter_frames`,
:func:`read_stored`.

The file type is decided from its first bytes (never from the extension): DICOM (preamble +
``DICM``, or a bare data set starting with group 0000/0002/0008), PNG, JPEG or TIFF.
A :class:`pydicom.dataset.Dataset` already in memory (what a DICOM network receiver or a
DICOMweb retrieve hands over) is accepted too: it is encoded once into an in-memory DICOM
file and read from there, so it goes through exactly the checks and decoding of a file.
Every failure is a :class:`~medforensics.errors.ReadError` subclass; see
``docs`` of :mod:`medforensics.io` for the mapping.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
from collections.abc import Generator, Iterator
from typing import IO, Union

import numpy as np
from pydicom import uid as _uid
from pydicom.dataset import Dataset, FileMetaDataset

from medforensics.errors import (
    CorruptHeaderError,
    FileAccessError,
    MissingFileMetaError,
    NotDicomError,
)
from medforensics.io import dicom as _dicom
from medforensics.io import dicom_pixels as _pixels
from medforensics.io import raster as _raster
from medforensics.io.meta import DEFAULT_MAX_PIXELS, Image, ImageMeta

__all__ = ["PathOrFile", "dataset_name", "iter_frames", "read_header", "read_image", "read_stored", "sniff"]

PathOrFile = Union[str, "os.PathLike[str]", IO[bytes], Dataset]

_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL "
    b"UN UR US UT UV".split()
)


def sniff(head: bytes) -> str:
    """Classify a file from its first bytes (at least 132 when available).

    Returns:
        ``"dicom"`` (preamble + DICM), ``"dicom-bare-meta"`` (no preamble, file meta
        present), ``"acr-nema"`` (no preamble, no file meta), ``"png"``, ``"jpeg"`` or
        ``"tiff"``.

    Raises:
        NotDicomError: empty, or none of the above.
    """
    if not head:
        raise NotDicomError("empty file (0 bytes)")
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if len(head) >= 8:
        group, elem = struct.unpack_from("<HH", head)
        explicit = head[4:6] in _VRS
        plausible = elem < 0x0100 and (
            explicit or struct.unpack_from("<I", head, 4)[0] < (1 << 16)
        )
        if plausible and group == 0x0002:
            return "dicom-bare-meta"
        if plausible and group == 0x0008:
            return "acr-nema"
    shown = head[:8].hex(" ")
    raise NotDicomError(
        "not a DICOM file (no 'DICM' marker at byte 128, no recognisable data set) and not "
        f"PNG/JPEG/TIFF (first bytes: {shown})"
    )


def dataset_name(ds: Dataset) -> str:
    """Display name of an in-memory data set: ``<dataset SOPInstanceUID>`` (``meta.path``)."""
    uid = str(ds.get("SOPInstanceUID", "") or "").strip()
    return f"<dataset {uid}>" if uid else "<dataset>"


def _encode_dataset(ds: Dataset, name: str, force: bool) -> IO[bytes]:
    """``ds`` as an in-memory DICOM file (preamble, file meta, data set).

    The transfer syntax is the one in ``ds.file_meta``, else the encoding the data set was
    read with. A data set with neither is refused unless ``force``, which assumes Explicit
    VR Little Endian (right for native pixel data only; compressed pixel data then fails
    with the reader's usual errors). ``ds`` itself is not changed.

    Raises:
        MissingFileMetaError: no transfer syntax can be told and ``force`` is False.
        CorruptHeaderError: pydicom cannot encode the data set (malformed values).
    """
    meta = getattr(ds, "file_meta", None)
    if not (meta is not None and meta.get("TransferSyntaxUID")):
        implicit, little = tuple(getattr(ds, "original_encoding", (None, None)))
        if implicit is not None and little is not None:
            ts = (_uid.ImplicitVRLittleEndian if implicit else
                  _uid.ExplicitVRLittleEndian if little else _uid.ExplicitVRBigEndian)
        elif force:
            ts = _uid.ExplicitVRLittleEndian
        else:
            raise MissingFileMetaError(
                "the data set has no Transfer Syntax UID (file_meta) and no known encoding: "
                "set ds.file_meta.TransferSyntaxUID, or pass force=True to assume Explicit "
                "VR Little Endian", name)
        ds = Dataset(ds)  # a new top level sharing the elements: the caller's stays as it was
        ds.file_meta = FileMetaDataset(meta or Dataset())
        ds.file_meta.TransferSyntaxUID = ts
    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError,
            struct.error) as exc:
        raise CorruptHeaderError(f"the data set cannot be encoded: {exc}", name) from None
    buf.seek(0)
    buf.name = name  # type: ignore[attr-defined]
    return buf


@contextlib.contextmanager
def _open(path: PathOrFile, force: bool = False) -> Iterator[tuple[IO[bytes], str]]:
    """Open ``path`` (or use the given binary file object, or encode the given data set) and
    yield (file, display name)."""
    if isinstance(path, Dataset):
        name = dataset_name(path)
        yield _encode_dataset(path, name, force), name
        return
    if hasattr(path, "read") and hasattr(path, "seek"):
        fp = path  # type: ignore[assignment]
        name = str(getattr(fp, "name", "<stream>"))
        fp.seek(0)
        yield fp, name  # type: ignore[misc]
        return
    name = os.fspath(path)  # type: ignore[arg-type]
    try:
        fp = open(name, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise FileAccessError(f"cannot open: {exc.strerror or exc}", name) from exc
    try:
        yield fp, name
    finally:
        fp.close()


def _head(fp: IO[bytes], name: str) -> bytes:
    try:
        head = fp.read(132)
        fp.seek(0)
    except OSError as exc:
        raise FileAccessError(f"cannot read: {exc.strerror or exc}", name) from exc
    return head


def _kind(fp: IO[bytes], name: str) -> tuple[str, bytes]:
    head = _head(fp, name)
    try:
        return sniff(head), head
    except NotDicomError as exc:
        raise NotDicomError(str(exc), name) from None


def read_header(path: PathOrFile, *, force: bool = False) -> ImageMeta:
    """Read only the header of a DICOM / PNG / JPEG / TIFF file (fast; pixels not read).

    DICOM is parsed with ``stop_before_pixels``; the Pixel Data element header is then
    peeked to record whether pixels are present and how many bytes the file holds
    (``meta.has_pixel_data``, ``meta.pixel_data_bytes``), so that ingest can classify files
    with :func:`medforensics.io.check_header` without decoding them.

    Args:
        path: file path, a seekable binary file object, or a ``pydicom`` Dataset.
        force: read DICOM without file meta (ACR-NEMA style), assuming an uncompressed
            transfer syntax with the encoding detected from the first element (for a
            Dataset without a transfer syntax: Explicit VR Little Endian).

    Returns:
        The :class:`ImageMeta`.

    Raises:
        FileAccessError, NotDicomError, MissingFileMetaError, CorruptHeaderError, DecodeError
        (broken raster header), ImageTooLargeError (Pillow's bomb guard).
    """
    with _open(path, force) as (fp, name):
        kind, head = _kind(fp, name)
        if kind in ("png", "jpeg", "tiff"):
            return _raster.read_raster_header(fp, name, kind, head)
        ds, pix = _dicom.parse_dataset(
            fp, name, bare=kind != "dicom", force=force, header_only=True
        )
        return _dicom.meta_from_dataset(ds, name, pix)


def _iter(
    path: PathOrFile,
    frames: list[int] | None,
    *,
    force: bool,
    max_pixels: int,
    stored: bool,
) -> Generator[Image, None, None]:
    with _open(path, force) as (fp, name):
        kind, head = _kind(fp, name)
        if kind in ("png", "jpeg", "tiff"):
            if stored:
                raise NotDicomError("stored values exist only for DICOM files", name)
            for pixels, meta in _raster.iter_raster(
                fp, name, kind, head, frames=frames, max_pixels=max_pixels
            ):
                yield Image(pixels, meta)
            return
        ds, pix = _dicom.parse_dataset(
            fp, name, bare=kind != "dicom", force=force, header_only=False
        )
        meta = _dicom.meta_from_dataset(ds, name, pix)
        for f in frames if frames else [None]:
            _pixels.check_header(meta, max_pixels=max_pixels, frame=f)
        single = frames[0] if frames is not None and len(frames) == 1 else None
        sliced = _dicom.load_pixels(fp, ds, pix, meta, single)
    _pixels.prepare_for_decoding(ds, meta)
    transform = None if stored else _pixels.make_modality_transform(ds, meta)
    if frames is None:
        arrays: Iterator[np.ndarray] = _pixels.iter_stored(ds, meta)
    else:
        arrays = (_pixels.decode_stored(ds, meta, 0 if sliced else f) for f in frames)
    for arr in arrays:
        if transform is None:
            yield Image(arr if arr.flags.writeable else arr.copy(), meta)
        else:
            yield Image(transform(arr), meta)


def _first(images: Generator[Image, None, None]) -> Image:
    try:
        return next(images)
    finally:
        images.close()


def read_image(
    path: PathOrFile,
    *,
    frame: int = 0,
    force: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image:
    """Read one frame under the pixel contract.

    DICOM: stored values after the Modality LUT (Modality LUT Sequence, else Rescale
    Slope/Intercept), MONOCHROME1 inverted as ``min + max - x`` with the frame's actual
    range (higher = brighter), no VOI LUT / windowing; bits above BitsStored are masked.
    PNG/TIFF (8/16-bit, float TIFF) and JPEG: the stored grey values; RGB with equal
    channels is grey; true colour is refused.

    All checks that need only the header (pixel data present, greyscale, Rows x Columns x
    Frames <= ``max_pixels``, native Pixel Data long enough, decoder installed,
    encapsulated items complete, code-stream dimensions matching the header) run before
    decoding.

    Args:
        path: file path, a seekable binary file object, or a ``pydicom`` Dataset (e.g. from
            a DICOM network receiver; ``meta.path`` is then ``<dataset SOPInstanceUID>``).
        frame: frame index for multi-frame files (``meta.n_frames`` tells how many).
        force: read DICOM without file meta (ACR-NEMA style), see :func:`read_header`.
        max_pixels: decompression-bomb guard on Rows x Columns x Frames (default 2**30).

    Returns:
        :class:`Image` ``(pixels, meta)``: ``pixels`` float32, shape (rows, cols).

    Raises:
        FileAccessError, NotDicomError, MissingFileMetaError, CorruptHeaderError,
        NotAnImageError, NoPixelDataError, UnsupportedPhotometricError, ImageTooLargeError,
        TruncatedPixelDataError, MissingDecoderError, DecodeError (all ReadError);
        ConfigError when ``frame`` is out of range.
    """
    return _first(_iter(path, [frame], force=force, max_pixels=max_pixels, stored=False))


def iter_frames(
    path: PathOrFile, *, force: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[Image]:
    """Yield every frame of a file as :class:`Image` (same contract as :func:`read_image`).

    The file is parsed once and frames are decoded one at a time, in order; frame ``i``
    equals ``read_image(path, frame=i).pixels`` (MONOCHROME1 inversion uses each frame's own
    range). Single-frame files yield one image.

    Raises:
        The same errors as :func:`read_image` (raised when iteration starts or reaches the
        failing frame).
    """
    return _iter(path, None, force=force, max_pixels=max_pixels, stored=False)


def read_stored(
    path: PathOrFile,
    *,
    frame: int = 0,
    force: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image:
    """Read one DICOM frame as raw stored values (no Modality LUT, no MONOCHROME1 inversion).

    For tools that write a modified copy with :func:`medforensics.io.save_dicom_like`.

    Returns:
        :class:`Image` whose ``pixels`` are the integer stored values, shape (rows, cols),
        dtype uint8/int8/uint16/int16 (BitsAllocated and PixelRepresentation).

    Raises:
        The same errors as :func:`read_image`; NotDicomError for PNG/JPEG/TIFF.
    """
    return _first(_iter(path, [frame], force=force, max_pixels=max_pixels, stored=True))
