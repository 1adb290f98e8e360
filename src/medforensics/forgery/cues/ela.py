"""ELA on medical images: an explicit 8-bit window for 12-16-bit data, then ``dsp.ela``.

ELA is defined on 8-bit JPEG data. For 8-bit images (PNG/JPEG, 8-bit DICOM) it runs on the
stored values as they are. For higher bit depths a window ``[lo, hi]`` of stored values is
mapped linearly to 0..255 first (default: the 0.5 and 99.5 percentiles of the stored values)
and the window is reported in :attr:`ElaResult.note`, so nobody mistakes the result for an
analysis of the full-depth data. ELA is a JPEG-domain heuristic: on a losslessly stored
DICOM it mostly shows texture and noise, not editing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medforensics.dsp.ela import ela_enhance, ela_map, ela_score, jpeg_grid
from medforensics.forgery.cues.registry import (
    CueContext,
    CueOutput,
    register_cue,
    signature_defaults,
)
from medforensics.io import read_image

__all__ = [
    "lossy_codec",
    "jpeg_history",
    "ElaResult",
    "window_to_uint8",
    "is_8bit",
    "analyze_ela",
    "ela_file",
    "ela_cue",
    "ela_cnn_input",
]

log = logging.getLogger(__name__)


@dataclass
class ElaResult:
    """Result of :func:`analyze_ela`.

    Attributes:
        ela: float32 (H, W), raw ELA |x8 - jpeg_q(x8)|, values 0..255.
        enhanced: uint8 (H, W), ELA scaled by 255/max (paper's localization image).
        score: mean ELA as % of 8-bit full scale (0..100; the paper's "percentage of forgery",
            which is *not* a share of forged pixels).
        quality: JPEG quality used for the re-encoding.
        window: ``(lo, hi)`` stored-value window mapped to 0..255, or ``None`` when the image
            was already 8-bit and used as is.
        note: human-readable statement of what was computed.
    """

    ela: np.ndarray
    enhanced: np.ndarray
    score: float
    quality: int
    window: tuple[float, float] | None
    note: str


def is_8bit(pixels: np.ndarray, bits_stored: int | None = None) -> bool:
    """True when the values are integers in 0..255 (and ``bits_stored`` is <= 8 if given).

    Args:
        pixels: array (H, W), any real dtype.
        bits_stored: DICOM Bits Stored / PNG bit depth, if known.
    """
    if bits_stored is not None and bits_stored > 8:
        return False
    p = np.asarray(pixels)
    if p.size == 0:
        return False
    if float(p.min()) < 0.0 or float(p.max()) > 255.0:
        return False
    return bool(np.all(p == np.round(p)))


def window_to_uint8(
    pixels: np.ndarray,
    window: tuple[float, float] | None = None,
    lo_pct: float = 0.5,
    hi_pct: float = 99.5,
) -> tuple[np.ndarray, float, float]:
    """Map a window ``[lo, hi]`` of stored values linearly to 0..255 (clipped, rounded).

    Args:
        pixels: float array (H, W) of stored values (any range).
        window: explicit ``(lo, hi)``; when ``None`` the ``lo_pct``/``hi_pct`` percentiles of
            ``pixels`` are used.
        lo_pct: lower percentile (0..100) for the automatic window.
        hi_pct: upper percentile (0..100) for the automatic window.

    Returns:
        ``(img8, lo, hi)``: uint8 (H, W) values 0..255, and the window used. A constant image
        (``hi <= lo``) gives ``hi = lo + 1``.
    """
    p = np.asarray(pixels, dtype=np.float64)
    if window is None:
        lo, hi = (float(v) for v in np.percentile(p, [lo_pct, hi_pct]))
    else:
        lo, hi = float(window[0]), float(window[1])
    if hi <= lo:
        hi = lo + 1.0
    img8 = np.clip(np.rint((p - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
    return img8, lo, hi


def analyze_ela(
    pixels: np.ndarray,
    *,
    bits_stored: int | None = None,
    quality: int = 90,
    window: tuple[float, float] | None = None,
    lo_pct: float = 0.5,
    hi_pct: float = 99.5,
) -> ElaResult:
    """Run ELA on stored values, windowing to 8 bits first when they are not 8-bit.

    Args:
        pixels: float32 (H, W) stored values (the :func:`medforensics.io.read_image` contract).
        bits_stored: bit depth if known (8-bit data with ``bits_stored <= 8`` is used as is).
        quality: JPEG quality of the re-encoding (1..100).
        window: explicit stored-value window for >8-bit data; default percentile window.
        lo_pct: lower percentile of the automatic window.
        hi_pct: upper percentile of the automatic window.

    Returns:
        :class:`ElaResult`.
    """
    p = np.asarray(pixels)
    if p.ndim != 2:
        raise ValueError(f"ELA expects a 2-D image, got shape {p.shape}")
    if window is None and is_8bit(p, bits_stored):
        img8 = p.astype(np.uint8)
        win: tuple[float, float] | None = None
        note = (
            f"ELA computed on the stored 8-bit values at JPEG quality {quality}; "
            "ELA is a JPEG-domain heuristic"
        )
    else:
        img8, lo, hi = window_to_uint8(p, window, lo_pct, hi_pct)
        win = (lo, hi)
        note = (
            f"ELA computed on an 8-bit window [{lo:g}, {hi:g}] of stored values at JPEG quality "
            f"{quality}; ELA is a JPEG-domain heuristic"
        )
    ela = ela_map(img8, quality)
    res = ElaResult(
        ela=ela,
        enhanced=ela_enhance(ela),
        score=ela_score(ela),
        quality=int(quality),
        window=win,
        note=note,
    )
    log.debug("%s; score=%.3f", note, res.score)
    return res


def ela_file(path: str | Path, *, quality: int = 90, frame: int = 0) -> ElaResult:
    """Read an image with :func:`medforensics.io.read_image` and run :func:`analyze_ela`.

    Args:
        path: DICOM/PNG/JPEG/TIFF file.
        quality: JPEG quality of the re-encoding.
        frame: frame index for multi-frame files.

    Raises:
        medforensics.errors.ReadError: unreadable input (from the reader).
    """
    pixels, meta = read_image(path, frame=frame)
    return analyze_ela(pixels, bits_stored=getattr(meta, "bits_stored", None), quality=quality)


def ela_cue(ela: np.ndarray, block: int = 8, sharpness: float = 3.0,
            min_reference: float = 0.5) -> np.ndarray:
    """Per-pixel ELA cue in [0, 1] for the localization combiner.

    The raw ELA is averaged over ``block`` x ``block`` neighbourhoods (the JPEG block size),
    divided by its image median (so the cue is relative to the image's own error level), but
    at least ``min_reference`` 8-bit levels, and mapped with a logistic on the log ratio:
    ``1 / (1 + (ratio / 2) ** -sharpness)``, i.e. 0.5 where the local error level is twice the
    reference. The floor matters for smooth images (radiographs exported to JPEG): their median
    error level is ~0, and without a floor every faint texture would look "twice the median"
    and the cue would cover much of an untouched image (docs/forgery.md).

    Args:
        ela: float (H, W) raw ELA, values 0..255.
        block: averaging window in pixels.
        sharpness: logistic slope on the log2 ratio.
        min_reference: floor of the reference error level (8-bit levels).

    Returns:
        float32 (H, W), values in [0, 1].
    """
    e = ndimage.uniform_filter(np.asarray(ela, dtype=np.float64), size=block, mode="reflect")
    med = max(float(np.median(e)), float(min_reference))
    ratio = np.maximum(e / med, 0.0)
    # 1 / (1 + (r/2)^-s) written as (r/2)^s / (1 + (r/2)^s): no division by zero where the
    # local error level is 0 (cue 0 there), same values elsewhere
    p = (ratio / 2.0) ** sharpness
    cue = p / (1.0 + p)
    return np.nan_to_num(cue, nan=1.0).astype(np.float32)


def ela_cnn_input(
    pixels: np.ndarray,
    *,
    bits_stored: int | None = None,
    size: int = 128,
    quality: int = 90,
    ela: ElaResult | None = None,
) -> np.ndarray:
    """Input image of the ELA-CNN (``models`` name ``ela-cnn``), as in the paper.

    Steps: 8-bit data as is / an explicit 0.5-99.5 percentile window for higher bit depths
    (:func:`analyze_ela`), ELA at JPEG ``quality``, brightness enhancement ``255 / max``, then a
    bilinear resize to ``size`` x ``size`` (the paper resizes its images for the CNN; the resize
    averages the ELA over neighbourhoods).

    Args:
        pixels: float (H, W) stored values.
        bits_stored: bit depth if known.
        size: output side (128 gives the paper's 8x8x64 flatten).
        quality: JPEG quality of the re-encoding.
        ela: an :func:`analyze_ela` result of the same pixels at ``quality`` to reuse (saves
            the re-encoding when the caller also needs the ELA map).

    Returns:
        float32 (size, size), values 0..255.
    """
    from PIL import Image

    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    res = ela if ela is not None else analyze_ela(pixels, bits_stored=bits_stored,
                                                  quality=quality)
    if res.quality != quality:
        raise ValueError(f"ela was computed at quality {res.quality}, not {quality}")
    img = Image.fromarray(res.enhanced, mode="L").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def jpeg_history(pixels: np.ndarray, meta: object = None) -> tuple[bool, str | None]:
    """``(lossy, note)``: whether :func:`lossy_codec` finds any lossy history (JPEG or other)
    in ``pixels`` (H, W) with their ``ImageMeta`` ``meta``, and its note for a losslessly stored
    image that shows a JPEG block grid (None otherwise)."""
    codec, note = lossy_codec(pixels, meta)
    return codec is not None, note


#: lossy DICOM transfer syntaxes whose coding is not JPEG's 8 x 8 DCT
_NON_DCT_LOSSY = frozenset({
    "1.2.840.10008.1.2.4.81",   # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.91",   # JPEG 2000
    "1.2.840.10008.1.2.4.93",   # JPEG 2000 part 2
    "1.2.840.10008.1.2.4.203",  # HTJ2K
})


def lossy_codec(pixels: np.ndarray, meta: object = None) -> tuple[str | None, str | None]:
    """Which kind of lossy history an image has, and how we know.

    ``"jpeg"``: JPEG's 8 x 8 DCT coding - JPEG files and JPEG-compressed TIFF, JPEG and video
    transfer syntaxes, or the 8 x 8 block grid a JPEG history leaves in a losslessly stored
    image (:func:`medforensics.dsp.ela.jpeg_grid`; a JPEG saved again as PNG is the textbook
    case for ELA). ``"other"``: JPEG 2000 / HTJ2K, JPEG-LS near-lossless, or a header that
    says lossy (LossyImageCompression "01") over pixels that show no JPEG grid. None:
    lossless.

    Args:
        pixels: (H, W) image (any bit depth).
        meta: its ``ImageMeta`` or None.

    Returns:
        ``(codec, note)``: ``note`` says why a losslessly stored image is treated as lossy
        (None otherwise).
    """
    img = np.asarray(pixels)
    if bool(getattr(meta, "lossy", False)):
        ts = str(getattr(meta, "transfer_syntax", "") or "")
        if ts in _NON_DCT_LOSSY:
            return "other", None
        if getattr(meta, "format", "") != "dicom" or ts.startswith("1.2.840.10008.1.2.4."):
            return "jpeg", None  # JPEG raster / TIFF, JPEG or video syntaxes, or unknown
        grid = jpeg_grid(img) if img.ndim == 2 and min(img.shape) >= 16 else None
        return ("jpeg" if grid is not None and grid.detected else "other"), None
    if img.ndim != 2 or min(img.shape) < 16:
        return None, None
    grid = jpeg_grid(img)
    if not grid.detected:
        return None, None
    return "jpeg", (f"JPEG history found in a losslessly stored image (8x8 block grid starting "
                    f"at row {grid.offset[0]}, column {grid.offset[1]}; blockiness "
                    f"{grid.ratio[0]:.2f} / {grid.ratio[1]:.2f}): treated as lossy (ELA on)")


@register_cue("ela", rank=50, context=("bits_stored",),
              defaults=signature_defaults(analyze_ela, exclude=("bits_stored",)))
def _ela_cue(img: np.ndarray, ctx: CueContext, params: Mapping[str, Any]) -> CueOutput:
    """The registered ``ela`` cue: :func:`analyze_ela` then :func:`ela_cue`. ELA is a
    JPEG-domain heuristic: skipped (with a note) on lossless data and on lossy coding that is
    not JPEG's, unless the cue was named explicitly."""
    if not ctx.lossy and not ctx.explicit:
        return CueOutput(notes=[("ELA skipped: the image is losslessly stored (ELA is a "
                                 "JPEG-domain heuristic)")])
    if ctx.non_dct and not ctx.explicit:
        return CueOutput(notes=[("ELA skipped: the lossy coding is not JPEG's (JPEG 2000, "
                                 "JPEG-LS near-lossless, or no JPEG block grid); ELA is a "
                                 "JPEG-domain heuristic")])
    er = analyze_ela(img, **{"bits_stored": ctx.bits_stored, **params})
    return CueOutput(maps={"ela": ela_cue(er.ela)}, notes=[er.note],
                     details={"ela_score": er.score, "window": er.window}, result=er)
