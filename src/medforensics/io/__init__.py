"""Reading pixels under the pixel contract, reading headers, and small image writers.

Public API:

- :func:`read_image` ``(path, *, frame=0, force=False, max_pixels=2**30) -> Image``: one frame
  as float32 (H, W) stored values after the Modality LUT, MONOCHROME1 inverted, no windowing.
  ``path`` may also be a binary file object or a ``pydicom`` Dataset held in memory (what a
  DICOM network receiver or a DICOMweb retrieve gives), read under the same contract.
- :func:`iter_frames`: every frame of a file, same contract.
- :func:`read_header` ``(path, *, force=False) -> ImageMeta``: header only (stop before pixels).
- :func:`check_header`: the pre-decode checks on a header (classify files without decoding).
- :func:`read_stored`: one DICOM frame as raw integer stored values.
- Writers: :func:`write_png16`, :func:`write_png8`, :func:`write_jpeg`, :func:`save_dicom_like`.

Failures raise :class:`medforensics.errors.ReadError` subclasses:

======================================  ===============================================
Situation                               Error (``.reason``)
======================================  ===============================================
cannot open/read the file               FileAccessError (``file-access``)
empty / not DICOM, PNG, JPEG or TIFF    NotDicomError (``not-an-image-file``)
no preamble/file meta, force=False      MissingFileMetaError (``no-file-meta``)
header cannot be parsed / inconsistent  CorruptHeaderError (``corrupt-header``)
SR, presentation state, no pixel module NotAnImageError (``not-an-image``)
image header but no Pixel Data          NoPixelDataError (``no-pixel-data``)
colour (RGB/YBR/PALETTE), >1 sample     UnsupportedPhotometricError
Rows x Columns x Frames > max_pixels    ImageTooLargeError (``too-large``)
Pixel Data shorter than declared        TruncatedPixelDataError (``truncated-pixel-data``)
compressed, no plugin installed         MissingDecoderError (``no-decoder``), names the pip
                                        package to install
decoder fails on the stream             DecodeError (``decode-failed``)
======================================  ===============================================
"""

from medforensics.io.dicom_pixels import check_header
from medforensics.io.meta import DEFAULT_MAX_PIXELS, HEADER_KEYWORDS, Image, ImageMeta
from medforensics.io.reader import (
    iter_frames,
    read_header,
    read_image,
    read_stored,
    sniff,
)
from medforensics.io.writers import save_dicom_like, write_jpeg, write_png8, write_png16

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "HEADER_KEYWORDS",
    "Image",
    "ImageMeta",
    "check_header",
    "iter_frames",
    "read_header",
    "read_image",
    "read_stored",
    "save_dicom_like",
    "sniff",
    "write_jpeg",
    "write_png16",
    "write_png8",
]
