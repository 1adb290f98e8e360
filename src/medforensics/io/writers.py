"""Small image writers used by the tamper generator, tests and exports.

Writers refuse values that do not fit (no silent clipping or 8-bit squashing).
"""

from __future__ import annotations

import os
from typing import Any, Union

import numpy as np

from medforensics.errors import InvalidArrayError
from medforensics.io.dicom import parse_dataset
from medforensics.io.reader import _kind, _open

__all__ = ["save_dicom_like", "write_jpeg", "write_png16", "write_png8"]

PathLike = Union[str, "os.PathLike[str]"]


def _check_2d_int(array: np.ndarray, lo: int, hi: int, what: str) -> np.ndarray:
    arr = np.asarray(array)
    if arr.ndim != 2 or arr.size == 0:
        raise InvalidArrayError(f"{what}: expected a non-empty 2-D array, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise InvalidArrayError(f"{what}: float array must hold whole numbers")
    elif arr.dtype.kind not in "iub":
        raise InvalidArrayError(f"{what}: unsupported dtype {arr.dtype}")
    if arr.min() < lo or arr.max() > hi:
        raise InvalidArrayError(
            f"{what}: values {arr.min()}..{arr.max()} outside {lo}..{hi} (no clipping is done)"
        )
    return arr


def _target(path: Any) -> Any:
    """A path for Pillow, or the binary file object given instead of one."""
    return path if hasattr(path, "write") else os.fspath(path)


def write_png16(path: PathLike, array: np.ndarray) -> None:
    """Write a 16-bit greyscale PNG (lossless).

    Args:
        path: output file (or a binary file object).
        array: 2-D (H, W) array of whole numbers in 0..65535 (any integer dtype, or float
            holding whole numbers).

    Raises:
        InvalidArrayError: wrong shape or values out of range.
    """
    from PIL import Image as PILImage

    arr = _check_2d_int(array, 0, 65535, "write_png16").astype(np.uint16)
    PILImage.fromarray(arr).save(_target(path), format="PNG")


def write_png8(path: PathLike, array: np.ndarray) -> None:
    """Write an 8-bit greyscale PNG (lossless).

    Args:
        path: output file.
        array: 2-D (H, W) array of whole numbers in 0..255.

    Raises:
        InvalidArrayError: wrong shape or values out of range.
    """
    from PIL import Image as PILImage

    arr = _check_2d_int(array, 0, 255, "write_png8").astype(np.uint8)
    PILImage.fromarray(arr).save(os.fspath(path), format="PNG")


def write_jpeg(path: PathLike, array: np.ndarray, *, quality: int = 95) -> None:
    """Write an 8-bit greyscale baseline JPEG (lossy) with Pillow/libjpeg.

    Args:
        path: output file.
        array: 2-D (H, W) array of whole numbers in 0..255.
        quality: JPEG quality 1..100 (libjpeg scale).

    Raises:
        InvalidArrayError: wrong shape or values out of range, or quality outside 1..100.
    """
    from PIL import Image as PILImage

    if not 1 <= int(quality) <= 100:
        raise InvalidArrayError(f"write_jpeg: quality {quality} outside 1..100")
    arr = _check_2d_int(array, 0, 255, "write_jpeg").astype(np.uint8)
    PILImage.fromarray(arr).save(os.fspath(path), format="JPEG", quality=int(quality))


def save_dicom_like(
    src: "PathLike | object",
    pixels_stored: np.ndarray,
    out_path: PathLike,
    *,
    new_sop_uid: bool = True,
) -> None:
    """Write a copy of a DICOM file with new pixel data, keeping the rest of the header.

    The copy is written uncompressed (Explicit VR Little Endian); Rows/Columns/Number of
    Frames follow the array; BitsAllocated, BitsStored, PixelRepresentation and the
    photometric interpretation are kept from the source. Smallest/Largest Image Pixel
    Value are removed (they would be stale). LossyImageCompression is kept: a copy of a
    once-lossy image stays lossy.

    Args:
        src: source DICOM path, or a ``pydicom.Dataset`` (not modified).
        pixels_stored: stored values (before the Modality LUT, MONOCHROME1 not inverted, as
            returned by :func:`medforensics.io.read_stored`), shape (H, W) or (F, H, W),
            whole numbers within the range of BitsStored/PixelRepresentation.
        out_path: output file.
        new_sop_uid: give the copy a new SOPInstanceUID (default) so it is a distinct
            instance; pass False to keep the source UID.

    Raises:
        InvalidArrayError: wrong shape or values outside the stored range.
        ReadError: ``src`` cannot be read.
    """
    import pydicom
    from pydicom import uid as _uid
    from pydicom.dataset import Dataset, FileMetaDataset

    if isinstance(src, Dataset):
        ds = src.copy()
        ds.file_meta = FileMetaDataset(getattr(src, "file_meta", FileMetaDataset()))
    else:
        with _open(src) as (fp, name):  # type: ignore[arg-type]
            kind, _ = _kind(fp, name)
            ds, _ = parse_dataset(fp, name, bare=kind != "dicom", force=True, header_only=False)

    arr = np.asarray(pixels_stored)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise InvalidArrayError(f"save_dicom_like: expected (H, W) or (F, H, W), got {arr.shape}")
    bits_alloc = int(ds.get("BitsAllocated", 16) or 16)
    bits_stored = int(ds.get("BitsStored", bits_alloc) or bits_alloc)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if bits_alloc not in (8, 16):
        raise InvalidArrayError(f"save_dicom_like: BitsAllocated {bits_alloc} not supported")
    lo, hi = (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed else (
        0, (1 << bits_stored) - 1)
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim == 3 else arr
    _check_2d_int(flat, lo, hi, "save_dicom_like")
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits_alloc // 8}")
    arr = arr.astype(dtype)

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2")
    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = _uid.ExplicitVRLittleEndian
    for kw in ("SmallestImagePixelValue", "LargestImagePixelValue", "ExtendedOffsetTable",
               "ExtendedOffsetTableLengths", "PixelData"):
        if kw in ds:
            del ds[kw]
    ds.set_pixel_data(arr, photometric, bits_stored, generate_instance_uid=new_sop_uid)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID if "SOPInstanceUID" in ds else (
        _uid.generate_uid())
    if "SOPClassUID" in ds:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    pydicom.dcmwrite(os.fspath(out_path), ds, enforce_file_format=True)
