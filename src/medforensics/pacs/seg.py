"""DICOM Segmentation of a forgery map, at the analysed image's own Rows x Columns.

One segment, "Suspected manipulated region" (private code, :mod:`.codes`), in one of two
encodings:

- ``fractional`` (default): the per-pixel forgery probability as a FRACTIONAL / PROBABILITY
  segmentation, 8 bits (value = round(p x 255), Maximum Fractional Value 255): a viewer
  shows where and how strongly the cues fired; read back it equals the map to within 1/510.
- ``binary``: the forged-area mask (``map >= map_threshold``, the pixels counted by
  ``forged_area_percent``) as a BINARY segmentation: exactly the area the verdict speaks of.

The frame is written even when the map is empty (an "authentic" image gets an all-zero
segment, not a SEG without frames). Only single-frame sources: the analysis reads frame 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medforensics.pacs import codes as C
from medforensics.pacs.common import (
    Producer,
    derived_uid,
    model_fingerprint,
    require,
    source_header,
)
from medforensics.pacs.errors import DicomBuildError

__all__ = ["SEG_KINDS", "SEG_SERIES_NUMBER", "build_seg", "seg_mask"]

#: Series Number of the SEG objects
SEG_SERIES_NUMBER = 9902
#: the encodings :func:`build_seg` writes
SEG_KINDS = ("fractional", "binary")
_MAX_FRACTION = 255


def build_seg(
    source: Dataset | str,
    prob_map: np.ndarray,
    *,
    kind: str = "fractional",
    threshold: float = 0.5,
    model: Mapping[str, Any] | None = None,
    producer: Producer | None = None,
    sop_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
) -> Any:
    """A Segmentation of ``prob_map`` referencing the analysed image.

    Args:
        source: the analysed image's data set (pixels not needed) or DICOM file.
        prob_map: float (H, W) forgery probabilities in [0, 1], H x W = the source's
            Rows x Columns (``ForgeryResult.prob_map``).
        kind: ``"fractional"`` (probabilities) or ``"binary"`` (``prob_map >= threshold``).
        threshold: the map threshold of the binary mask (the result's ``map_threshold``).
        model: the forgery result's ``model`` entry (``name``, ``sha256``, ...): named in
            the segment's algorithm and seeding the UIDs.
        producer: the software (name, version, institution).
        sop_instance_uid, series_instance_uid: as in :func:`medforensics.pacs.sr.build_report`
            (default: derived, so the same analysis gives the same UIDs).

    Returns:
        a ``highdicom.seg.Segmentation`` (a ``pydicom.Dataset``).

    Raises:
        DicomBuildError: unknown kind, multi-frame source, map shape different from the
            source's Rows x Columns, or a map with NaN / values outside [0, 1].
        MissingDicomExtraError: highdicom is not installed.
    """
    if kind not in SEG_KINDS:
        raise DicomBuildError(f"unknown SEG kind {kind!r} (expected one of "
                              f"{', '.join(SEG_KINDS)})")
    hd = require("highdicom")
    require("highdicom.coding_schemes")
    from pydicom.sr.codedict import codes as std

    producer = producer or Producer()
    ref = source_header(source)
    m = _checked_map(ref, prob_map)
    model = model or {}
    desc = _segment(hd, std, kind, producer, model)
    if kind == "fractional":
        pixels = m
        extra: dict[str, Any] = {"fractional_type": "PROBABILITY",
                                 "max_fractional_value": _MAX_FRACTION}
    else:
        pixels = (m >= float(threshold)).astype(np.uint8)
        extra = {}
    fp = model_fingerprint(producer, model)
    seg = hd.seg.Segmentation(
        source_images=[ref],
        pixel_array=pixels,
        segmentation_type=kind.upper(),
        segment_descriptions=[desc],
        series_instance_uid=series_instance_uid
        or derived_uid(ref.StudyInstanceUID, "seg-series", kind, fp),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid
        or derived_uid(ref.SOPInstanceUID, "seg", kind, fp),
        instance_number=int(ref.get("InstanceNumber") or 1),
        manufacturer=producer.software,
        manufacturer_model_name=producer.software,
        software_versions=producer.resolved_version(),
        device_serial_number="none",
        omit_empty_frames=False,
        content_label="FORGERY" if kind == "fractional" else "FORGEDAREA",
        content_description=("forgery probability map" if kind == "fractional" else
                             f"forged area (map >= {float(threshold):g})"),
        series_description=f"medforensics forgery map ({kind})",
        coding_schemes=[hd.coding_schemes.CodingSchemeIdentificationItem(
            designator=C.SCHEME, name=C.SCHEME_NAME, version=C.SCHEME_VERSION,
            responsible_organization=C.SCHEME_OWNER)],
        **extra,
    )
    if "ImageOrientationPatient" not in ref:
        _fit_projection(seg, ref)
    if producer.institution:
        seg.InstitutionName = producer.institution
    return seg


def _checked_map(ref: Dataset, prob_map: np.ndarray) -> np.ndarray:
    """``prob_map`` as float32, refused unless it covers the single frame of ``ref`` pixel
    for pixel with finite probabilities, so the SEG never misplaces or invents a value.

    Raises:
        DicomBuildError: multi-frame source, another shape, NaN or values outside [0, 1].
    """
    if int(ref.get("NumberOfFrames") or 1) != 1:
        raise DicomBuildError(f"{ref.SOPInstanceUID}: multi-frame source "
                              f"({ref.NumberOfFrames} frames); a SEG is written for "
                              "single-frame images only")
    m = np.asarray(prob_map, dtype=np.float32)
    shape = (int(ref.get("Rows") or 0), int(ref.get("Columns") or 0))
    if m.shape != shape:
        raise DicomBuildError(f"{ref.SOPInstanceUID}: map is {m.shape[0]} x "
                              f"{m.shape[1] if m.ndim > 1 else 0}, the image "
                              f"{shape[0]} x {shape[1]} (Rows x Columns)")
    if not np.all(np.isfinite(m)) or m.min(initial=0.0) < 0.0 or m.max(initial=0.0) > 1.0:
        raise DicomBuildError("the forgery map must hold finite values in [0, 1]")
    return np.clip(m, 0.0, 1.0)


def _segment(hd: Any, std: Any, kind: str, producer: Producer,
             model: Mapping[str, Any]) -> Any:
    """The one segment's description: what it shows and which algorithm (and model) made
    it, so a viewer can tell the reader where the map came from."""
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"{producer.software} forgery detection"
        + (f" ({model['name']})" if model.get("name") else ""),
        version=producer.resolved_version(),
        family=std.cid7162.ArtificialIntelligence,
    )
    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="forgery probability" if kind == "fractional" else "forged area",
        segmented_property_category=C.code("seg_category"),
        segmented_property_type=C.code("seg_type"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )


def _fit_projection(seg: Any, ref: Dataset) -> None:
    """Adjust the SEG of a projection image (DX, CR, MG, ...: no patient coordinate system)
    so that it is valid and readable: Patient Orientation present (General Image module,
    Type 2C for these), and no Pixel Measures item without Slice Thickness.

    highdicom copies the source's Pixel Spacing into a Pixel Measures item without Slice
    Thickness, which highdicom's own reader (and viewers built on it) refuse; the SEG is
    pixel-for-pixel with its source (Derivation Image Sequence), so the spacing is the
    source's and the item is left out.
    """
    if "PatientOrientation" not in seg:
        seg.PatientOrientation = ref.get("PatientOrientation", "")
    for group in seg.get("SharedFunctionalGroupsSequence") or []:
        measures = group.get("PixelMeasuresSequence")
        if measures and "SliceThickness" not in measures[0]:
            del group.PixelMeasuresSequence


def seg_mask(ds: Dataset) -> np.ndarray:
    """Segment 1 of a single-frame SEG written by :func:`build_seg`, read back.

    Returns:
        float32 (Rows, Columns): probabilities in [0, 1] for a FRACTIONAL SEG (stored
        value / Maximum Fractional Value), 0.0 / 1.0 for a BINARY one.

    Raises:
        DicomBuildError: not a Segmentation, or not one frame of segment 1.
    """
    if str(ds.get("Modality", "")) != "SEG" or "PixelData" not in ds:
        raise DicomBuildError("not a Segmentation with pixel data")
    if int(ds.get("NumberOfFrames") or 1) != 1:
        raise DicomBuildError(f"expected one frame, found {ds.NumberOfFrames}")
    arr = np.asarray(ds.pixel_array).astype(np.float32)
    if arr.ndim == 3:
        arr = arr[0]
    if str(ds.get("SegmentationType", "")) == "FRACTIONAL":
        return arr / float(ds.get("MaximumFractionalValue") or _MAX_FRACTION)
    return (arr > 0).astype(np.float32)
