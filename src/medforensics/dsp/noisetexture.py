"""Noise *texture* (shape of the noise, not its level): level-invariant block features.

Device processing chains differ in how their noise is spatially shaped: detector / phosphor
blur, CR laser-scan direction (anisotropic blur), sharpening kernels, and quantisation after
rescaling (a region whose values were multiplied by a gain > 1 and rounded sits on a coarse
lattice of stored values). A region pasted in from another chain keeps its own noise shape,
whatever its noise level was matched to. This module measures that shape per block; the
forgery cue built on it is :mod:`medforensics.forgery.cues.texture`.

Features of a block (:data:`FEATURE_NAMES`):

* ``rho_<lag>``: the normalised autocorrelation of the high-pass residual at a lag
  (:data:`TEXTURE_LAGS`: horizontal / vertical at 1 and 2 px, both diagonals at 1 px), *minus*
  the value white noise gives through the same kernel (:func:`white_lag_correlation`). It is
  estimated from signs: ``tau = mean(sign r_p * sign r_{p+lag})`` over pairs with both
  residuals non-zero, ``rho = sin(pi / 2 * tau)`` (Gaussian relation between sign and Pearson
  correlation). Signs make it exactly invariant to the noise amplitude and robust to outliers
  (an edge pixel counts once, whatever its size). White noise gives ~0 at every lag, blur
  gives positive offsets, sharpening negative ones; ``rho_h1 - rho_v1`` (:func:`anisotropy`)
  is the horizontal / vertical asymmetry (CR scan direction).
* ``lattice``: among horizontally / vertically adjacent pixel pairs whose stored values differ
  by at most 2, the share that differ by exactly 1 (shrunk towards its dense-noise value 0.4 by
  a prior of :data:`LATTICE_PRIOR` pairs). Integer data with noise spread over several stored
  values gives ~0.4; values on a lattice of step >= 2 (gain-stepped after a rescale) give ~0.
  It needs integer-valued stored values (every DICOM image) and a noise that spreads over a
  few values (it drifts down where the noise std is below ~1 stored value); non-integer images
  give NaN.

* *coarse lattice* (:func:`coarse_lattice_blocks`, not a channel of the feature vector): the
  adjacent-pair lattice share above has few pairs when the noise spans tens of stored values
  (MR, 16-bit data). Within each cell every pair of pixels is counted instead, from the cell's
  sorted values: pairs whose values differ by 1 or 2 against those the image's own histogram
  predicts at those values. A region whose values were scaled up by a gain of about 3 or more
  and rounded (content of fewer grey levels pasted into a wider range: an 8-bit picture into a
  12-bit image, a low-range scanner's region matched to a high-range one) has next to none.

Everything is computed on 16-px cells (pair counts summed per cell, strip by strip, so a
4000 x 5000 image needs the float32 residual plus a few int8 / int32 arrays) and blocks are
2 x 2 cells: 32-px blocks on a 16-px grid (:func:`block_texture_features`).

Images are real arrays of shape (H, W) in stored-value units; pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medforensics.dsp._checks import as_image
from medforensics.dsp.noise import STRIP_ROWS, residual_strips
from medforensics.dsp.residuals import HIGHPASS_KERNELS
from medforensics.errors import ConfigError, InvalidArrayError

__all__ = [
    "TEXTURE_LAGS",
    "FEATURE_NAMES",
    "LATTICE_PRIOR",
    "TextureCells",
    "white_lag_correlation",
    "sign_to_pearson",
    "texture_cell_sums",
    "window_sum",
    "block_texture_features",
    "coarse_lattice_blocks",
    "noise_texture_features",
    "image_noise_shape",
    "NOISE_SHAPE_MIN_SIDE",
    "anisotropy",
]

#: residual lags (dy, dx) whose correlation is measured
TEXTURE_LAGS: tuple[tuple[int, int], ...] = ((0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 0))
#: feature channels of :func:`block_texture_features`, in order
FEATURE_NAMES: tuple[str, ...] = ("rho_h1", "rho_v1", "rho_d1", "rho_a1", "rho_h2", "rho_v2",
                                  "lattice")
#: smallest window side :func:`image_noise_shape` measures (two 32-px blocks of 16-px cells)
NOISE_SHAPE_MIN_SIDE = 64
#: pairs of prior weight pulling the lattice share towards its dense-noise value
LATTICE_PRIOR = 8.0
#: lattice share of integer data whose noise spreads over many stored values (2 of 5 values)
LATTICE_DENSE = 0.4
_MAX_LAG = 2
#: integer images with a wider value range get no lattice feature (histogram size)
_MAX_LATTICE_RANGE = 1 << 24


def white_lag_correlation(kind: str = "kb",
                          lags: tuple[tuple[int, int], ...] = TEXTURE_LAGS) -> np.ndarray:
    """Correlation of the residual of white noise through a high-pass kernel, at each lag.

    ``rho(l) = sum_k h(k) h(k + l) / sum_k h(k)^2`` (the kernel's normalised autocorrelation).

    Args:
        kind: kernel name (``residuals.HIGHPASS_KERNELS``).
        lags: (dy, dx) lags.

    Returns:
        float64 (len(lags),) in [-1, 1]; for ``"kb"``: -2/3 at 1 px horizontally or vertically,
        4/9 diagonally, 1/6 at 2 px.

    Raises:
        ConfigError: unknown kernel.
    """
    if kind not in HIGHPASS_KERNELS:
        raise ConfigError(f"unknown high-pass kernel {kind!r}; one of {sorted(HIGHPASS_KERNELS)}")
    h = HIGHPASS_KERNELS[kind].astype(np.float64)
    kh, kw = h.shape
    pad = np.zeros((kh + 2 * _MAX_LAG * 2, kw + 2 * _MAX_LAG * 2))
    o = 2 * _MAX_LAG
    pad[o : o + kh, o : o + kw] = h
    e = float((h * h).sum())
    out = []
    for dy, dx in lags:
        if abs(dy) > 2 * _MAX_LAG or abs(dx) > 2 * _MAX_LAG:
            raise ConfigError(f"lag {(dy, dx)} too large")
        sh = np.roll(np.roll(pad, -dy, axis=0), -dx, axis=1)
        out.append(float((pad * sh).sum()) / e)
    return np.array(out)


def sign_to_pearson(tau: np.ndarray) -> np.ndarray:
    """Pearson correlation from the mean sign product of a bivariate Gaussian.

    For zero-mean jointly Gaussian ``(a, b)`` with correlation ``rho``,
    ``E[sign a * sign b] = (2 / pi) * arcsin(rho)``; this inverts it.

    Args:
        tau: mean sign products, any shape, values in [-1, 1].

    Returns:
        float64 array of the same shape, ``sin(pi / 2 * tau)`` in [-1, 1].
    """
    return np.sin(0.5 * np.pi * np.clip(np.asarray(tau, dtype=np.float64), -1.0, 1.0))


@dataclass
class TextureCells:
    """Per-cell pair counts of :func:`texture_cell_sums` (cells of ``cell`` x ``cell`` px).

    Attributes:
        cell: cell side in pixels.
        kind: high-pass kernel of the residual.
        lags: the (dy, dx) lags of ``prod`` / ``pairs``.
        prod: int32 (ncy, ncx, L): sum of ``sign r_p * sign r_{p+lag}`` over the pairs whose
            first pixel lies in the cell (both residuals non-zero, neither pixel ignored, the
            second pixel inside the image).
        pairs: int32 (ncy, ncx, L): number of such pairs.
        lat1: int32 (ncy, ncx) adjacent (right / below) pairs of stored values differing by
            exactly 1; None for non-integer images.
        lat012: int32 (ncy, ncx) such pairs differing by at most 2; None likewise.
        lat_expected: float64 (ncy, ncx): the number of ``lat1`` pairs expected from the
            image's own histogram (per counted pair starting at value v, the share of the
            image's pixels at v +- 1 among those at v-2..v+2); None likewise.
        near12: float64 (ncy, ncx): ordered pairs of (not ignored) pixels *anywhere in the
            cell* whose stored values differ by 1 or 2; None for non-integer images.
        near_all: float64 (ncy, ncx): such pairs differing by 0, 1 or 2; None likewise.
        near12_expected: float64 (ncy, ncx): the ``near12`` pairs expected from the image's
            histogram (per pair from value v, the share of the image's pixels at v +- 1, 2
            among those at v-2..v+2); None likewise.
        near_pixels: float64 (ncy, ncx): pixels with at least one partner within +-2 in the
            cell; None likewise.
        distinct: float64 (ncy, ncx): distinct stored values of the cell's pixels; None
            likewise.
    """

    cell: int
    kind: str
    lags: tuple[tuple[int, int], ...]
    prod: np.ndarray
    pairs: np.ndarray
    lat1: np.ndarray | None
    lat012: np.ndarray | None
    lat_expected: np.ndarray | None = None
    near12: np.ndarray | None = None
    near_all: np.ndarray | None = None
    near12_expected: np.ndarray | None = None
    near_pixels: np.ndarray | None = None
    distinct: np.ndarray | None = None


def _cell_sum(a: np.ndarray, cell: int, ncx: int) -> np.ndarray:
    """Sum of a (rows, ncx * cell) int array over every ``cell``-px column group and all rows
    (rows = one cell row), as int32 (ncx,)."""
    return a[:, : ncx * cell].reshape(a.shape[0], ncx, cell).sum(axis=(0, 2), dtype=np.int64
                                                                  ).astype(np.int32)


def _strip_sign_pairs(sgn: np.ndarray, n: int, lags: tuple[tuple[int, int], ...], cell: int,
                      ncx: int) -> tuple[np.ndarray, np.ndarray]:
    """Sign-product sums and pair counts per cell and lag for one strip of cell rows.

    Args:
        sgn: int8 (n + up to 2, W) residual signs of the strip's rows and of the rows below it
            that lagged partners may fall on (0 = zero residual or ignored pixel).
        n: rows of the strip (a whole number of cells).
        lags: (dy, dx) lags.
        cell: cell side in pixels.
        ncx: cells per row.

    Returns:
        ``(prod, pairs)``: int32 (n // cell, ncx, L) sums of ``sign r_p * sign r_{p+lag}``
        over the pairs whose first pixel lies in the cell, and the number of such pairs with
        both signs non-zero (a partner beyond the image counts as none).
    """
    W = sgn.shape[1]
    s = sgn.astype(np.int16)
    prod = np.zeros((n // cell, ncx, len(lags)), np.int32)
    pairs = np.zeros_like(prod)
    for li, (dy, dx) in enumerate(lags):
        # pairs (p, p + lag) with p in the strip's rows; beyond the image: no partner
        a = np.zeros((n, W), np.int16)
        ny = min(n, s.shape[0] - dy)
        if dx >= 0:
            a[:ny, : W - dx] = s[:ny, : W - dx] * s[dy : dy + ny, dx:]
        else:
            a[:ny, -dx:] = s[:ny, -dx:] * s[dy : dy + ny, : W + dx]
        for j in range(n // cell):
            blk = a[j * cell : (j + 1) * cell]
            prod[j, :, li] = _cell_sum(blk, cell, ncx)
            pairs[j, :, li] = _cell_sum((blk != 0).astype(np.int16), cell, ncx)
    return prod, pairs


def _strip_lattice_pairs(v: np.ndarray, ok: np.ndarray | None, n: int, cell: int, ncx: int,
                         table: np.ndarray, vmin: float
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adjacent-pair lattice counts per cell for one strip of cell rows.

    Args:
        v: float64 (n + up to 2, W) stored values of the strip and the rows below it.
        ok: bool like ``v``, False = ignored pixel; None = every pixel counts.
        n: rows of the strip (a whole number of cells).
        cell: cell side in pixels.
        ncx: cells per row.
        table: float64 lookup from ``value - vmin`` to the share of the image's pixels at
            ``value +- 1`` among those within ``+- 2`` (:func:`_lattice_table`).
        vmin: the image's minimum stored value.

    Returns:
        ``(lat1, lat012, expected)``: int32 (n // cell, ncx) right / below pairs differing by
        exactly 1 and by at most 2, and float64 (n // cell, ncx) the ``lat1`` count expected
        from the image's histogram.
    """
    W = v.shape[1]
    c1 = np.zeros((n, W), np.int16)
    c2 = np.zeros((n, W), np.int16)
    ce = np.zeros((n, W), np.float64)
    tv = table[(v[:n] - vmin).astype(np.int64)]
    for dy, dx in ((0, 1), (1, 0)):
        ny = min(n, v.shape[0] - dy)
        d = np.abs(v[:ny, : W - dx] - v[dy : dy + ny, dx:])
        good = np.ones(d.shape, bool) if ok is None else (ok[:ny, : W - dx]
                                                          & ok[dy : dy + ny, dx:])
        near = good & (d <= 2)
        c1[:ny, : W - dx] += (good & (d == 1)).astype(np.int16)
        c2[:ny, : W - dx] += near.astype(np.int16)
        ce[:ny, : W - dx] += np.where(near, tv[:ny, : W - dx], 0.0)
    ncy = n // cell
    lat1 = np.zeros((ncy, ncx), np.int32)
    lat012 = np.zeros((ncy, ncx), np.int32)
    expected = np.zeros((ncy, ncx), np.float64)
    for j in range(ncy):
        lat1[j] = _cell_sum(c1[j * cell : (j + 1) * cell], cell, ncx)
        lat012[j] = _cell_sum(c2[j * cell : (j + 1) * cell], cell, ncx)
        expected[j] = ce[j * cell : (j + 1) * cell, : ncx * cell].reshape(
            cell, ncx, cell).sum(axis=(0, 2))
    return lat1, lat012, expected


def texture_cell_sums(image: np.ndarray, *, cell: int = 16, kind: str = "kb",
                      ignore: np.ndarray | None = None,
                      lags: tuple[tuple[int, int], ...] = TEXTURE_LAGS,
                      rows: int = STRIP_ROWS, value_pairs: bool = True,
                      lattice: bool = True) -> TextureCells:
    """Per-cell counts from which block texture features are formed (see module docs).

    Only whole cells are counted (trailing rows / columns that do not fill a cell are ignored);
    a pair whose second pixel is beyond the image is not counted.

    Args:
        image: (H, W) real array of stored values, H, W >= 2 * ``cell``.
        cell: cell side in pixels (>= 4).
        kind: high-pass kernel of the residual (``residuals.HIGHPASS_KERNELS``).
        ignore: optional bool (H, W), True = leave the pixel out of every pair (clipped pixels
            and their neighbours, ...).
        lags: (dy, dx) lags with 0 <= dy <= 2, |dx| <= 2.
        rows: strip height (rows, rounded down to whole cells, at least one cell) of the
            working arrays.
        value_pairs: also count the within-cell value pairs of the coarse lattice
            (``near12`` ... ``distinct``; one sort per cell); False leaves them None.
        lattice: count the lattice pairs at all (False: only the residual sign pairs, as
            for a non-integer image; faster).

    Returns:
        :class:`TextureCells` with ``ncy = H // cell``, ``ncx = W // cell``.

    Raises:
        InvalidArrayError: image not 2-D, non-finite, smaller than two cells, or ``ignore`` of
            another shape.
        ConfigError: bad cell, kernel or lag.
    """
    arr = np.asarray(image)
    img = as_image(arr, dtype=np.float32 if arr.dtype == np.float32 else np.float64)
    if cell < 4:
        raise ConfigError(f"cell must be >= 4, got {cell}")
    for dy, dx in lags:
        if not (0 <= dy <= _MAX_LAG and abs(dx) <= _MAX_LAG) or (dy == 0 and dx <= 0):
            raise ConfigError(f"lag {(dy, dx)} not supported (0 <= dy <= 2, |dx| <= 2, "
                              "forward)")
    H, W = img.shape
    if H < 2 * cell or W < 2 * cell:
        raise InvalidArrayError(f"image {H}x{W} is smaller than two {cell}-px cells")
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != img.shape:
            raise InvalidArrayError(f"ignore shape {ignore.shape} differs from image "
                                    f"{img.shape}")
    sgn = np.sign(residual_strips(img, kind)).astype(np.int8)
    if ignore is not None:
        sgn[ignore] = 0
    ncy, ncx = H // cell, W // cell
    L = len(lags)
    prod = np.zeros((ncy, ncx, L), np.int32)
    pairs = np.zeros((ncy, ncx, L), np.int32)
    integer = lattice and bool(all(np.array_equal(img[a : a + rows], np.round(img[a : a + rows]))
                                   for a in range(0, H, rows)))
    vmin = float(img.min())
    if integer and float(img.max()) - vmin > _MAX_LATTICE_RANGE:
        integer = False
    lat1 = np.zeros((ncy, ncx), np.int32) if integer else None
    lat012 = np.zeros((ncy, ncx), np.int32) if integer else None
    latexp = np.zeros((ncy, ncx), np.float64) if integer else None
    table = _lattice_table(img, vmin, rows) if integer else None
    table12 = _lattice_table(img, vmin, rows, near=(1, 2)) if integer and value_pairs else None
    pair_counts = ([np.zeros((ncy, ncx), np.float64) for _ in range(5)]
                   if integer and value_pairs else None)
    per = max(1, rows // cell)
    for cy0 in range(0, ncy, per):
        cy1 = min(cy0 + per, ncy)
        y0, y1 = cy0 * cell, cy1 * cell
        ext = min(y1 + _MAX_LAG, H)
        prod[cy0:cy1], pairs[cy0:cy1] = _strip_sign_pairs(sgn[y0:ext], y1 - y0, lags, cell,
                                                          ncx)
        if integer:
            assert lat1 is not None and lat012 is not None
            assert latexp is not None and table is not None
            v = img[y0:ext].astype(np.float64)
            ok = None if ignore is None else ~ignore[y0:ext]
            lat1[cy0:cy1], lat012[cy0:cy1], latexp[cy0:cy1] = _strip_lattice_pairs(
                v, ok, y1 - y0, cell, ncx, table, vmin)
            if pair_counts is not None and table12 is not None:
                n = y1 - y0
                counts = _cell_value_pairs((v[:n] - vmin).astype(np.int64), None if ok is None
                                           else ~ok[:n], cell, ncx, table12)
                for acc, c in zip(pair_counts, counts):
                    acc[cy0:cy1] = c
    return TextureCells(cell=cell, kind=kind, lags=tuple(lags), prod=prod, pairs=pairs,
                        lat1=lat1, lat012=lat012, lat_expected=latexp,
                        **(dict(zip(("near12", "near_all", "near12_expected", "near_pixels",
                                     "distinct"), pair_counts)) if pair_counts else {}))


def _lattice_table(img: np.ndarray, vmin: float, rows: int,
                   near: tuple[int, ...] = (1,)) -> np.ndarray:
    """Per stored value v (offset by ``vmin``): the share of the image's pixels at
    ``v +- d`` for d in ``near`` among those at ``v-2 .. v+2`` (global histogram): the share a
    pair starting at ``v`` would have if its partner were drawn from the image's own values
    near v (``near=(1,)``: the lattice share; ``(1, 2)``: the coarse-lattice share)."""
    n = int(float(img.max()) - vmin) + 1
    h = np.zeros(n + 4, np.float64)
    for a in range(0, img.shape[0], rows):
        h[2 : n + 2] += np.bincount((img[a : a + rows] - vmin).astype(np.int64).ravel(),
                                    minlength=n)
    at = {d: h[2 - d : len(h) - 2 - d] + h[2 + d : len(h) - 2 + d] for d in (1, 2)}
    sel = sum(at[d] for d in near)
    allv = h[2:-2] + at[1] + at[2]
    dense = LATTICE_DENSE if near == (1,) else 0.8
    return np.where(allv > 0, sel / np.maximum(allv, 1.0), dense)


def _cell_value_pairs(values: np.ndarray, ignore: np.ndarray | None, cell: int, ncx: int,
                      table12: np.ndarray) -> list[np.ndarray]:
    """Within-cell pair counts of one strip of cell rows (see :class:`TextureCells`).

    Args:
        values: int64 (rows, W) stored values minus the image minimum, rows a multiple of
            ``cell``.
        ignore: bool (rows, W) pixels left out, or None.
        cell: cell side.
        ncx: cells per row.
        table12: the image's coarse-lattice table (``_lattice_table(near=(1, 2))``).

    Returns:
        ``[near12, near_all, near12_expected, near_pixels, distinct]``, float64
        (rows // cell, ncx) each.
    """
    ncy = values.shape[0] // cell
    v = values[: ncy * cell, : ncx * cell].reshape(ncy, cell, ncx, cell).transpose(
        0, 2, 1, 3).reshape(ncy * ncx, cell * cell)
    top = int(v.max()) + 1 if v.size else 1
    sentinel, stride = top + 4, top + 8  # ignored pixels: one value no real value is near
    if ignore is not None:
        ig = ignore[: ncy * cell, : ncx * cell].reshape(ncy, cell, ncx, cell).transpose(
            0, 2, 1, 3).reshape(ncy * ncx, cell * cell)
        v = np.where(ig, sentinel, v)
    v = np.sort(v, axis=1) + (np.arange(v.shape[0], dtype=np.int64) * stride)[:, None]
    flat = v.ravel()
    starts = np.concatenate(([0], np.flatnonzero(np.diff(flat)) + 1))
    run = np.diff(np.concatenate((starts, [flat.size]))).astype(np.float64)
    u = flat[starts]
    cell_id, val = u // stride, u % stride
    keep = val != sentinel
    u, run, cell_id, val = u[keep], run[keep], cell_id[keep], val[keep]
    partners = np.zeros_like(run)  # pixels of the same cell at +-1 or +-2 from each run's value
    for k in (1, 2):  # runs are distinct sorted values: a partner within 2 is 1 or 2 runs away
        if u.size > k:
            d = u[k:] - u[:-k]
            m = (d >= 1) & (d <= 2)
            partners[:-k] += np.where(m, run[k:], 0.0)
            partners[k:] += np.where(m, run[:-k], 0.0)
    near = run - 1.0 + partners
    size = ncy * ncx
    out = [np.bincount(cell_id, run * partners, minlength=size),
           np.bincount(cell_id, run * near, minlength=size),
           np.bincount(cell_id, run * near * table12[val], minlength=size),
           np.bincount(cell_id, np.where(near > 0, run, 0.0), minlength=size),
           np.bincount(cell_id, minlength=size).astype(np.float64)]
    return [o.reshape(ncy, ncx) for o in out]


def window_sum(a: np.ndarray, k: int) -> np.ndarray:
    """Sum over every k x k window of cells (valid positions), along the first two axes
    (int64 for integer counts, float64 for real-valued ones)."""
    c = np.cumsum(np.cumsum(a.astype(np.float64 if a.dtype.kind == "f" else np.int64), axis=0),
                  axis=1)
    c = np.pad(c, [(1, 0), (1, 0)] + [(0, 0)] * (a.ndim - 2))
    return c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]


def block_texture_features(cells: TextureCells, *, cells_per_block: int = 2,
                           min_pairs: int = 64, relative_lattice: bool = False
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Texture features of every block of ``cells_per_block`` x ``cells_per_block`` cells.

    Blocks step by one cell: with 16-px cells, 32-px blocks on a 16-px grid; block ``(i, j)``
    covers pixels ``[i * cell, (i + k) * cell) x [j * cell, (j + k) * cell)``.

    Args:
        cells: output of :func:`texture_cell_sums`.
        cells_per_block: block side in cells (>= 1).
        min_pairs: a block needs at least this many counted pairs at every lag, else all its
            features are NaN.
        relative_lattice: the lattice channel is the observed minus the histogram-expected
            share, ``(lat1 - lat_expected) / (lat012 + LATTICE_PRIOR)`` (in about [-1, 1], ~0
            where the block's values are as dense as the image's own histogram there, < 0 where
            they sit on a coarser lattice) instead of the absolute share.

    Returns:
        ``(features, pairs)``: features float64 (nby, nbx, F) with F = len(lags) + 1 and
        channels in the order of :data:`FEATURE_NAMES` for the default lags (correlation offsets
        from white noise in about [-1.7, 1.7], NaN where a block has no pair; then the lattice
        share in [0, 1], NaN for non-integer images); pairs int64 (nby, nbx): the smallest
        pair count over the lags (validity: ``pairs >= min_pairs``). ``nby = ncy - k + 1``.

    Raises:
        ConfigError: ``cells_per_block < 1`` or more than the cell grid.
    """
    k = int(cells_per_block)
    ncy, ncx = cells.prod.shape[:2]
    if k < 1 or k > min(ncy, ncx):
        raise ConfigError(f"cells_per_block must be in 1..{min(ncy, ncx)}, got {k}")
    prod = window_sum(cells.prod, k).astype(np.float64)
    pairs = window_sum(cells.pairs, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = prod / pairs
    base = white_lag_correlation(cells.kind, cells.lags)
    rho = sign_to_pearson(np.nan_to_num(tau)) - base
    rho[pairs == 0] = np.nan
    if cells.lat1 is not None and cells.lat012 is not None:
        l1 = window_sum(cells.lat1, k).astype(np.float64)
        l2 = window_sum(cells.lat012, k).astype(np.float64)
        if relative_lattice and cells.lat_expected is not None:
            lat = (l1 - window_sum(cells.lat_expected, k)) / (l2 + LATTICE_PRIOR)
        else:
            lat = (l1 + LATTICE_PRIOR * LATTICE_DENSE) / (l2 + LATTICE_PRIOR)
    else:
        lat = np.full(rho.shape[:2], np.nan)
    feats = np.concatenate([rho, lat[..., None]], axis=2)
    npairs = pairs.min(axis=2)
    feats[npairs < min_pairs] = np.nan
    return feats, npairs


def coarse_lattice_blocks(cells: TextureCells, *, cells_per_block: int = 2
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Coarse-lattice evidence of every block of ``cells_per_block`` x ``cells_per_block``
    cells (block grid as in :func:`block_texture_features`).

    With ``C`` the block's within-cell pairs at +-1..2, ``E`` their number expected from the
    image's histogram, ``A`` all pairs within +-2 and ``N`` the pixels that have such a
    partner: ``ratio = C / E`` (~1 where the block's values are as dense as the image's own
    there, ~0 on a lattice of step >= 3) and ``z = (E - C) / A * sqrt(N) / sqrt(p (1 - p))``
    with ``p = E / A`` (floored at 0.05): a one-sided normal-like score counting the ``N``
    pixels as the independent observations (the pairs themselves are not independent).

    Args:
        cells: output of :func:`texture_cell_sums` of an integer image.
        cells_per_block: block side in cells.

    Returns:
        ``(z, ratio, n_pixels, distinct)``, float64 (nby, nbx) each (``distinct`` summed over
        the block's cells).

    Raises:
        ConfigError: non-integer image (no counts) or bad ``cells_per_block``.
    """
    if cells.near12 is None or cells.near_all is None or cells.near12_expected is None \
            or cells.near_pixels is None or cells.distinct is None:
        raise ConfigError("coarse lattice needs integer-valued stored values")
    k = int(cells_per_block)
    ncy, ncx = cells.near12.shape
    if k < 1 or k > min(ncy, ncx):
        raise ConfigError(f"cells_per_block must be in 1..{min(ncy, ncx)}, got {k}")
    c12, call, e12, npix, distinct = (
        window_sum(a, k) for a in (cells.near12, cells.near_all, cells.near12_expected,
                                    cells.near_pixels, cells.distinct))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(call > 0, e12 / np.maximum(call, 1.0), 0.8)
        z = np.where(call > 0, (e12 - c12) / np.maximum(call, 1.0), 0.0) * np.sqrt(npix) \
            / np.sqrt(np.clip(p * (1.0 - p), 0.05, None))
        ratio = np.where(e12 > 0, c12 / np.maximum(e12, 1e-12), 1.0)
    return z, ratio, npix, distinct


def noise_texture_features(image: np.ndarray, *, block: int = 32, step: int = 16,
                           kind: str = "kb", ignore: np.ndarray | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Texture features of ``block``-px blocks on a ``step``-px grid (convenience wrapper).

    Args:
        image: (H, W) real array of stored values.
        block: block side in pixels (a multiple of ``step``).
        step: grid step = cell side in pixels (>= 4).
        kind: high-pass kernel.
        ignore: optional bool (H, W) of pixels left out.

    Returns:
        ``(features, pairs)`` of :func:`block_texture_features`; block ``(i, j)`` has its
        top-left corner at ``(i * step, j * step)``.

    Raises:
        ConfigError: ``block`` not a multiple of ``step``.
    """
    if step < 4 or block % step:
        raise ConfigError(f"block ({block}) must be a multiple of step ({step} >= 4)")
    cells = texture_cell_sums(image, cell=step, kind=kind, ignore=ignore)
    return block_texture_features(cells, cells_per_block=block // step)


def image_noise_shape(image: np.ndarray, *, clip_values: tuple[float, float] | None = None,
                      cell: int = 16, min_blocks: int = 16, min_pairs: int = 256) -> np.ndarray:
    """The image's noise shape: median over its 32-px blocks of the residual lag correlations.

    One vector per image for telling devices apart by how their chain shapes the noise
    (detector blur, CR scan direction, sharpening), whatever the noise level and the anatomy:
    per-block offsets from white noise (the ``rho_*`` channels of
    :func:`block_texture_features`) are noisy, their median over many blocks is not. Clipped
    pixels (background, collimation, saturation) and their 3 x 3 neighbours are left out, as
    are blocks with fewer than ``min_pairs`` residual pairs at some lag (flat areas have none).

    A stack of windows of one image (e.g. a model's input patches) gives the median over all
    their blocks: as informative as the whole image at a fraction of its cost.

    Args:
        image: (H, W) real array of stored values, or (n, H, W) windows of one image.
        clip_values: ``(low, high)`` values counted as clipped; default the array's minimum
            and maximum (pass the whole image's for windows).
        cell: cell side in pixels; blocks are 2 x 2 cells.
        min_blocks: fewest usable blocks for a measurement.
        min_pairs: fewest residual pairs per lag for a block to count.

    Returns:
        float64 (len(TEXTURE_LAGS),) correlation offsets in about [-1.7, 1.7], in the order of
        :data:`TEXTURE_LAGS`; all NaN when the windows are smaller than two blocks or have
        fewer than ``min_blocks`` usable blocks (nothing to measure).

    Raises:
        InvalidArrayError: not 2-D or 3-D, or non-finite values.
    """
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise InvalidArrayError(f"expected (H, W) or (n, H, W), got shape {arr.shape}")
    stack = arr[None] if arr.ndim == 2 else arr
    none = np.full(len(TEXTURE_LAGS), np.nan)
    if stack.shape[0] == 0 or min(stack.shape[1:]) < 4 * cell:
        return none
    if clip_values is None:
        clip_values = (float(stack.min()), float(stack.max()))
    lo, hi = clip_values
    img, ignore = _window_mosaic(stack, cell)
    ignore |= ndimage.binary_dilation((img <= lo) | (img >= hi), structure=np.ones((3, 3), bool))
    cells = texture_cell_sums(img, cell=cell, ignore=ignore, value_pairs=False, lattice=False)
    feats, pairs = block_texture_features(cells, cells_per_block=2, min_pairs=min_pairs)
    rho = feats[..., : len(TEXTURE_LAGS)][pairs >= min_pairs]
    rho = rho[np.all(np.isfinite(rho), axis=1)]
    if len(rho) < min_blocks:
        return none
    return np.median(rho, axis=0)


def _window_mosaic(stack: np.ndarray, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows (n, H, W) laid out on a near-square grid in one image, one cell of ignored
    pixels between neighbours (H, W rounded down to whole cells), and the bool mask of
    ignored pixels: the separators and the 1-px rim of each window, whose high-pass residual
    reaches across. No residual pair links two windows (lags are at most 2 px)."""
    n, h, w = stack.shape
    h, w = h - h % cell, w - w % cell
    dtype = np.float32 if stack.dtype == np.float32 else np.float64
    if n == 1:
        return as_image(stack[0, :h, :w], dtype=dtype), np.zeros((h, w), bool)
    cols = int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    sy, sx = h + cell, w + cell
    img = np.zeros((rows * sy - cell, cols * sx - cell), dtype)
    ignore = np.ones(img.shape, bool)
    for i, window in enumerate(stack):
        y, x = (i // cols) * sy, (i % cols) * sx
        img[y : y + h, x : x + w] = as_image(window[:h, :w], dtype=dtype)
        ignore[y + 1 : y + h - 1, x + 1 : x + w - 1] = False
    return img, ignore


def anisotropy(features: np.ndarray) -> np.ndarray:
    """Horizontal minus vertical 1-px correlation offset (``rho_h1 - rho_v1``).

    Args:
        features: (..., F) features of :func:`block_texture_features` (default lags).

    Returns:
        float64 (...), in about [-2, 2]; ~0 for isotropic noise, > 0 when the noise is more
        correlated along rows (e.g. blur along the rows only).
    """
    f = np.asarray(features, dtype=np.float64)
    return f[..., 0] - f[..., 1]
