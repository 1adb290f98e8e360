"""PNG / JPEG / TIFF side of the reader (exported images).

Pixels are the stored grey values as float32. RGB whose channels are equal is taken as grey
(for JPEG: chroma planes all within 128 +/- 1, read before colour conversion); true colour is
refused. PNG and JPEG are read with Pillow, TIFF with tifffile (exact 16-bit and float
samples; Pillow as fallback when a TIFF codec needs the optional ``imagecodecs`` package).
"""

from __future__ import annotations

import logging
import struct
import warnings
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

from medforensics.errors import (
    ConfigError,
    CorruptHeaderError,
    DecodeError,
    ImageTooLargeError,
    MissingDecoderError,
    ReadError,
    TruncatedPixelDataError,
    UnsupportedPhotometricError,
)
from medforensics.io.meta import ImageMeta

logger = logging.getLogger(__name__)

_GREY_MODES = {"1": 1, "L": 8, "LA": 8, "La": 8, "I;16": 16, "I;16L": 16, "I;16B": 16,
               "I;16N": 16, "I": 32, "F": 32}
_RGB_MODES = {"RGB", "RGBA", "RGBX", "RGBa"}
_TIFF_LOSSY_WORDS = ("JPEG", "WEBP", "JP2000", "JPEG2000", "JPEGXL", "LERC")


def _check_size(rows: int, cols: int, frames: int, max_pixels: int, path: str) -> None:
    total = rows * cols * frames
    if total > max_pixels:
        raise ImageTooLargeError(
            f"declared size {rows}x{cols}x{frames} frame(s) = {total} pixels exceeds "
            f"max_pixels={max_pixels} (decompression-bomb guard)",
            path,
        )


def _check_frame(frame: int, n_frames: int, path: str) -> None:
    if not 0 <= frame < n_frames:
        raise ConfigError(f"{path}: frame {frame} out of range (file has {n_frames})")


def _pil_error(exc: BaseException, path: str, what: str) -> ReadError:
    from PIL import Image as PILImage

    if isinstance(exc, ReadError):
        return exc
    if isinstance(exc, PILImage.DecompressionBombError):
        return ImageTooLargeError(f"Pillow decompression-bomb guard: {exc}", path)
    if isinstance(exc, MemoryError):
        return ImageTooLargeError(f"out of memory decoding {what}", path)
    msg = str(exc)
    if "truncated" in msg.lower() or isinstance(exc, EOFError):
        return TruncatedPixelDataError(f"{what} is cut short: {msg}", path)
    return DecodeError(f"{what} cannot be decoded: {type(exc).__name__}: {msg}", path)


def _png_ihdr(head: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) from the PNG IHDR chunk."""
    if len(head) >= 26 and head[12:16] == b"IHDR":
        width, height = struct.unpack_from(">II", head, 16)
        return width, height, head[24], head[25]
    return None


def _open_pil(fp: IO[bytes], path: str, kind: str) -> Any:
    from PIL import Image as PILImage

    fp.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            im = PILImage.open(fp)
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise _pil_error(exc, path, f"{kind.upper()} header") from exc
    return im


def _pil_meta(im: Any, path: str, kind: str, head: bytes) -> ImageMeta:
    mode = im.mode
    n_frames = int(getattr(im, "n_frames", 1) or 1)
    bits = _GREY_MODES.get(mode, 8)
    ihdr = _png_ihdr(head) if kind == "png" else None
    if ihdr is not None:
        bits = ihdr[2]
    if mode in _GREY_MODES:
        photometric, spp = "MONOCHROME2", 1
    elif mode in ("P", "PA"):
        photometric, spp = "PALETTE COLOR", 1
    else:
        photometric, spp = "RGB", len(im.getbands())
    header = {"PILMode": mode, "Format": str(im.format or kind.upper())}
    if kind == "jpeg" and "progressive" in im.info:
        header["Progressive"] = "1"
    cols, rows = im.size
    return ImageMeta(
        path=path,
        format=kind,
        rows=rows,
        cols=cols,
        n_frames=n_frames,
        bits_stored=bits,
        photometric=photometric,
        lossy=kind == "jpeg",
        bits_allocated=bits,
        samples_per_pixel=spp,
        has_pixel_data=True,
        header=header,
    )


def _grey_from_pil(im: Any, path: str, kind: str, head: bytes) -> np.ndarray:
    """Load the current frame of a Pillow image as a 2-D grey array (native dtype)."""
    ihdr = _png_ihdr(head) if kind == "png" else None
    if ihdr is not None and ihdr[2] == 16 and ihdr[3] in (2, 4, 6):
        raise UnsupportedPhotometricError(
            "16-bit PNG with colour or alpha channels: Pillow would reduce it to 8 bits; "
            "export a single-channel 16-bit greyscale PNG instead",
            path,
        )
    mode = im.mode
    if kind == "jpeg" and mode == "RGB":
        im.draft("YCbCr", im.size)  # read Y/Cb/Cr without colour conversion
        mode = im.mode
    try:
        im.load()
        arr = np.asarray(im)
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise _pil_error(exc, path, f"{kind.upper()} image data") from exc
    if mode in ("1", "L", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return arr
    if mode in ("LA", "La"):
        return arr[..., 0]
    if mode in ("P", "PA"):
        palette = np.asarray(im.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)
        idx = arr[..., 0] if arr.ndim == 3 else arr
        if palette.size and np.all(palette[:, 0] == palette[:, 1]) and np.all(
            palette[:, 0] == palette[:, 2]
        ):
            return palette[:, 0][idx]
        raise UnsupportedPhotometricError("colour palette image: not a greyscale image", path)
    if mode == "YCbCr":
        chroma = arr[..., 1:3].astype(np.int16) - 128
        if chroma.size == 0 or int(np.abs(chroma).max()) <= 1:
            return arr[..., 0]
        raise UnsupportedPhotometricError(
            "colour JPEG (chroma planes are not neutral): only greyscale images are analysed",
            path,
        )
    if mode in _RGB_MODES:
        return _equal_channels(arr[..., :3], path)
    raise UnsupportedPhotometricError(f"Pillow mode {mode!r} is not a greyscale image", path)


def _equal_channels(rgb: np.ndarray, path: str) -> np.ndarray:
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0]
    raise UnsupportedPhotometricError(
        "true-colour image (RGB channels differ): only greyscale images are analysed", path
    )


# --------------------------------------------------------------------------- TIFF


def _tiff_open(fp: IO[bytes], path: str) -> Any:
    import tifffile

    fp.seek(0)
    try:
        return tifffile.TiffFile(fp)
    except Exception as exc:  # noqa: BLE001
        raise DecodeError(
            f"TIFF header cannot be parsed: {type(exc).__name__}: {exc}", path
        ) from exc


def _tiff_page_info(page: Any, path: str = "") -> tuple[int, int, int, str]:
    """(rows, cols, samples, photometric name) of a TIFF page.

    Raises:
        CorruptHeaderError: a size tag that is not one integer (corrupt or hostile file).
    """
    try:
        rows, cols = int(page.imagelength), int(page.imagewidth)
        spp = int(page.samplesperpixel)
    except (TypeError, ValueError) as exc:
        raise CorruptHeaderError(f"corrupt TIFF: malformed size tags ({exc})", path) from exc
    photometric = getattr(page.photometric, "name", str(page.photometric))
    return rows, cols, spp, photometric


def _tiff_meta(tf: Any, path: str) -> ImageMeta:
    try:
        pages = tf.pages
        n_frames = len(pages)
        page = pages.first if hasattr(pages, "first") else pages[0]
    except (IndexError, ValueError, KeyError, OSError) as exc:  # tifffile's corrupt-IFD errors
        raise CorruptHeaderError(f"corrupt TIFF: no readable first page ({exc})", path) from exc
    if n_frames == 0:
        raise CorruptHeaderError("corrupt TIFF: no image pages", path)
    rows, cols, spp, photometric = _tiff_page_info(page, path)
    compression = getattr(page.compression, "name", str(page.compression))
    bits = int(page.bitspersample)
    grey = spp == 1 and photometric in ("MINISBLACK", "MINISWHITE")
    return ImageMeta(
        path=path,
        format="tiff",
        rows=rows,
        cols=cols,
        n_frames=n_frames,
        bits_stored=bits,
        photometric=("MONOCHROME1" if photometric == "MINISWHITE" else "MONOCHROME2")
        if grey
        else ("PALETTE COLOR" if photometric == "PALETTE" else "RGB"),
        lossy=any(w in compression.upper() for w in _TIFF_LOSSY_WORDS),
        bits_allocated=bits,
        samples_per_pixel=spp,
        pixel_representation=int(np.dtype(page.dtype).kind == "i") if page.dtype else 0,
        has_pixel_data=True,
        header={
            "TIFFPhotometric": photometric,
            "Compression": compression,
            "TIFFDtype": str(page.dtype),
        },
    )


def _tiff_frame(tf: Any, fp: IO[bytes], frame: int, path: str, max_pixels: int) -> np.ndarray:
    try:
        page = tf.pages[frame]
    except Exception as exc:  # noqa: BLE001 - tifffile raises several kinds on a corrupt IFD
        raise CorruptHeaderError(
            f"corrupt TIFF: page {frame} cannot be read ({type(exc).__name__}: {exc})", path
        ) from exc
    rows, cols, spp, photometric = _tiff_page_info(page, path)
    _check_size(rows, cols, 1, max_pixels, path)
    if photometric == "PALETTE":
        raise UnsupportedPhotometricError("palette TIFF: not a greyscale image", path)
    try:
        arr = page.asarray()
    except ValueError as exc:
        if "imagecodecs" not in str(exc):
            raise DecodeError(f"TIFF data cannot be decoded: {exc}", path) from exc
        if spp != 1 or page.dtype not in (np.uint8, np.uint16):
            raise MissingDecoderError(
                f"TIFF compression {page.compression!s} needs the optional decoder package: "
                "pip install imagecodecs",
                path,
            ) from exc
        logger.debug("%s: tifffile lacks the codec, decoding with Pillow", path)
        im = _open_pil(fp, path, "tiff")
        im.seek(frame)
        arr = _grey_from_pil(im, path, "tiff", b"")
    except Exception as exc:  # noqa: BLE001
        if isinstance(exc, ReadError):
            raise
        if isinstance(exc, MemoryError):
            raise ImageTooLargeError("out of memory decoding TIFF data", path) from exc
        msg = str(exc)
        cls = TruncatedPixelDataError if "truncat" in msg.lower() else DecodeError
        raise cls(f"TIFF data cannot be decoded: {type(exc).__name__}: {msg}", path) from exc
    axes = getattr(page, "axes", "")
    arr = np.asarray(arr)
    if arr.ndim == 3 and axes.startswith("S"):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3:
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
        elif arr.shape[-1] == 2 and photometric in ("MINISBLACK", "MINISWHITE"):
            arr = arr[..., 0]  # grey + alpha
        elif arr.shape[-1] >= 3:
            arr = _equal_channels(arr[..., :3], path)
    if arr.ndim != 2:
        raise UnsupportedPhotometricError(
            f"TIFF page with shape {arr.shape} ({axes}) is not a 2-D greyscale image", path
        )
    if photometric == "MINISWHITE":
        out = arr.astype(np.float32)
        lo, hi = out.min(), out.max()
        return np.subtract(lo + hi, out, out=out)
    return arr


# --------------------------------------------------------------------------- public (internal)


def read_raster_header(fp: IO[bytes], path: str, kind: str, head: bytes) -> ImageMeta:
    """Header of a PNG / JPEG / TIFF file (no pixel decoding)."""
    if kind == "tiff":
        tf = _tiff_open(fp, path)
        try:
            return _tiff_meta(tf, path)
        finally:
            tf.close()
    im = _open_pil(fp, path, kind)
    try:
        return _pil_meta(im, path, kind, head)
    finally:
        im.close()


def iter_raster(
    fp: IO[bytes],
    path: str,
    kind: str,
    head: bytes,
    *,
    frames: list[int] | None,
    max_pixels: int,
) -> Iterator[tuple[np.ndarray, ImageMeta]]:
    """Yield (float32 (H, W) grey pixels, meta) for the requested frames (all when None)."""
    if kind == "tiff":
        tf = _tiff_open(fp, path)
        try:
            meta = _tiff_meta(tf, path)
            for frame in frames if frames is not None else range(meta.n_frames):
                _check_frame(frame, meta.n_frames, path)
                arr = _tiff_frame(tf, fp, frame, path, max_pixels)
                yield _to_float(arr), _grey_meta(meta)
        finally:
            tf.close()
        return
    im = _open_pil(fp, path, kind)
    try:
        meta = _pil_meta(im, path, kind, head)
        _check_size(meta.rows, meta.cols, meta.n_frames, max_pixels, path)
        for frame in frames if frames is not None else range(meta.n_frames):
            _check_frame(frame, meta.n_frames, path)
            if frame:
                im.seek(frame)
            arr = _grey_from_pil(im, path, kind, head)
            yield _to_float(arr), _grey_meta(meta)
    finally:
        im.close()


def _to_float(arr: np.ndarray) -> np.ndarray:
    return arr if arr.dtype == np.float32 and arr.flags.writeable else arr.astype(np.float32)


def _grey_meta(meta: ImageMeta) -> ImageMeta:
    """Meta as seen after a successful grey read (colour with equal channels is grey)."""
    if meta.photometric in ("MONOCHROME2", "MONOCHROME1"):
        return meta
    import dataclasses

    return dataclasses.replace(meta, photometric="MONOCHROME2", samples_per_pixel=1)
