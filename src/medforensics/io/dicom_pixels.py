"""Checks and decoding of DICOM Pixel Data: from a parsed header to the pixel contract.

:func:`check_header` runs every check that needs only the header (size limits, truncated
native data, a decoder for the transfer syntax, the encapsulated stream's own dimensions), so
a decompression bomb or a missing plugin is refused before any pixel is decoded. The decoding
functions turn pydicom's errors into :class:`~medforensics.errors.ReadError` subclasses.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, get_decoder

from medforensics.errors import (
    ConfigError,
    CorruptHeaderError,
    DecodeError,
    ImageTooLargeError,
    MissingDecoderError,
    NoPixelDataError,
    NotAnImageError,
    ReadError,
    TruncatedPixelDataError,
    UnsupportedPhotometricError,
)
from medforensics.io.dicom import (
    J2K_FAMILY,
    JPEG_FAMILY,
    NATIVE_SYNTAXES,
    NO_PLUGIN_HINT,
    PIP_HINTS,
    expected_native_bytes,
    is_non_image_sop_class,
    quiet_pydicom,
    uid_name,
    walk_items,
)
from medforensics.io.meta import DEFAULT_MAX_PIXELS, ImageMeta

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- checks



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
            f"SOP class {meta.sop_class_uid} ({uid_name(meta.sop_class_uid)}) is not an "
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
    name = uid_name(ts)
    try:
        with quiet_pydicom():
            decoder = get_decoder(ts)
    except NotImplementedError:
        raise MissingDecoderError(
            f"compressed transfer syntax {ts} ({name}): {NO_PLUGIN_HINT}", path
        ) from None
    except Exception:  # noqa: BLE001 - invalid UID strings
        raise MissingDecoderError(
            f"unknown transfer syntax {ts!r}: {NO_PLUGIN_HINT}", path
        ) from None
    if not decoder.is_available:
        hint = PIP_HINTS.get(ts, NO_PLUGIN_HINT)
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
    items, stop, status = walk_items(buf)
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
    if ts in JPEG_FAMILY:
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
    if ts in J2K_FAMILY:
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
        hint = PIP_HINTS.get(meta.transfer_syntax, NO_PLUGIN_HINT)
        return MissingDecoderError(f"{msg.strip()}; install one: {hint}", meta.path)
    name = uid_name(meta.transfer_syntax)
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
        with quiet_pydicom():
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
    with quiet_pydicom():
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
                with quiet_pydicom():
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
