"""Image metadata (:class:`ImageMeta`) and the :class:`Image` result type of the reader.

The reader fills :class:`ImageMeta` from DICOM headers (or from PNG/JPEG/TIFF file headers).
Text values are always ``str`` (empty when absent), so rows of a manifest can be built from
them directly; raw header values are kept in :attr:`ImageMeta.header` under their DICOM
keyword names (the manifest's raw columns).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "HEADER_KEYWORDS",
    "Image",
    "ImageMeta",
]

#: Default decompression-bomb guard: the largest Rows x Columns x Frames accepted (2**30).
DEFAULT_MAX_PIXELS: int = 1 << 30

#: DICOM keywords copied (as strings) into :attr:`ImageMeta.header`. ``TransferSyntaxUID``
#: (file meta) is added as well.
HEADER_KEYWORDS: tuple[str, ...] = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "StudyDate",
    "AcquisitionDate",
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "DeviceSerialNumber",
    "StationName",
    "InstitutionName",
    "SoftwareVersions",
    "DetectorID",
    "DetectorType",
    "DetectorManufacturerName",
    "DetectorManufacturerModelName",
    "BodyPartExamined",
    "ViewPosition",
    "ImageLaterality",
    "Laterality",
    "SeriesDescription",
    "ImageType",
    "PresentationIntentType",
    "BurnedInAnnotation",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    "SpecificCharacterSet",
)


@dataclass(frozen=True)
class ImageMeta:
    """What the reader knows about an image file (DICOM header or raster file header).

    Text fields are ``""`` when the header lacks them. ``header`` maps DICOM keywords
    (:data:`HEADER_KEYWORDS` plus ``TransferSyntaxUID``) to their raw values as strings,
    multi-valued elements joined with a backslash; for PNG/JPEG/TIFF it holds a few
    format-specific values (``PILMode``/``TIFFDtype``, ``Compression``, ...).

    Attributes:
        path: the file read (``str``; for file objects their ``name`` or ``"<stream>"``).
        format: ``"dicom"``, ``"png"``, ``"jpeg"`` or ``"tiff"``.
        rows: image height in pixels.
        cols: image width in pixels.
        n_frames: number of frames (DICOM NumberOfFrames, TIFF pages), at least 1.
        bits_stored: DICOM BitsStored; 8 or 16 (sample bit depth) for raster files.
        photometric: DICOM PhotometricInterpretation as written (``""`` when absent);
            ``"MONOCHROME2"`` for grey raster files, ``"RGB"``/``"PALETTE COLOR"`` for
            colour ones (``read_image`` reports ``"MONOCHROME2"`` when the colour channels
            turn out to be equal).
        modality, manufacturer, model, serial, station, institution, patient_id, study_uid,
        series_uid, sop_uid, body_part, view, laterality: Modality, Manufacturer,
            ManufacturerModelName, DeviceSerialNumber, StationName, InstitutionName,
            PatientID, StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID,
            BodyPartExamined, ViewPosition, ImageLaterality (falling back to Laterality).
        transfer_syntax: Transfer Syntax UID (``""`` for raster files).
        lossy: ``True`` when the pixels went through lossy compression: lossy-only transfer
            syntax (JPEG baseline/extended, JPEG-LS near-lossless, video), a lossy-capable
            syntax (JPEG 2000, HTJ2K) unless LossyImageCompression is ``"00"``, or
            LossyImageCompression ``"01"``; JPEG (and JPEG-compressed TIFF) raster files.
        sop_class_uid: SOPClassUID.
        software_versions: SoftwareVersions (backslash-joined).
        presentation_intent: PresentationIntentType (``FOR PROCESSING``/``FOR PRESENTATION``).
        image_type: ImageType (backslash-joined, e.g. ``ORIGINAL\\PRIMARY``).
        series_description: SeriesDescription.
        bits_allocated: BitsAllocated (raster: bits per sample).
        pixel_representation: 0 unsigned, 1 signed.
        samples_per_pixel: SamplesPerPixel (raster: channels).
        has_pixel_data: whether a Pixel Data element is present.
        pixel_data_bytes: bytes of Pixel Data actually present in the file (``None`` when
            unknown, e.g. raster files or deflated DICOM headers).
        charset: how text was decoded: the SpecificCharacterSet, or ``"undeclared"``, or
            ``"undeclared (guessed <codec>)"`` when undeclared non-ASCII bytes were found.
        header: raw header values (see above).
    """

    path: str
    format: str
    rows: int
    cols: int
    n_frames: int = 1
    bits_stored: int = 0
    photometric: str = ""
    modality: str = ""
    manufacturer: str = ""
    model: str = ""
    serial: str = ""
    station: str = ""
    institution: str = ""
    patient_id: str = ""
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    body_part: str = ""
    view: str = ""
    laterality: str = ""
    transfer_syntax: str = ""
    lossy: bool = False
    sop_class_uid: str = ""
    software_versions: str = ""
    presentation_intent: str = ""
    image_type: str = ""
    series_description: str = ""
    bits_allocated: int = 0
    pixel_representation: int = 0
    samples_per_pixel: int = 1
    has_pixel_data: bool = True
    pixel_data_bytes: int | None = None
    charset: str = ""
    header: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a plain ``dict`` (``header`` copied)."""
        out = dataclasses.asdict(self)
        out["header"] = dict(self.header)
        return out


class Image(NamedTuple):
    """Result of :func:`medforensics.io.read_image`.

    Attributes:
        pixels: ``np.ndarray`` float32, shape (H, W): stored values after the Modality LUT,
            MONOCHROME1 inverted (higher = brighter), no VOI/windowing. Value range is that
            of the data (e.g. 0..4095 for 12-bit unsigned, may be negative after rescale).
        meta: the :class:`ImageMeta` of the file.
    """

    pixels: np.ndarray
    meta: ImageMeta
