"""Display images for the browser: a grey preview and a forgery heat-map overlay, as PNG bytes.

These are for people to look at, not for analysis: stored values are windowed to 8 bits
(:func:`medforensics.forgery.ela.window_to_uint8`, 0.5-99.5 percentile window) and the image
is shrunk to at most ``max_side`` pixels. The analysis itself always runs on the stored values.
"""

from __future__ import annotations

import base64
import io

import numpy as np

from medforensics.errors import InvalidArrayError

__all__ = ["heat_colours", "overlay_rgb", "png_b64", "preview_grey"]

#: Default longest side of display images, in pixels.
DISPLAY_MAX_SIDE = 768


def _shrink(img: np.ndarray, max_side: int, resample: int) -> np.ndarray:
    from PIL import Image as PILImage

    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(PILImage.fromarray(img).resize(size, resample))


def preview_grey(pixels: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """Windowed 8-bit display copy of an image.

    Args:
        pixels: (H, W) float stored values (pixel contract).
        max_side: longest side of the result in pixels (never enlarged).

    Returns:
        (h, w) uint8 in 0..255, ``h <= max_side`` and ``w <= max_side``.

    Raises:
        InvalidArrayError: not a non-empty 2-D array.
    """
    from PIL import Image as PILImage

    from medforensics.forgery.ela import window_to_uint8

    p = np.asarray(pixels)
    if p.ndim != 2 or p.size == 0:
        raise InvalidArrayError(f"expected a non-empty (H, W) image, got shape {p.shape}")
    finite = np.where(np.isfinite(p), p, 0.0)
    img8, _, _ = window_to_uint8(finite)
    return _shrink(img8, max_side, PILImage.Resampling.LANCZOS)


def heat_colours(prob: np.ndarray) -> np.ndarray:
    """Heat-map colours: red at low probability, turning yellow at 1 (never white or grey,
    so the overlay stands apart from bright anatomy).

    Args:
        prob: float array of any shape, values in 0..1 (clipped; NaN counts as 0).

    Returns:
        float32 array ``prob.shape + (3,)`` of RGB in 0..1: ``(1, max(0, 2p - 1), 0)``.
    """
    p = np.clip(np.nan_to_num(np.asarray(prob, dtype=np.float32), nan=0.0), 0.0, 1.0)
    return np.stack(
        [np.ones_like(p), np.clip(2.0 * p - 1.0, 0.0, 1.0), np.zeros_like(p)], axis=-1
    ).astype(np.float32)


def overlay_rgb(
    pixels: np.ndarray,
    prob_map: np.ndarray,
    *,
    max_side: int = DISPLAY_MAX_SIDE,
    max_alpha: float = 0.65,
) -> np.ndarray:
    """Grey image with the forgery probability map blended on top as a heat map.

    The map's opacity grows with the probability (``alpha = max_alpha * p``), so clean areas
    show the image unchanged and suspect areas glow red to yellow (:func:`heat_colours`).

    Args:
        pixels: (H, W) float stored values.
        prob_map: (H, W) float per-pixel forgery probability in 0..1 (resized to the image
            when its shape differs; NaN counts as 0).
        max_side: longest side of the result in pixels.
        max_alpha: opacity at probability 1 (0..1).

    Returns:
        (h, w, 3) uint8 RGB.

    Raises:
        InvalidArrayError: either array is not a non-empty 2-D array.
    """
    from PIL import Image as PILImage

    grey = preview_grey(pixels, max_side)
    pm = np.asarray(prob_map, dtype=np.float32)
    if pm.ndim != 2 or pm.size == 0:
        raise InvalidArrayError(f"prob_map must be a non-empty (H, W) array, got {pm.shape}")
    pm = np.clip(np.nan_to_num(pm, nan=0.0), 0.0, 1.0)
    if pm.shape != grey.shape:
        pm = np.asarray(
            PILImage.fromarray(pm).resize((grey.shape[1], grey.shape[0]),
                                          PILImage.Resampling.BILINEAR)
        )
    alpha = (float(max_alpha) * pm)[..., None]
    base = np.repeat(grey[..., None].astype(np.float32) / 255.0, 3, axis=-1)
    out = (1.0 - alpha) * base + alpha * heat_colours(pm)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def png_b64(image: np.ndarray) -> str:
    """PNG-encode a uint8 grey (H, W) or RGB (H, W, 3) image; returns base64 text."""
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG", optimize=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")
