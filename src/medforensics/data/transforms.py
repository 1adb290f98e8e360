"""Pure image transforms for the models: paper preprocessing and patch positions.

* :func:`paper_preprocess`: what Deep-RSI and DeepMammo did to every image (min-max rescale
  to 8-bit, resize to 256x256). It destroys most of the native noise fingerprint and exists
  only to reproduce the papers.
* :func:`sample_patch_positions`: random native-resolution patch corners that avoid flat
  (blank / blanked-out), saturated (clipped) and collimated-border areas, for the ``patch``
  model.
* :func:`tile_positions`: a regular grid of patch corners covering an image, for inference.

All positions are ``(y, x)`` integer top-left corners on the pixel grid (no sub-pixel
interpolation), so a patch is ``pixels[y:y+P, x:x+P]``.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image

from medforensics.dsp._checks import as_image
from medforensics.dsp.residuals import highpass_residual
from medforensics.errors import ConfigError, InvalidArrayError

__all__ = ["paper_preprocess", "sample_patch_positions", "tile_positions"]

log = logging.getLogger(__name__)


def paper_preprocess(
    pixels: np.ndarray, *, size: int = 256, jpeg_quality: int | None = None
) -> np.ndarray:
    """The Deep-RSI / DeepMammo preprocessing: min-max to 8-bit, then bilinear resize.

    Steps, as in the papers: (1) rescale the stored values linearly so the image minimum maps
    to 0 and the maximum to 255, round to the nearest integer (uint8, as when the papers
    exported PNG/JPEG files); (2) optionally JPEG-compress at ``jpeg_quality`` (Deep-RSI
    converted to JPEG, DeepMammo to PNG, i.e. no compression, the default); (3) resize to
    ``size`` x ``size`` with PIL's bilinear filter (which low-pass filters when shrinking).

    Warning:
        This destroys the forensic signal: 12-16-bit stored values are squashed to 256 levels
        and the resize averages/interpolates away the pixel-level noise pattern. Use it only
        to reproduce the papers; forensic presets work on native stored values.

    Args:
        pixels: (H, W) real array of stored values (any range), finite.
        size: output side (256 in both papers).
        jpeg_quality: JPEG quality 1..95 for the optional compression step, or None.

    Returns:
        float32 array (size, size) of integers in 0..255. A constant image gives all zeros.

    Raises:
        InvalidArrayError: not 2-D, empty, or non-finite values.
        ConfigError: size < 1 or jpeg_quality outside 1..95.
    """
    if not isinstance(size, int) or size < 1:
        raise ConfigError(f"size must be a positive int, got {size!r}")
    if jpeg_quality is not None and not 1 <= int(jpeg_quality) <= 95:
        raise ConfigError(f"jpeg_quality must be in 1..95, got {jpeg_quality!r}")
    a = as_image(pixels, "pixels")
    lo, hi = float(a.min()), float(a.max())
    if hi > lo:
        u8 = np.rint((a - lo) * (255.0 / (hi - lo))).clip(0, 255).astype(np.uint8)
    else:
        u8 = np.zeros(a.shape, dtype=np.uint8)
    img = Image.fromarray(u8)
    if jpeg_quality is not None:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(jpeg_quality))
        buf.seek(0)
        img = Image.open(buf)
        img.load()
    img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def tile_positions(h: int, w: int, patch: int, stride: int | None = None) -> list[tuple[int, int]]:
    """Top-left corners of a regular grid of ``patch`` x ``patch`` windows covering (h, w).

    Rows of corners are ``0, stride, 2*stride, ...`` plus a last one at ``h - patch`` when the
    grid does not reach the bottom edge (same for columns), so every pixel is covered.

    Args:
        h, w: image height and width.
        patch: window side.
        stride: step between windows (default ``patch``: non-overlapping).

    Returns:
        List of ``(y, x)`` int tuples, row-major.

    Raises:
        ConfigError: patch or stride < 1.
        InvalidArrayError: the image is smaller than one patch.
    """
    stride = patch if stride is None else stride
    if patch < 1 or stride < 1:
        raise ConfigError(f"patch and stride must be >= 1, got {patch}, {stride}")
    if h < patch or w < patch:
        raise InvalidArrayError(f"image {h}x{w} is smaller than the {patch}x{patch} patch")

    def axis(n: int) -> list[int]:
        pos = list(range(0, n - patch + 1, stride))
        if pos[-1] != n - patch:
            pos.append(n - patch)
        return pos

    return [(y, x) for y in axis(h) for x in axis(w)]


def _integral(a: np.ndarray) -> np.ndarray:
    """Summed-area table with a zero first row/column: shape (H+1, W+1), float64."""
    s = np.zeros((a.shape[0] + 1, a.shape[1] + 1), dtype=np.float64)
    np.cumsum(a, axis=0, out=s[1:, 1:])
    np.cumsum(s[1:, 1:], axis=1, out=s[1:, 1:])
    return s


def _window_means(s: np.ndarray, ys: np.ndarray, xs: np.ndarray, p: int) -> np.ndarray:
    """Mean over ``p`` x ``p`` windows at corners (ys, xs) from a summed-area table."""
    total = s[ys + p, xs + p] - s[ys, xs + p] - s[ys + p, xs] + s[ys, xs]
    return total / float(p * p)


def _collimation_box(
    noise_rows: np.ndarray, noise_cols: np.ndarray, threshold: float
) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the area inside uniform border rows/columns."""

    def inner(levels: np.ndarray) -> tuple[int, int]:
        live = np.flatnonzero(levels >= threshold)
        if live.size == 0:
            return 0, 0
        return int(live[0]), int(live[-1]) + 1

    top, bottom = inner(noise_rows)
    left, right = inner(noise_cols)
    return top, bottom, left, right


def sample_patch_positions(
    pixels: np.ndarray,
    patch: int,
    n: int,
    rng: np.random.Generator | int | None,
    *,
    skip_flat: bool = True,
    skip_saturated: bool = True,
    skip_collimated: bool = True,
    flat_ratio: float = 0.25,
    max_saturated_fraction: float = 0.01,
    max_rounds: int = 8,
) -> list[tuple[int, int]]:
    """Random distinct patch corners that avoid flat, saturated and collimated areas.

    Definitions (all relative to the image itself, so they work for any bit depth):

    * noise level of a window: mean absolute high-pass residual (Ker-Boehme 3x3 prediction
      error, normalised to white-noise std units, from :mod:`medforensics.dsp.residuals`);
      the image's reference level is the median over a non-overlapping ``patch`` grid of the
      windows whose level is > 0.
    * flat: window level < ``flat_ratio`` x reference (blank, blanked-out or heavily smoothed
      areas that carry no detector noise).
    * saturated: more than ``max_saturated_fraction`` of the window's pixels equal the image's
      minimum or maximum stored value (clipped).
    * collimated: outside the box left after removing border rows/columns whose noise level is
      below the flat threshold (uniform shutter/collimator bands). Windows must lie inside it;
      this also drops windows straddling the collimation edge.

    Candidates are drawn uniformly in rounds (at most ``max_rounds`` rounds of
    ``max(4 n, 64)``) until ``n`` valid distinct corners are found. If the image has fewer
    valid positions, fewer are returned and a warning is logged (never silently padded).

    Args:
        pixels: (H, W) real array of stored values, H, W >= ``patch``.
        patch: window side in pixels (>= 8).
        n: number of positions wanted (>= 0).
        rng: a ``numpy.random.Generator`` (or an int seed / None for a new generator).
        skip_flat: reject flat windows.
        skip_saturated: reject saturated windows.
        skip_collimated: restrict windows to the inside of uniform borders.
        flat_ratio: flat threshold relative to the reference noise level.
        max_saturated_fraction: largest tolerated fraction of clipped pixels in a window.
        max_rounds: candidate-drawing rounds before giving up.

    Returns:
        Up to ``n`` distinct ``(y, x)`` int tuples (top-left corners), in draw order.

    Raises:
        InvalidArrayError: pixels not 2-D, non-finite, or smaller than one patch.
        ConfigError: patch < 8, n < 0 or thresholds out of range.
    """
    if not isinstance(patch, (int, np.integer)) or patch < 8:
        raise ConfigError(f"patch must be an int >= 8, got {patch!r}")
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    if not 0.0 <= flat_ratio < 1.0 or not 0.0 <= max_saturated_fraction <= 1.0:
        raise ConfigError("flat_ratio must be in [0, 1) and max_saturated_fraction in [0, 1]")
    patch = int(patch)
    img = as_image(pixels, "pixels", min_size=patch)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    h, w = img.shape
    if n == 0:
        return []

    top, bottom, left, right = 0, h, 0, w
    noise_sat = None
    if skip_flat or skip_collimated:
        r = np.abs(highpass_residual(img, "kb", normalize=True)).astype(np.float64)
        noise_sat = _integral(r)
        grid = np.array(tile_positions(h, w, patch, patch))
        levels = _window_means(noise_sat, grid[:, 0], grid[:, 1], patch)
        live = levels[levels > 0]
        ref = float(np.median(live)) if live.size else 0.0
        threshold = flat_ratio * ref
        if ref == 0.0:
            log.warning("image has no noise anywhere (constant or blank); no valid patches")
            return []
        if skip_collimated:
            top, bottom, left, right = _collimation_box(r.mean(axis=1), r.mean(axis=0), threshold)
    if bottom - top < patch or right - left < patch:
        log.warning(
            "area inside the uniform border (%d x %d) is smaller than the %d patch",
            bottom - top, right - left, patch,
        )
        return []
    sat_sat = None
    if skip_saturated:
        lo, hi = img.min(), img.max()
        sat_sat = _integral(((img <= lo) | (img >= hi)).astype(np.float64)) if hi > lo else None

    found: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    n_free = (bottom - top - patch + 1) * (right - left - patch + 1)
    for _ in range(max_rounds):
        m = max(4 * n, 64)
        ys = gen.integers(top, bottom - patch + 1, size=m)
        xs = gen.integers(left, right - patch + 1, size=m)
        ok = np.ones(m, dtype=bool)
        if skip_flat and noise_sat is not None:
            ok &= _window_means(noise_sat, ys, xs, patch) >= threshold
        if skip_saturated and sat_sat is not None:
            ok &= _window_means(sat_sat, ys, xs, patch) <= max_saturated_fraction
        elif skip_saturated and sat_sat is None:
            ok[:] = False  # constant image: everything is clipped
        for y, x in zip(ys[ok].tolist(), xs[ok].tolist()):
            if (y, x) not in seen:
                seen.add((y, x))
                found.append((y, x))
                if len(found) == n:
                    return found
        if len(seen) >= n_free:
            break
    log.warning("only %d of %d requested patch positions are valid in a %dx%d image",
                len(found), n, h, w)
    return found
