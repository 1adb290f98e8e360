"""Error Level Analysis (ELA), as used by the ELA-CNN medical forgery paper (seed 004).

ELA re-encodes an 8-bit image as JPEG at a chosen quality and looks at the absolute
difference between the image and its re-encoded copy. Regions that were already JPEG-compressed
at that quality change little; regions with a different compression history (e.g. an
uncompressed patch pasted into a JPEG) change more. ELA is a *JPEG-domain heuristic*: on
losslessly stored images it mostly reflects local texture and noise, not editing.

The functions here are pure: the JPEG round trip happens in memory with Pillow (no files).

Paper steps reproduced:

* ELA image = ``|x - jpeg_q(x)|`` (grey images, so no RGB-to-grey step is needed);
* "percentage of forgery" = normalised mean ELA intensity x 100. It is neither a percentage of
  forged pixels nor a probability, so it is exposed here under the honest name
  :func:`ela_score` (mean ELA error as a percentage of the 8-bit full scale, 0..100);
* localization image = ELA scaled by ``255 / max(ELA)`` (brightness enhancement).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from medforensics.errors import InvalidArrayError

__all__ = ["jpeg_roundtrip", "ela_map", "ela_enhance", "ela_score"]


def _check_uint8_2d(img: np.ndarray) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise InvalidArrayError(f"ELA expects a 2-D grey image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise InvalidArrayError(
            f"ELA expects uint8 (8-bit) pixels, got {arr.dtype}; window higher bit depths first "
            "(see medforensics.forgery.ela.window_to_uint8)"
        )
    return arr


def jpeg_roundtrip(img: np.ndarray, quality: int = 90) -> np.ndarray:
    """Encode an 8-bit grey image as baseline JPEG in memory and decode it again.

    Args:
        img: uint8 array, shape (H, W), values 0..255.
        quality: Pillow JPEG quality, 1..95 (the paper's "specified quality factor").

    Returns:
        uint8 array, shape (H, W): the decoded JPEG.

    Raises:
        InvalidArrayError: on a non-2-D or non-uint8 input or a quality outside 1..100.
    """
    arr = _check_uint8_2d(img)
    if not 1 <= int(quality) <= 100:
        raise InvalidArrayError(f"JPEG quality must be in 1..100, got {quality}")
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as dec:
        out = np.asarray(dec.convert("L"), dtype=np.uint8)
    return out


def ela_map(img: np.ndarray, quality: int = 90) -> np.ndarray:
    """Raw ELA image: absolute difference between the image and its JPEG re-encoding.

    Args:
        img: uint8 array, shape (H, W), values 0..255.
        quality: JPEG quality used for the re-encoding.

    Returns:
        float32 array, shape (H, W), values 0..255 (integer-valued).
    """
    arr = _check_uint8_2d(img)
    rt = jpeg_roundtrip(arr, quality)
    return np.abs(arr.astype(np.float32) - rt.astype(np.float32))


def ela_enhance(ela: np.ndarray) -> np.ndarray:
    """Brightness-enhanced ELA image for display/localization (paper: scale = 255 / max).

    Args:
        ela: float array, shape (H, W), values >= 0 (output of :func:`ela_map`).

    Returns:
        uint8 array, shape (H, W), values 0..255; all zeros when ``ela`` is all zero.
    """
    e = np.asarray(ela, dtype=np.float64)
    mx = float(e.max()) if e.size else 0.0
    if mx <= 0.0:
        return np.zeros(e.shape, dtype=np.uint8)
    return np.clip(np.rint(e * (255.0 / mx)), 0, 255).astype(np.uint8)


def ela_score(ela: np.ndarray) -> float:
    """Mean ELA intensity as a percentage of the 8-bit full scale (paper's "percentage of forgery").

    ``ela_score = 100 * mean(ela) / 255``. It measures how much the image changes under JPEG
    re-encoding; it is not the share of forged pixels and not a probability.

    Args:
        ela: float array, shape (H, W), values 0..255 (raw ELA from :func:`ela_map`).

    Returns:
        Float in [0, 100].
    """
    e = np.asarray(ela, dtype=np.float64)
    if e.size == 0:
        raise InvalidArrayError("empty ELA image")
    return float(100.0 * e.mean() / 255.0)
