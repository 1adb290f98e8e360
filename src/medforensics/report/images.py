"""Pictures for people: grey display previews, heat-map overlays, PNG text and map files.

These are for people to look at, not for analysis: stored values are windowed to 8 bits
(:func:`medforensics.forgery.cues.ela.window_to_uint8` over the
:data:`DISPLAY_WINDOW_PERCENTILES`) and the image is shrunk to at most ``max_side`` pixels. The
analysis itself always runs on the stored values. The overlay colours are those of
:mod:`medforensics.report.colours`.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

from medforensics.common.atomic import atomic_save_npy, atomic_write_with
from medforensics.errors import InvalidArrayError
from medforensics.forgery.cues.ela import window_to_uint8
from medforensics.forgery.detector import ForgeryResult
from medforensics.io import write_png16
from medforensics.report.colours import heat_colours
from medforensics.report.marks import annotate_regions

__all__ = [
    "DISPLAY_MAX_SIDE", "DISPLAY_WINDOW_PERCENTILES", "MapWriter", "display_preview",
    "overlay_rgb", "png_b64", "preview_grey", "save_map_files",
]

#: Default longest side of display images, in pixels.
DISPLAY_MAX_SIDE = 768

#: Percentiles of the stored values mapped to 0 and 255 in display images.
DISPLAY_WINDOW_PERCENTILES: tuple[float, float] = (0.5, 99.5)


def _shrink(img: np.ndarray, max_side: int, resample: int) -> np.ndarray:
    """``img`` (uint8 or float32, (H, W) or (H, W, 3)) shrunk so that its longest side is at
    most ``max_side`` pixels, aspect kept; never enlarged."""
    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(img).resize(size, resample))


def display_preview(pixels: np.ndarray, max_side: int = DISPLAY_MAX_SIDE
                    ) -> tuple[np.ndarray, float, float]:
    """Windowed 8-bit display copy of an image, with the window it used.

    Non-finite values count as 0. The window is the :data:`DISPLAY_WINDOW_PERCENTILES` of the
    full-resolution stored values, so a page can state it.

    Args:
        pixels: (H, W) float stored values (pixel contract).
        max_side: longest side of the result in pixels (never enlarged).

    Returns:
        ``(img, lo, hi)``: (h, w) uint8 in 0..255 with ``h, w <= max_side``, and the window
        ``[lo, hi]`` in stored-value units.

    Raises:
        InvalidArrayError: not a non-empty 2-D array.
    """
    p = np.asarray(pixels)
    if p.ndim != 2 or p.size == 0:
        raise InvalidArrayError(f"expected a non-empty (H, W) image, got shape {p.shape}")
    finite = np.where(np.isfinite(p), p, 0.0)
    img8, lo, hi = window_to_uint8(finite, None, *DISPLAY_WINDOW_PERCENTILES)
    return _shrink(img8, max_side, Image.Resampling.LANCZOS), float(lo), float(hi)


def preview_grey(pixels: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """Windowed 8-bit display copy of an image (:func:`display_preview` without the window).

    Args:
        pixels: (H, W) float stored values (pixel contract).
        max_side: longest side of the result in pixels (never enlarged).

    Returns:
        (h, w) uint8 in 0..255, ``h <= max_side`` and ``w <= max_side``.

    Raises:
        InvalidArrayError: not a non-empty 2-D array.
    """
    return display_preview(pixels, max_side)[0]


def overlay_rgb(
    pixels: np.ndarray,
    prob_map: np.ndarray,
    *,
    max_side: int = DISPLAY_MAX_SIDE,
    max_alpha: float = 0.65,
) -> np.ndarray:
    """Grey image with the forgery probability map blended on top as a heat map.

    The map's opacity grows with the probability (``alpha = max_alpha * p``), so clean areas
    show the image unchanged and suspect areas glow red to yellow
    (:func:`medforensics.report.colours.heat_colours`).

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
    grey = preview_grey(pixels, max_side)
    pm = np.asarray(prob_map, dtype=np.float32)
    if pm.ndim != 2 or pm.size == 0:
        raise InvalidArrayError(f"prob_map must be a non-empty (H, W) array, got {pm.shape}")
    pm = np.clip(np.nan_to_num(pm, nan=0.0), 0.0, 1.0)
    if pm.shape != grey.shape:
        pm = np.asarray(
            Image.fromarray(pm).resize((grey.shape[1], grey.shape[0]),
                                          Image.Resampling.BILINEAR)
        )
    alpha = (float(max_alpha) * pm)[..., None]
    base = np.repeat(grey[..., None].astype(np.float32) / 255.0, 3, axis=-1)
    out = (1.0 - alpha) * base + alpha * heat_colours(pm)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def png_b64(image: np.ndarray) -> str:
    """PNG-encode a uint8 grey (H, W) or RGB (H, W, 3) image; returns base64 text."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG", optimize=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def save_map_files(result: ForgeryResult, pixels: np.ndarray, out_dir: str | Path,
                   stem: str, *, overlay_max_side: int = 2048) -> dict[str, str]:
    """Write the probability map of one result at native resolution, plus an overlay.

    Files: ``<stem>_map.png`` (16-bit grey PNG, value = round(map * 65535)),
    ``<stem>_map.npy`` (float32 (H, W), 0..1) and ``<stem>_overlay.png`` (RGB heat map over
    the image's 8-bit display window, longest side at most ``overlay_max_side``, with the
    flagged areas marked and a legend below: :func:`medforensics.report.marks.annotate_regions`;
    for people, not for analysis).

    Returns:
        ``{"map_png": ..., "map_npy": ..., "overlay_png": ...}`` paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = np.clip(np.asarray(result.prob_map, np.float32), 0.0, 1.0)
    files = {"map_png": out / f"{stem}_map.png", "map_npy": out / f"{stem}_map.npy",
             "overlay_png": out / f"{stem}_overlay.png"}
    # each file whole or absent (temporary file + rename)
    atomic_write_with(files["map_png"], lambda fh: write_png16(
        fh, np.rint(m * 65535.0).astype(np.uint16)))
    atomic_save_npy(files["map_npy"], m)
    over = overlay_rgb(pixels, m, max_side=overlay_max_side)
    over = annotate_regions(over, result.regions, over.shape[1] / m.shape[1],
                            copy_moves=result.copy_moves, heat=heat_colours)
    overlay = Image.fromarray(over)
    atomic_write_with(files["overlay_png"], lambda fh: overlay.save(fh, format="PNG"))
    return {k: str(v) for k, v in files.items()}


class MapWriter:
    """Writes the maps of a batch into one folder, one unique stem per image.

    The stem is the image's file name without suffix, made unique with ``_2``, ``_3``, ...
    Pass an instance as ``write_files`` to :func:`medforensics.forgery.detector.detect_files`.
    """

    def __init__(self, out_dir: str | Path, *, overlay_max_side: int = 2048) -> None:
        self.out_dir = Path(out_dir)
        self.overlay_max_side = overlay_max_side
        self._taken: set[str] = set()

    def __call__(self, result: ForgeryResult, pixels: np.ndarray, path: str) -> dict[str, str]:
        base = Path(path).stem or "image"
        stem, n = base, 1
        while stem in self._taken:
            n += 1
            stem = f"{base}_{n}"
        self._taken.add(stem)
        return save_map_files(result, pixels, self.out_dir, stem,
                              overlay_max_side=self.overlay_max_side)
