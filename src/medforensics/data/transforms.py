"""Pure image transforms for the models: paper preprocessing and patch positions.

* :func:`paper_preprocess`: what Deep-RSI and DeepMammo did to every image (min-max rescale
  to 8-bit, resize to 256x256). It destroys most of the native noise fingerprint and exists
  only to reproduce the papers.
* :func:`sample_patch_positions`: random native-resolution patch corners that avoid flat
  (blank / blanked-out), saturated (clipped) and collimated-border areas, for the ``patch``
  model.
* :func:`tile_positions`: a regular grid of patch corners covering an image, for inference.
* :func:`count_informative_windows`: how much of an image carries readable detector noise
  (the evidence floor of a verdict); :func:`content_span`: whether the image is more than
  noise alone.

All positions are ``(y, x)`` integer top-left corners on the pixel grid (no sub-pixel
interpolation), so a patch is ``pixels[y:y+P, x:x+P]``.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image

from medforensics.dsp._checks import as_image
from medforensics.errors import ConfigError, InvalidArrayError

__all__ = ["Evidence", "MIN_CONTENT_SPAN", "NOISE_ALONE", "content_span",
           "count_informative_windows", "noise_alone_reason", "paper_preprocess",
           "sample_patch_positions", "tile_positions", "MIN_INFORMATIVE_PATCHES"]

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


_KB_NORM = 6.0  # the Ker-Boehme kernel is -outer(d, d) / 4 with d = [1, -2, 1]; L2 norm 6 / 4
_D2_NORM = float(np.sqrt(6.0))  # L2 norm of the [1, -2, 1] second difference
_PAD = 3  # 1 for the 3x3 residual + 2 for the 5x5 local mean


def _window_stack(img: np.ndarray, ys: np.ndarray, xs: np.ndarray, p: int) -> np.ndarray:
    """Windows of side ``p + 2*_PAD`` around corners (ys, xs): float32 (m, p+6, p+6).

    Equal to cutting them from the image padded by ``_PAD`` pixels with symmetric
    (mirror-with-edge) boundaries, without padding the whole image: interior windows are a
    strided gather, the few windows that touch the border are padded one by one.
    """
    h, w = img.shape
    side = p + 2 * _PAD
    out = np.empty((len(ys), side, side), dtype=np.float32)
    inner = (ys >= _PAD) & (xs >= _PAD) & (ys + p + _PAD <= h) & (xs + p + _PAD <= w)
    if inner.any():
        view = np.lib.stride_tricks.sliding_window_view(img, (side, side))
        out[inner] = view[ys[inner] - _PAD, xs[inner] - _PAD]
    for i in np.flatnonzero(~inner).tolist():
        y0, x0 = int(ys[i]) - _PAD, int(xs[i]) - _PAD
        crop = img[max(y0, 0):min(y0 + side, h), max(x0, 0):min(x0 + side, w)]
        out[i] = np.pad(crop, ((max(-y0, 0), max(y0 + side - h, 0)),
                               (max(-x0, 0), max(x0 + side - w, 0))), mode="symmetric")
    return out


def _abs_residual(stack: np.ndarray) -> np.ndarray:
    """|Ker-Boehme residual| in white-noise std units: (m, s, s) -> float32 (m, s-2, s-2).

    The 3x3 kernel is separable (a second difference along x, then along y), so two
    vectorised passes replace a 9-tap correlation.
    """
    a = stack[:, :, 2:] + stack[:, :, :-2]
    a -= 2.0 * stack[:, :, 1:-1]
    r = a[:, 2:] + a[:, :-2]
    r -= 2.0 * a[:, 1:-1]
    np.abs(r, out=r)
    r *= 1.0 / _KB_NORM
    return r


def _box5_sum(r: np.ndarray) -> np.ndarray:
    """Sums over 5x5 neighbourhoods, valid part only: (m, q+4, q+4) -> (m, q, q)."""
    t = r[:, :-4] + r[:, 1:-3]
    t += r[:, 2:-2]
    t += r[:, 3:-1]
    t += r[:, 4:]
    u = t[:, :, :-4] + t[:, :, 1:-3]
    u += t[:, :, 2:-2]
    u += t[:, :, 3:-1]
    u += t[:, :, 4:]
    return u


def _window_levels(stack: np.ndarray) -> np.ndarray:
    """Mean |residual| over each window's own ``p`` x ``p`` pixels: (m,) float64."""
    core = _abs_residual(stack[:, _PAD - 1:1 - _PAD, _PAD - 1:1 - _PAD])
    return core.mean(axis=(1, 2), dtype=np.float64)


def _flat_fraction(stack: np.ndarray, threshold: float) -> np.ndarray:
    """Share of each window's pixels whose 5x5 mean |residual| is below ``threshold``: (m,)."""
    local_sum = _box5_sum(_abs_residual(stack))
    return (local_sum < 25.0 * threshold).mean(axis=(1, 2))


def _line_noise(lines: np.ndarray) -> np.ndarray:
    """Mean |second difference| along each row of ``lines`` (k, n): (k,) white-noise std units."""
    if lines.shape[1] < 3:
        return np.zeros(lines.shape[0], dtype=np.float64)
    d = lines[:, :-2] + lines[:, 2:]
    d -= 2.0 * lines[:, 1:-1]
    np.abs(d, out=d)
    return d.mean(axis=1, dtype=np.float64) / _D2_NORM


def _live_range(img: np.ndarray, axis: int, threshold: float, chunk: int = 32
                ) -> tuple[int, int]:
    """First and one-past-last line whose noise level reaches ``threshold`` ((0, 0) if none).

    Lines are rows (``axis=0``: the range of rows) or columns (``axis=1``); a line's level is
    the mean |second difference| along it. Lines are examined in chunks from each end inwards
    until a live one is found, so an image without uniform borders costs two chunks per side.
    """
    n = img.shape[axis]

    def levels(a: int, b: int) -> np.ndarray:
        return _line_noise(img[a:b] if axis == 0 else img[:, a:b].T)

    first = None
    for a in range(0, n, chunk):
        live = np.flatnonzero(levels(a, min(a + chunk, n)) >= threshold)
        if live.size:
            first = a + int(live[0])
            break
    if first is None:
        return 0, 0
    for b in range(n, first, -chunk):
        a = max(b - chunk, first)
        live = np.flatnonzero(levels(a, b) >= threshold)
        if live.size:
            return first, a + int(live[-1]) + 1
    return first, first + 1


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
    max_flat_fraction: float = 0.05,
    max_saturated_fraction: float = 0.25,
    max_rounds: int = 16,
) -> list[tuple[int, int]]:
    """Random distinct patch corners that avoid flat, saturated and collimated areas.

    Definitions (all relative to the image itself, so they work for any bit depth):

    * noise level: mean absolute high-pass residual (Ker-Boehme 3x3 prediction error of
      :mod:`medforensics.dsp.residuals`, normalised to white-noise std units). The image's
      reference level is the median, over a non-overlapping ``patch`` grid (at most 64
      evenly spread tiles), of the window levels that are > 0.
    * flat pixel: its 5x5 local noise level is below ``flat_ratio`` x reference (blank,
      blanked-out, clipped or heavily smoothed areas that carry no detector noise). A window
      is flat when more than ``max_flat_fraction`` of its pixels are flat, so windows that
      straddle the edge of a blank area are rejected too, not only fully blank ones.
    * saturated: more than ``max_saturated_fraction`` of the window's pixels equal the image's
      minimum or maximum stored value (clipped).
    * collimated: outside the box left after removing border rows/columns whose noise level
      (mean absolute second difference along the line) is below the flat threshold (uniform
      shutter/collimator bands). Windows must lie inside it.

    Only candidate windows are analysed (cost ~ candidates x patch^2 plus two subsampled
    passes over the image for the border lines), so large radiographs are fast. Candidates
    are drawn uniformly in rounds (at most ``max_rounds``); each round draws ``1.25 k / a +
    8`` for k still missing and a the share of candidates accepted so far (1 at first), so
    typical images need one round of ~1.25 n windows; at most ``8 max(4 n, 64)`` candidates
    are analysed in all. If the image has fewer
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
        max_flat_fraction: largest tolerated fraction of flat pixels in a window.
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
    if not 0.0 <= flat_ratio < 1.0:
        raise ConfigError(f"flat_ratio must be in [0, 1), got {flat_ratio}")
    if not (0.0 <= max_saturated_fraction <= 1.0 and 0.0 <= max_flat_fraction <= 1.0):
        raise ConfigError("max_saturated_fraction and max_flat_fraction must be in [0, 1]")
    patch = int(patch)
    img = as_image(pixels, "pixels", min_size=patch, dtype=np.float32)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    h, w = img.shape
    if n == 0:
        return []

    top, bottom, left, right = 0, h, 0, w
    threshold = 0.0
    if skip_flat or skip_collimated:
        grid = np.array(tile_positions(h, w, patch, patch))
        if len(grid) > 64:  # an even subsample is plenty for a median
            grid = grid[np.linspace(0, len(grid) - 1, 64).round().astype(int)]
        levels = _window_levels(_window_stack(img, grid[:, 0], grid[:, 1], patch))
        live = levels[levels > 0]
        ref = float(np.median(live)) if live.size else 0.0
        if ref == 0.0:
            log.warning("image has no noise anywhere (constant or blank); no valid patches")
            return []
        threshold = flat_ratio * ref
        if skip_collimated:
            top, bottom = _live_range(img, 0, threshold)
            left, right = _live_range(img, 1, threshold)
    if bottom - top < patch or right - left < patch:
        log.warning(
            "area inside the uniform border (%d x %d) is smaller than the %d patch",
            bottom - top, right - left, patch,
        )
        return []
    lo, hi = float(img.min()), float(img.max())

    found: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    n_free = (bottom - top - patch + 1) * (right - left - patch + 1)
    tried = accepted = 0
    budget = 8 * max(4 * n, 64)  # candidates analysed at most (bounds time on hopeless images)
    for _ in range(max_rounds):
        need = n - len(found)
        rate = max(accepted / tried, 0.02) if tried else 1.0
        m = min(int(np.ceil(1.25 * need / rate)) + 8, budget - tried)
        if m <= 0:
            break
        ys = gen.integers(top, bottom - patch + 1, size=m)
        xs = gen.integers(left, right - patch + 1, size=m)
        fresh = np.zeros(m, dtype=bool)
        for i, yx in enumerate(zip(ys.tolist(), xs.tolist())):
            if yx not in seen:
                seen.add(yx)
                fresh[i] = True
        ys, xs = ys[fresh], xs[fresh]
        ok = np.ones(len(ys), dtype=bool)
        if len(ys) and (skip_flat or skip_saturated):
            stack = _window_stack(img, ys, xs, patch)
            if skip_flat:
                ok &= _flat_fraction(stack, threshold) <= max_flat_fraction
            if skip_saturated:
                core = stack[:, _PAD:-_PAD, _PAD:-_PAD]
                clipped = ((core <= lo) | (core >= hi)).mean(axis=(1, 2))
                ok &= (clipped <= max_saturated_fraction) & (hi > lo)
        tried += len(ys)
        accepted += int(ok.sum())
        for y, x in zip(ys[ok].tolist(), xs[ok].tolist()):
            found.append((y, x))
            if len(found) == n:
                return found
        if len(seen) >= n_free:
            break
    log.warning("only %d of %d requested patch positions are valid in a %dx%d image",
                len(found), n, h, w)
    return found


#: Informative area a source verdict needs, in model patches (counted in half-patch windows).
MIN_INFORMATIVE_PATCHES = 2

#: An image whose windows' means spread over less than this many noise levels is noise alone.
MIN_CONTENT_SPAN = 1.0
#: how :func:`noise_alone_reason` (and so an :class:`Evidence` reason) begins
NOISE_ALONE = "noise alone"


@dataclass(frozen=True)
class Evidence:
    """How much of an image can carry a device fingerprint (:func:`count_informative_windows`).

    Attributes:
        informative: windows that are not flat, not clipped and hold noise above the
            quantisation floor.
        windows: windows examined (a regular grid of ``window``-sided squares, at most
            ``max_windows``).
        window: window side in px.
        required: informative windows needed for a verdict (the evidence floor).
        value_step: smallest step between distinct stored values (the quantum), > 0.
        noise_level: median window noise level in ``value_step`` units (0 when none).
        content_span: how far the windows' mean values spread (10th to 90th percentile) in
            units of the median window noise level (``inf`` when no window has noise).
        reason: why windows were rejected, most common first (empty when all passed), e.g.
            ``"no noise above the quantisation floor"``.
    """

    informative: int
    windows: int
    window: int
    required: int
    value_step: float
    noise_level: float
    reason: str
    content_span: float = float("inf")

    def enough(self) -> bool:
        """Whether the evidence floor holds (at least ``required`` informative windows)."""
        return self.informative >= self.required


def _value_step(img: np.ndarray, max_samples: int = 65_536) -> float:
    """Smallest positive difference between distinct values of an even pixel subsample."""
    flat = img.ravel()
    if flat.size > max_samples:
        flat = flat[np.linspace(0, flat.size - 1, max_samples).astype(np.int64)]
    u = np.unique(flat)
    if u.size < 2:
        return 1.0
    return float(np.diff(u).min())


def count_informative_windows(
    pixels: np.ndarray,
    patch: int,
    *,
    required: int = 4,
    flat_ratio: float = 0.25,
    max_flat_fraction: float = 0.05,
    max_saturated_fraction: float = 0.25,
    min_noise_steps: float = 0.5,
    min_content_span: float = MIN_CONTENT_SPAN,
    max_windows: int = 256,
) -> Evidence:
    """Count the windows of an image that carry readable detector noise.

    A window on a regular non-overlapping grid of ``patch``-sided squares (evenly subsampled to at most
    ``max_windows``) is informative when all of these hold:

    * its noise level (mean absolute Ker-Boehme residual, white-noise std units, as in
      :func:`sample_patch_positions`) is at least ``min_noise_steps`` times the image's value
      step: quantisation alone of a smooth surface (a ramp, a gradient) stays below half a
      step, real detector noise is above;
    * it is not flat relative to the image (at most ``max_flat_fraction`` of its pixels have
      a 5x5 local level below ``flat_ratio`` x the image's median level);
    * at most ``max_saturated_fraction`` of its pixels sit at the image's minimum or maximum;
    * the image is not noise alone: the windows' mean values spread (10th to 90th
      percentile) over at least ``min_content_span`` median window noise levels. Anatomy,
      exposure, background - even a flat-field exposure's heel effect - move the window
      means by many noise levels; in an image of noise and nothing else they differ only
      by the noise averaged over a window (a tenth of its level for 32-px windows), whatever
      its level or distribution, and that noise need not be any device's. Such an image has
      no informative window (docs/openset.md has the spans measured on real and simulated
      images).

    Args:
        pixels: (H, W) real stored values.
        patch: window side in px (>= 8).
        required: informative windows needed (recorded in the result).
        flat_ratio, max_flat_fraction, max_saturated_fraction: as in
            :func:`sample_patch_positions`.
        min_noise_steps: noise floor in units of the value step.
        min_content_span: window-mean spread, in noise levels, below which the image
            counts as noise alone.
        max_windows: windows examined at most.

    Returns:
        An :class:`Evidence`; an image smaller than one window has ``windows == 0``.

    Raises:
        InvalidArrayError: pixels not 2-D or non-finite.
        ConfigError: patch < 8.
    """
    if not isinstance(patch, (int, np.integer)) or patch < 8:
        raise ConfigError(f"patch must be an int >= 8, got {patch!r}")
    img = as_image(pixels, "pixels", dtype=np.float32)
    h, w = img.shape
    if h < patch or w < patch:
        return Evidence(0, 0, int(patch), int(required), 1.0, 0.0,
                        f"image {h}x{w} is smaller than one {patch}x{patch} window")
    stack, levels, ref = _window_survey(img, int(patch), max_windows)
    step = _value_step(img)
    noisy = levels >= min_noise_steps * step
    flat = (_flat_fraction(stack, flat_ratio * ref) > max_flat_fraction if ref > 0
            else np.ones(len(levels), dtype=bool))
    lo, hi = float(img.min()), float(img.max())
    core = stack[:, _PAD:-_PAD, _PAD:-_PAD]
    clipped = (((core <= lo) | (core >= hi)).mean(axis=(1, 2)) > max_saturated_fraction
               if hi > lo else np.ones(len(levels), dtype=bool))
    ok = noisy & ~flat & ~clipped
    span = _content_span(core, ref)
    if ok.any() and span < min_content_span:
        return Evidence(0, int(len(levels)), int(patch), int(required), step,
                        ref / step if step > 0 else 0.0,
                        noise_alone_reason(span, min_content_span), span)
    reasons = {"no noise above the quantisation floor": int((~noisy).sum()),
               "flat (blank or smoothed)": int((noisy & flat).sum()),
               "clipped (saturated)": int((noisy & ~flat & clipped).sum())}
    text = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]) if v)
    return Evidence(int(ok.sum()), int(len(levels)), int(patch), int(required), step,
                    ref / step if step > 0 else 0.0, text, span)


def _window_survey(img: np.ndarray, patch: int, max_windows: int
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """Windows on a regular grid (evenly subsampled to ``max_windows``), their noise levels
    and the median level of those with noise (0 when none): ((m, p+6, p+6), (m,), float)."""
    h, w = img.shape
    grid = np.array(tile_positions(h, w, patch, patch))
    if len(grid) > max_windows:
        grid = grid[np.linspace(0, len(grid) - 1, max_windows).round().astype(int)]
    stack = _window_stack(img, grid[:, 0], grid[:, 1], patch)
    levels = _window_levels(stack)
    live = levels[levels > 0]
    return stack, levels, float(np.median(live)) if live.size else 0.0


def content_span(pixels: np.ndarray, window: int = 32, max_windows: int = 256) -> float:
    """How many noise levels an image's content spans (the "noise alone" test).

    The 10th-90th percentile spread of the means of ``window``-sided windows on a regular
    grid, divided by their median noise level (:func:`count_informative_windows`). An image
    with anything in it - anatomy, exposure, background, a flat field's heel effect - spans
    many noise levels; noise and nothing else about ``2.6 / window`` of one, whatever its
    level or distribution.

    Args:
        pixels: (H, W) real stored values, at least ``window`` px on each side.
        window: window side in px (>= 8).
        max_windows: windows examined at most.

    Returns:
        The span, >= 0; ``inf`` when no window has noise (a constant or quantised-smooth
        image: no noise to measure the content against).

    Raises:
        InvalidArrayError: pixels not 2-D, non-finite, or smaller than one window.
        ConfigError: window < 8.
    """
    if not isinstance(window, (int, np.integer)) or window < 8:
        raise ConfigError(f"window must be an int >= 8, got {window!r}")
    img = as_image(pixels, "pixels", dtype=np.float32)
    if min(img.shape) < window:
        raise InvalidArrayError(f"image {img.shape} is smaller than one {window}-px window")
    stack, _, ref = _window_survey(img, int(window), max_windows)
    return _content_span(stack[:, _PAD:-_PAD, _PAD:-_PAD], ref)


def noise_alone_reason(span: float, min_span: float = MIN_CONTENT_SPAN) -> str:
    """The words for an image of noise alone (content span ``span`` under ``min_span``),
    beginning with :data:`NOISE_ALONE`: the source verdict and the forgery verdict both say it."""
    return (f"{NOISE_ALONE}: the windows' means differ by {span:.2f} noise levels, an image "
            f"with content's by {min_span:g} or more")


def _content_span(windows: np.ndarray, level: float) -> float:
    """10th-90th percentile spread of the windows' (m, p, p) means, in units of ``level``."""
    if level <= 0:
        return float("inf")
    lo, hi = np.percentile(windows.mean(axis=(1, 2), dtype=np.float64), [10.0, 90.0])
    return float((hi - lo) / level)
