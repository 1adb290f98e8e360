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
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from medforensics.errors import InvalidArrayError

__all__ = ["jpeg_roundtrip", "ela_map", "ela_enhance", "ela_score", "JpegGrid", "jpeg_grid"]


def _check_uint8_2d(img: np.ndarray) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise InvalidArrayError(f"ELA expects a 2-D grey image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise InvalidArrayError(
            f"ELA expects uint8 (8-bit) pixels, got {arr.dtype}; window higher bit depths first "
            "(see medforensics.forgery.cues.ela.window_to_uint8)"
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


#: a JPEG 8x8 grid is reported when both axes peak at the same phase by at least this ratio
JPEG_GRID_MIN_RATIO = 1.03
_GRID_STRIP = 512


@dataclass(frozen=True)
class JpegGrid:
    """Trace of an 8 x 8 JPEG block grid in an image (output of :func:`jpeg_grid`).

    Attributes:
        detected: both axes show a boundary phase standing out by a margin ``m`` at the
            same phase (an uncropped JPEG), or by ``2.5 m`` at different phases (a cropped
            JPEG); ``m = max(min_ratio - 1, 0.4 / sqrt(min(H, W) / 8))`` (small images
            need a clearer peak).
        ratio: ``(rows, columns)``: for each axis, the strongest phase's median neighbour
            difference divided by the median over the other seven phases (1.0 = no grid).
        offset: ``(dy, dx)`` in 0..7: the first block row / column of the grid (0 when the
            image starts on a block boundary, as an uncropped JPEG does).
    """

    detected: bool
    ratio: tuple[float, float]
    offset: tuple[int, int]


def _phase_ratio(profile: np.ndarray) -> tuple[float, int]:
    """Peak phase of a per-boundary difference profile folded modulo 8."""
    n = profile.size // 8 * 8
    if n < 16:
        return 1.0, 0
    ph = profile[:n].reshape(-1, 8)
    # each 8-boundary period relative to its own mean (content changes slowly across periods)
    rel = np.median(ph / (ph.mean(axis=1, keepdims=True) + 1e-12), axis=0)
    p = int(np.argmax(rel))
    others = np.delete(rel, p)
    return float(rel[p] / max(float(np.median(others)), 1e-12)), p


def _step_excess(s: np.ndarray) -> np.ndarray:
    """|step across a boundary - mean of the two neighbouring steps| along axis 1.

    ``out[:, j]`` is for the boundary between columns ``j + 1`` and ``j + 2``; a smooth
    gradient has equal steps and gives 0, a block edge adds to the middle step only.
    """
    d = np.diff(s, axis=1)
    return np.abs(d[:, 1:-1] - 0.5 * (d[:, :-2] + d[:, 2:]))


def jpeg_grid(img: np.ndarray, min_ratio: float = JPEG_GRID_MIN_RATIO) -> JpegGrid:
    """Detect the 8 x 8 block grid that JPEG compression leaves in an image.

    Block-wise DCT quantisation makes the step between neighbouring pixels across a block
    boundary larger than the steps next to it. For every column boundary the excess of the
    step over the mean of its two neighbouring steps is averaged over all rows (and the
    same for rows); folded modulo 8, a JPEG history shows one phase standing out on both
    axes (an image that never was JPEG shows none, or peaks at unrelated phases). Used to
    switch ELA on for 8-bit PNG / TIFF files that were JPEG before (``meta.lossy`` cannot
    say so).

    A JPEG whose noise hides the quantisation shows no grid and is missed; how often exports
    are found and never-JPEG images are not is in docs/forgery.md.

    Args:
        img: (H, W) real array (any bit depth); at least 16 x 16.
        min_ratio: per-axis ratio needed on both axes of a large image.

    Returns:
        :class:`JpegGrid`.

    Raises:
        InvalidArrayError: not 2-D, or smaller than 16 x 16.
    """
    arr = np.asarray(img)
    if arr.ndim != 2 or min(arr.shape) < 16:
        raise InvalidArrayError(f"jpeg_grid expects a 2-D image of at least 16x16, got {arr.shape}")
    H, W = arr.shape
    col = np.zeros(W - 3, np.float64)  # boundary between columns j + 1 and j + 2
    row = np.zeros(H - 3, np.float64)
    for y0 in range(0, H, _GRID_STRIP):
        y1 = min(y0 + _GRID_STRIP, H)
        s = arr[y0:y1].astype(np.float32)
        col += _step_excess(s).sum(axis=0, dtype=np.float64)
    for x0 in range(0, W, _GRID_STRIP):
        x1 = min(x0 + _GRID_STRIP, W)
        s = arr[:, x0:x1].T.astype(np.float32)
        row += _step_excess(s).sum(axis=0, dtype=np.float64)
    ry, py = _phase_ratio(row)
    rx, px = _phase_ratio(col)
    # an uncropped JPEG peaks at the same phase on both axes; a cropped one may not, and then
    # needs a clearer peak (chance agreement of unrelated peaks is 1 in 8)
    # small images have few 8-px periods to average: chance peaks of a never-JPEG 256 px MR
    # slice reach 1.04-1.07, so the margin grows as 0.4 / sqrt(periods) (0.07 at 256 px)
    margin = max(min_ratio - 1.0, 0.4 / math.sqrt(max(min(H, W) // 8, 1)))
    need = 1.0 + (margin if py == px else 2.5 * margin)
    detected = bool(min(ry, rx) >= need)
    # profile index j is the boundary after column j + 1, i.e. blocks start at j + 2
    return JpegGrid(detected, (ry, rx), ((py + 2) % 8, (px + 2) % 8))
