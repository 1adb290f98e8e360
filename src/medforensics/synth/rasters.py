"""Single-frame grey images in their stored domain, with the writer that puts them back in
their own format: the files the tampering generator reads and writes
(:mod:`medforensics.synth.tamper`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medforensics.errors import FileAccessError, TamperError
from medforensics.io import (
    read_image,
    read_stored,
    save_dicom_like,
    sniff,
    write_png8,
    write_png16,
)

__all__ = ["Raster", "load_raster"]


@dataclass
class Raster:
    """A single-frame grey image in its stored domain plus what is needed to write it back.

    Attributes:
        path: source file.
        fmt: ``"dicom"``, ``"png"``, ``"jpeg"`` or ``"tiff"``.
        pixels: stored values (DICOM: Pixel Data values before the Modality LUT), integer dtype.
        polarity: +1 if higher stored values are brighter, else -1.
        device: device key (manifest ``unit``/``model`` or DICOM header), "" when unknown.
        ext: file extension to write (with dot).
        writer: ``writer(path, pixels, tag)`` writes pixels in the source format; ``tag`` makes
            the new DICOM SOPInstanceUID deterministic and distinct per output.
    """

    path: Path
    fmt: str
    pixels: np.ndarray
    polarity: int
    device: str
    ext: str
    writer: Callable[[Path, np.ndarray, str], None]


def _dicom_raster(path: Path) -> Raster:
    import pydicom
    from pydicom.uid import generate_uid

    pixels, meta = read_stored(path)
    if meta.n_frames > 1:
        raise TamperError(f"{path}: multi-frame DICOM ({meta.n_frames} frames) is not supported "
                          "by the tampering generator")
    if meta.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise TamperError(f"{path}: photometric {meta.photometric} is not supported (grey only)")
    hdr = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    slope = float(getattr(hdr, "RescaleSlope", 1) or 1)
    polarity = (1 if meta.photometric == "MONOCHROME2" else -1) * (1 if slope >= 0 else -1)
    src_uid = meta.sop_uid or path.name
    device = " ".join(v for v in (meta.manufacturer, meta.model, meta.serial) if v).strip()

    def write(out: Path, arr: np.ndarray, tag: str) -> None:
        ds = hdr.copy()
        ds.file_meta = pydicom.dataset.FileMetaDataset(hdr.file_meta)
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[src_uid, tag])
        save_dicom_like(ds, arr, out, new_sop_uid=False)

    return Raster(path, "dicom", np.asarray(pixels), polarity, device, ".dcm", write)


def _raster_file(path: Path) -> Raster:
    pixels, meta = read_image(path)
    if meta.n_frames > 1:
        raise TamperError(f"{path}: multi-frame images are not supported")
    fmt = meta.format
    dtype = np.uint8 if meta.bits_stored <= 8 else np.uint16
    arr = pixels.astype(dtype)
    qtables = None
    if fmt == "jpeg":
        from PIL import Image

        with Image.open(path) as im:
            qtables = getattr(im, "quantization", None)

    def write(out: Path, a: np.ndarray, tag: str) -> None:
        if fmt == "tiff":
            import tifffile

            tifffile.imwrite(out, np.asarray(a).astype(dtype))
        elif fmt == "jpeg":
            from PIL import Image

            img = Image.fromarray(np.asarray(a).astype(np.uint8), mode="L")
            # re-encode with the source's quantisation tables (same "quality")
            if qtables:
                img.save(out, format="JPEG", qtables=qtables)
            else:
                img.save(out, format="JPEG", quality=90)
        elif dtype == np.uint8:
            write_png8(out, a)
        else:
            write_png16(out, a)

    ext = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif"}.get(fmt)
    if ext is None:
        raise TamperError(f"{path}: format {fmt} is not supported")
    return Raster(path, fmt, arr, 1, "", ext, write)


def load_raster(path: str | Path) -> Raster:
    """Load a single-frame grey image in its stored domain (see :class:`Raster`).

    DICOM is read with :func:`medforensics.io.read_stored` and written with
    :func:`medforensics.io.save_dicom_like`; PNG/TIFF/JPEG with
    :func:`medforensics.io.read_image` (JPEG re-encoding keeps the source's quantisation
    tables).

    Raises:
        medforensics.errors.ReadError: unreadable file (from the reader).
        TamperError: unsupported for tampering (multi-frame, colour).
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise FileAccessError(f"cannot read: {exc}", p) from exc
    if sniff(head).startswith("dicom") or sniff(head) == "acr-nema":
        return _dicom_raster(p)
    return _raster_file(p)
