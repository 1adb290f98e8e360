"""Reference (fixed-pattern) estimation, normalised correlation and Peak-to-Correlation Energy.

Model. A detector multiplies the incident signal by a fixed per-pixel gain ``1 + K``
("PRNU" in camera forensics; the residual gain non-uniformity after flat-field correction
in radiography), so the noise residual of image ``I`` is ``W = I*K + Xi``. Given images of one
unit, the maximum-likelihood estimate (Chen-Fridrich-Goljan-Lukas 2008) is

    K = sum_i W_i * I_i / sum_i I_i^2,

computed pixel by pixel over the images that cover the pixel (``model="multiplicative"``).
Images stored after a log transform (many radiographs) turn the gain into an additive
offset; ``model="additive"`` estimates ``K = mean_i W_i`` and matching then correlates the
residual with ``K`` instead of ``I*K``.

Geometry. The pattern is tied to the detector's pixel grid. Images of different sizes are
assumed to share the grid origin at their top-left pixel unless an explicit ``origin`` is
given; :class:`PatternAccumulator` keeps per-pixel sums and counts on a canvas that grows
to the largest image, so every image contributes to the pixels it covers.

Saturation. Clipped pixels carry no pattern (their residual is ~0 whatever K is); they are
masked (:func:`saturation_mask`) and do not enter the sums.

Correlation conventions. ``crosscorr_2d(a, b)[s] = sum_x a[x] * b[x - s]`` (circular, zero
padding when shapes differ), so ``a == np.roll(b, s)`` peaks at ``s``. :func:`pce` returns
the peak's signed shift in ``(-H/2, H/2]``.

All functions are pure NumPy; arrays are (H, W).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Literal, NamedTuple, Sequence

import numpy as np
import scipy.fft
from scipy import ndimage

from medforensics.dsp._checks import as_image, same_shape
from medforensics.dsp.residuals import noise_residual, wiener_fft, zero_mean_rows_cols
from medforensics.errors import ConfigError, InvalidArrayError

PatternModel = Literal["multiplicative", "additive"]


def saturation_mask(image: np.ndarray, level: float | None = None, *,
                    low_level: float | None = None, clip_low: bool = True, min_count: int = 2,
                    dilate: int = 1) -> np.ndarray:
    """Pixels usable for pattern estimation (True) vs clipped at either end (False).

    A clipped pixel carries no fixed pattern (its residual is ~0 whatever the pattern is):
    the top end saturates (detector or output range) and, in log-domain radiographs, the
    bottom end clips too (direct exposure, collimator after MONOCHROME1 inversion).

    Args:
        image: (H, W) real array of stored values.
        level: top clipping level; pixels ``>= level`` are masked. Default: the image
            maximum, but only when at least ``min_count`` pixels reach it (a plateau at
            the top of the range is clipping, a single brightest pixel is not).
        low_level: bottom clipping level (pixels ``<= low_level`` masked); default: the
            image minimum when it forms a plateau of ``min_count`` pixels.
        clip_low: also mask the bottom end.
        min_count: plateau size that counts as clipping for the automatic levels.
        dilate: also mask this many pixels around clipped ones (their residuals are
            disturbed by the denoiser's support).

    Returns:
        bool array (H, W), True = usable.
    """
    img = as_image(image, dtype=np.float32 if np.asarray(image).dtype == np.float32
                   else np.float64)

    def plateau(sel: np.ndarray) -> np.ndarray:
        return sel if int(sel.sum()) >= min_count else np.zeros_like(sel)

    sat = (img >= float(level)) if level is not None else plateau(img >= img.max())
    if clip_low:
        sat |= (img <= float(low_level)) if low_level is not None else plateau(img <= img.min())
    if dilate > 0 and sat.any():
        sat = ndimage.binary_dilation(sat, structure=np.ones((3, 3), bool), iterations=dilate)
    return ~sat


def clip_levels(img: np.ndarray, min_count: int = 2, rows: int = 1024
                 ) -> tuple[float, float]:
    """Top and bottom clipping levels of :func:`saturation_mask`'s automatic rule.

    The image maximum (minimum) when at least ``min_count`` pixels reach it, else +inf
    (-inf): nothing clipped at that end. Counted in blocks of ``rows`` rows.
    """
    hi, lo = float(img.max()), float(img.min())
    n_hi = n_lo = 0
    for r in range(0, img.shape[0], rows):
        block = img[r:r + rows]
        n_hi += int(np.count_nonzero(block == hi))
        n_lo += int(np.count_nonzero(block == lo))
    return (hi if n_hi >= min_count else math.inf), (lo if n_lo >= min_count else -math.inf)


def window_origin(img: np.ndarray, size: tuple[int, int], common: tuple[int, int],
                  top: float, low: float, *, step: int = 4) -> tuple[int, int]:
    """Where to put the compared window: the candidate place with the fewest clipped pixels.

    Candidates are the 3 x 3 grid of the start, middle and end of the range the window can
    take inside ``common`` (the part of the image every candidate pattern covers; along a
    side where ``common`` is shorter than the window the window starts at 0). Clipped pixels
    (``>= top`` or ``<= low``, :func:`clip_levels`) carry no pattern, so the window goes
    where most pixels are usable; on a tie the middle wins, then the earlier candidate.

    Args:
        img: (H, W) image.
        size: (h, w) window size, each <= the image's.
        common: (h, w) region from the top-left pixel that every candidate pattern covers.
        top, low: clipping levels (+inf / -inf: none).
        step: clipped pixels are counted on every ``step``-th row and column (the choice
            needs the share, not the exact count).

    Returns:
        (row, column) of the window's top-left pixel.
    """
    def starts(n_common: int, n_win: int) -> list[int]:
        span = max(0, n_common - n_win)
        return sorted({span // 2, 0, span}, key=lambda v: (v != span // 2, v))

    rows, cols = starts(common[0], size[0]), starts(common[1], size[1])
    if len(rows) == 1 and len(cols) == 1:
        return rows[0], cols[0]
    if not (math.isfinite(top) or math.isfinite(low)):
        return rows[0], cols[0]
    best, best_n = (rows[0], cols[0]), -1
    for r in rows:
        for c in cols:
            win = img[r:r + size[0]:step, c:c + size[1]:step]
            n = int(np.count_nonzero((win >= top) | (win <= low)))
            if best_n < 0 or n < best_n:
                best, best_n = (r, c), n
    return best



@dataclass
class PatternAccumulator:
    """Running per-pixel sums for a reference pattern of one unit.

    Attributes:
        model: ``"multiplicative"`` (K = sum W*I / sum I^2) or ``"additive"`` (mean W).
        num: float64 (H, W) numerator sums on the canvas (grows with the largest image).
        den: float64 (H, W) denominator sums.
        count: int32 (H, W) number of images that contributed to each pixel.
        n_images: images added so far.
    """

    model: PatternModel = "multiplicative"
    num: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    den: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    count: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))
    n_images: int = 0

    def __post_init__(self) -> None:
        if self.model not in ("multiplicative", "additive"):
            raise ConfigError(f"unknown pattern model {self.model!r}")

    def _grow(self, h: int, w: int) -> None:
        H, W = max(h, self.num.shape[0]), max(w, self.num.shape[1])
        if (H, W) != self.num.shape:
            pad = ((0, H - self.num.shape[0]), (0, W - self.num.shape[1]))
            self.num = np.pad(self.num, pad)
            self.den = np.pad(self.den, pad)
            self.count = np.pad(self.count, pad)

    def add(self, image: np.ndarray, residual: np.ndarray | None = None, *,
            mask: np.ndarray | None = None, origin: tuple[int, int] = (0, 0),
            **residual_kw: object) -> None:
        """Add one image.

        Args:
            image: (H, W) stored values.
            residual: its noise residual (H, W); computed with
                :func:`~medforensics.dsp.residuals.noise_residual` (``residual_kw``, and the
                usable-pixel mask for the row/column means) if None.
            mask: (H, W) bool, True = usable; combined with :func:`saturation_mask`.
            origin: (row, col) of the image's top-left pixel on the detector grid.

        Raises:
            InvalidArrayError: bad shapes/values or negative origin.
        """
        img = as_image(image, min_size=2)
        m = saturation_mask(img)
        if mask is not None:
            mk = np.asarray(mask, dtype=bool)
            same_shape(img, mk, "image, mask")
            m &= mk
        w = as_image(noise_residual(img, mask=m, **residual_kw) if residual is None
                     else residual, "residual")
        same_shape(img, w, "image, residual")
        r0, c0 = (int(origin[0]), int(origin[1]))
        if r0 < 0 or c0 < 0:
            raise InvalidArrayError(f"origin must be non-negative, got {origin}")
        h, wd = img.shape
        self._grow(r0 + h, c0 + wd)
        sl = (slice(r0, r0 + h), slice(c0, c0 + wd))
        if self.model == "multiplicative":
            self.num[sl] += np.where(m, w * img, 0.0)
            self.den[sl] += np.where(m, img * img, 0.0)
        else:
            self.num[sl] += np.where(m, w, 0.0)
            self.den[sl] += m
        self.count[sl] += m
        self.n_images += 1

    def pattern(self) -> tuple[np.ndarray, np.ndarray]:
        """Current estimate.

        Returns:
            ``(K, count)``: K float32 (H, W) (0 where no image contributed), count int32.
        """
        k = np.divide(self.num, self.den, out=np.zeros_like(self.num), where=self.den > 0)
        return k.astype(np.float32), self.count.copy()


def postprocess_pattern(k: np.ndarray, *, zero_mean: bool = True, fft_filter: bool = True,
                        mask: np.ndarray | None = None) -> np.ndarray:
    """Clean a reference pattern: row/column zero-mean then Fourier-domain Wiener filter.

    Removes artefacts shared by many detectors (linear row/column patterns, periodic
    lines); see :mod:`medforensics.dsp.residuals` for when each step matters.

    Args:
        k: (H, W) pattern estimate.
        zero_mean: apply :func:`~medforensics.dsp.residuals.zero_mean_rows_cols`.
        fft_filter: apply :func:`~medforensics.dsp.residuals.wiener_fft`.
        mask: (H, W) bool, pixels the estimate covers (``count > 0``); the row/column
            means are taken over them and the others stay 0 before the Fourier step.

    Returns:
        float32 (H, W).
    """
    out = as_image(k, "pattern")
    if zero_mean:
        out = zero_mean_rows_cols(out, mask)
    if fft_filter:
        out = wiener_fft(out)
    return np.asarray(out, dtype=np.float32)


def estimate_reference_pattern(images: Iterable[np.ndarray], *,
                               model: PatternModel = "multiplicative",
                               masks: Sequence[np.ndarray | None] | None = None,
                               postprocess: bool = True, **residual_kw: object
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Reference pattern of one unit from several of its images (top-left anchored).

    Args:
        images: (H_i, W_i) stored-value arrays; sizes may differ.
        model: see module docstring.
        masks: optional per-image usable-pixel masks.
        postprocess: apply :func:`postprocess_pattern` to the estimate.
        **residual_kw: passed to ``noise_residual``.

    Returns:
        ``(K, count)``: float32 pattern on the union canvas and int32 per-pixel counts.

    Raises:
        InvalidArrayError: no images, or a bad image.
    """
    acc = PatternAccumulator(model=model)
    for i, img in enumerate(images):
        acc.add(img, mask=None if masks is None else masks[i], **residual_kw)
    if acc.n_images == 0:
        raise InvalidArrayError("no images given for the reference pattern")
    k, count = acc.pattern()
    return (postprocess_pattern(k, mask=count > 0) if postprocess else k), count


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation (Pearson correlation) of two same-shape arrays.

    Returns:
        float in [-1, 1]; 0.0 when either array is constant.

    Raises:
        InvalidArrayError: different shapes or non-finite values.
    """
    x = as_image(a, "a")
    y = as_image(b, "b")
    same_shape(x, y)
    x = x - x.mean()
    y = y - y.mean()
    nx, ny = float(np.sqrt((x * x).sum())), float(np.sqrt((y * y).sum()))
    if nx == 0.0 or ny == 0.0:
        return 0.0
    return float((x * y).sum() / (nx * ny))


def fast_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """Smallest (H', W') >= ``shape`` whose real FFT is fast (``scipy.fft.next_fast_len``)."""
    return (int(scipy.fft.next_fast_len(int(shape[0]), real=True)),
            int(scipy.fft.next_fast_len(int(shape[1]), real=True)))


def zero_mean_spectrum(x: np.ndarray, shape: tuple[int, int], *, workers: int = 1
                       ) -> np.ndarray:
    """Real 2-D FFT of ``x - mean(x)`` zero-padded (bottom/right) to ``shape``.

    Args:
        x: (h, w) real array with h <= shape[0], w <= shape[1]; float32 input is transformed
            in single precision.
        shape: (H, W) transform size (see :func:`fast_shape` for a fast one).
        workers: threads of ``scipy.fft``.

    Returns:
        complex array (H, W // 2 + 1), complex64 for float32 ``x`` else complex128, for
        :func:`crosscorr_from_spectra`.
    """
    a = as_image(x, "x", dtype=np.float32 if np.asarray(x).dtype == np.float32
                 else np.float64)
    mean = a.mean(dtype=np.float64)
    return scipy.fft.rfft2(a - a.dtype.type(mean), s=shape, workers=workers)


def crosscorr_from_spectra(fa: np.ndarray, fb: np.ndarray, shape: tuple[int, int], *,
                           workers: int = 1) -> np.ndarray:
    """Cross-correlation from two :func:`zero_mean_spectrum` results of the same ``shape``.

    Lets a caller transform one array once and correlate it with many others.

    Returns:
        real (H, W) array (float32 from complex64 spectra, else float64), same convention
        as :func:`crosscorr_2d`.
    """
    prod = fa * np.conj(fb)
    return scipy.fft.irfft2(prod, s=shape, workers=workers)


def tile_grid(shape: tuple[int, int], max_side: int) -> list[tuple[slice, slice]]:
    """Split an (H, W) region into near-equal tiles of at most ``max_side`` per side.

    Returns:
        the tiles' (row slice, column slice), row by row; one tile when the region fits.

    Raises:
        ConfigError: ``max_side`` < 1.
    """
    if max_side < 1:
        raise ConfigError(f"max_side must be >= 1, got {max_side}")
    cuts = []
    for n in shape:
        k = -(-int(n) // int(max_side))
        edges = [round(i * n / k) for i in range(k + 1)]
        cuts.append([slice(a, b) for a, b in zip(edges[:-1], edges[1:])])
    return [(r, c) for r in cuts[0] for c in cuts[1]]


def crosscorr_2d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Circular cross-correlation via FFT: ``cc[s] = sum_x a[x] * b[x - s]``.

    Both inputs are made zero-mean; when shapes differ both are zero-padded (bottom/right)
    to the common (max H, max W) shape, so the circular wrap equals linear correlation for
    small shifts of a crop.

    Args:
        a: (Ha, Wa) real array.
        b: (Hb, Wb) real array.

    Returns:
        float64 array (max(Ha, Hb), max(Wa, Wb)); index ``s`` (mod shape) is the shift
        of ``a`` relative to ``b``.
    """
    x = as_image(a, "a")
    y = as_image(b, "b")
    shape = (max(x.shape[0], y.shape[0]), max(x.shape[1], y.shape[1]))
    return crosscorr_from_spectra(zero_mean_spectrum(x, shape), zero_mean_spectrum(y, shape),
                                  shape)


class PCEResult(NamedTuple):
    """Peak-to-Correlation Energy of a cross-correlation surface.

    Attributes:
        pce: ``sign(peak) * peak^2 / mean(cc^2 outside the peak neighbourhood)``.
        shift: signed (dy, dx) of the peak, each in (-H/2, H/2] resp. (-W/2, W/2].
        peak: the correlation value at the peak.
    """

    pce: float
    shift: tuple[int, int]
    peak: float


def pce(cc: np.ndarray, neighborhood: int = 11, *, max_shift: int | None = None) -> PCEResult:
    """Peak-to-Correlation Energy and peak location.

    Args:
        cc: (H, W) cross-correlation from :func:`crosscorr_2d` (index = circular shift).
        neighborhood: side of the square around the peak excluded from the energy
            estimate (odd, >= 1, smaller than the surface).
        max_shift: search the peak only among shifts with ``|dy|, |dx| <= max_shift``
            (0 = the zero shift only, for images known to be aligned on the detector grid;
            None = the whole surface). Restricting the search lowers false alarms.

    Returns:
        :class:`PCEResult`. Under "no common pattern" the zero-shift PCE is roughly
        chi-square with 1 degree of freedom (mean 1); a full search takes the maximum over
        H*W such values (~2 ln(H*W), about 20-25 for 256-512 px images).

    Raises:
        InvalidArrayError: bad surface or neighbourhood too large.
    """
    c = as_image(cc, "cc", dtype=np.float32 if np.asarray(cc).dtype == np.float32
                 else np.float64)
    H, W = c.shape
    if neighborhood < 1 or neighborhood >= min(H, W):
        raise InvalidArrayError(f"neighborhood {neighborhood} must be in [1, {min(H, W)})")
    if max_shift is None:
        idx = int(np.argmax(c))
        py, px = divmod(idx, W)
    else:
        ms = int(max_shift)
        ys = np.arange(-min(ms, (H - 1) // 2), min(ms, H // 2) + 1) % H
        xs = np.arange(-min(ms, (W - 1) // 2), min(ms, W // 2) + 1) % W
        sub = c[np.ix_(ys, xs)]
        iy, ix = divmod(int(np.argmax(sub)), sub.shape[1])
        py, px = int(ys[iy]), int(xs[ix])
    peak = float(c[py, px])
    half = neighborhood // 2
    rows = np.arange(py - half, py + half + 1) % H
    cols = np.arange(px - half, px + half + 1) % W
    near = c[np.ix_(rows, cols)]
    total = float(np.square(c).sum(dtype=np.float64))
    excl = float(np.square(near).sum(dtype=np.float64))
    n_out = H * W - near.size
    energy = max(total - excl, 0.0) / n_out if n_out > 0 else 0.0
    value = np.sign(peak) * peak * peak / energy if energy > 0 else 0.0
    dy = py - H if py > H // 2 else py
    dx = px - W if px > W // 2 else px
    return PCEResult(float(value), (int(dy), int(dx)), peak)
