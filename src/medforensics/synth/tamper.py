"""Tampering generator with exact ground-truth masks.

Kinds (``KINDS``):

* ``copy-move``: a region of the image is pasted elsewhere in the same image (optional
  rotation / scaling; feathered edges).
* ``splice``: a region from another image is pasted in (intensity matched to the destination by
  mean/standard deviation).
* ``splice-device``: like ``splice`` but the donor image comes from a *different device*
  (``unit`` / ``model`` label of the input manifest, or the DICOM header).
* ``removal``: a region is filled from its surroundings (harmonic / diffusion fill solving
  Laplace's equation with the surrounding values as boundary condition) plus Gaussian noise
  matched to the surrounding noise level.
* ``insertion``: a synthetic lesion / nodule (smooth radial profile with faint texture) is
  added; it is brighter (higher attenuation) in display orientation.
* ``local-edit``: local contrast change around the local mean, or Gaussian blur, in a region.

**Pixel domain.** Edits are made on the *stored* integer values (DICOM: the Pixel Data values
before the Modality LUT; PNG/TIFF: the stored 8/16-bit values; JPEG: the decoded 8-bit values).
Results are rounded and clipped to the original image's own ``[min, max]``; an edit is
re-drawn elsewhere if it would change the image's minimum or maximum (so MONOCHROME1
inversion and any min/max-based normalisation are unaffected outside the edit), if the location
is flat (background), or if it would change fewer than 80 % of the region's pixels (50 % for
``insertion``, whose smooth profile rounds to zero at its rim). A copy-move *source* is
re-drawn too when it is flat or more than half of it is at the image's minimum or maximum:
pasting clipped background is a constant fill, with no content to copy (``copy_source``
option: ``"clipped"`` makes exactly such fills, for measuring them on their own).

**Masks.** The mask is *exactly the set of pixels whose stored value differs* between the
tampered and the matched original file. With feathered edges, pixels in the soft border whose
rounded blend equals the original value are therefore *not* in the mask, and pixels inside the
region whose value happens to be equal (e.g. copying 0 onto 0) are not either. Exception: JPEG
outputs are re-encoded, so the decoded tampered and decoded original files differ in every
8x8 block touched by the edit; for JPEG the mask is the set of pixels changed *before* encoding
(the edit itself), and the decoded difference lies within the 8x8 blocks the mask touches.

**Outputs** (:func:`generate`): the tampered file in the source's format (DICOM stays DICOM
with its header and a new deterministic SOPInstanceUID; PNG keeps its 8/16-bit depth; JPEG is
re-encoded with the source's quantisation tables; TIFF keeps its dtype), a matched original
written through the *same* writer (so format artefacts and header treatment match: the
original copy also gets a new SOPInstanceUID), uint8 0/255 mask PNGs, and one manifest row per
output file (see :data:`MANIFEST_COLUMNS`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

from medforensics.dsp.residuals import highpass_residual, robust_std
from medforensics.errors import (
    ConfigError,
    FileAccessError,
    MedForensicsError,
    TamperError,
)
from medforensics.io import (
    read_image,
    read_stored,
    save_dicom_like,
    sniff,
    write_png8,
    write_png16,
)

__all__ = [
    "KINDS",
    "DEFAULT_KINDS",
    "MANIFEST_COLUMNS",
    "TamperResult",
    "Raster",
    "tamper_array",
    "load_raster",
    "tamper_file",
    "generate",
    "write_manifest",
    "read_inputs",
]

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = (
    "copy-move",
    "splice",
    "splice-device",
    "removal",
    "insertion",
    "local-edit",
)
DEFAULT_KINDS: tuple[str, ...] = ("copy-move", "splice", "removal", "insertion", "local-edit")

MANIFEST_COLUMNS: tuple[str, ...] = (
    "path",
    "original_path",
    "label",
    "kind",
    "pair_id",
    "format",
    "bbox",
    "region_size",
    "n_changed",
    "donor_path",
    "seed",
    "mask_path",
    "source_mask_path",
    "source_bbox",
    "detail",
    "PatientID",
    "StudyInstanceUID",
    "manufacturer",
    "model",
    "unit",
    "split",
)
_CARRIED = ("PatientID", "StudyInstanceUID", "manufacturer", "model", "unit", "split")

_MAX_TRIES = 40
_COPY_SOURCES = ("content", "clipped", "any")


# ---------------------------------------------------------------------------------------------
# array-level operations
# ---------------------------------------------------------------------------------------------


@dataclass
class TamperResult:
    """Outcome of :func:`tamper_array`.

    Attributes:
        pixels: tampered stored values, same shape and dtype as the input.
        mask: bool (H, W), True exactly where ``pixels != original``.
        kind: one of :data:`KINDS`.
        bbox: ``(x0, y0, x1, y1)`` of the mask, end-exclusive.
        region_size: nominal region size in pixels (longer side of the edited shape).
        source_mask: copy-move only: bool (H, W) of the source pixels that were copied onto the
            changed pixels (exact for pure translation; the transformed shape otherwise).
        source_bbox: copy-move only: ``(x0, y0, x1, y1)`` of ``source_mask``.
        detail: JSON-serialisable parameters of the edit.
    """

    pixels: np.ndarray
    mask: np.ndarray
    kind: str
    bbox: tuple[int, int, int, int]
    region_size: int
    source_mask: np.ndarray | None = None
    source_bbox: tuple[int, int, int, int] | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Edit:
    """A proposed edit on a window: ``out = alpha * new + (1 - alpha) * old`` inside ``win``."""

    win: tuple[slice, slice]
    new: np.ndarray
    alpha: np.ndarray
    detail: dict[str, Any]
    source_win: tuple[slice, slice] | None = None
    translation: tuple[int, int] | None = None  # (dy, dx) target - source, copy-move only


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return (0, 0, 0, 0)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def _shape_mask(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, str]:
    """Random region shape filling an h x w box: rectangle, ellipse or irregular blob."""
    shape = str(rng.choice(["rect", "ellipse", "blob"], p=[0.25, 0.35, 0.4]))
    if shape == "rect":
        return np.ones((h, w), bool), shape
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    ny = (yy - cy) / max(h / 2.0, 1.0)
    nx = (xx - cx) / max(w / 2.0, 1.0)
    r = np.hypot(ny, nx)
    if shape == "ellipse":
        m = r <= 1.0
    else:
        theta = np.arctan2(ny, nx)
        k = np.arange(2, 6)
        amp = rng.uniform(0.0, 0.12, k.size)
        ph = rng.uniform(0, 2 * np.pi, k.size)
        waves = amp[:, None, None] * np.cos(k[:, None, None] * theta + ph[:, None, None])
        rad = 0.82 + np.sum(waves, 0)
        m = r <= rad
    if not m.any():
        m[h // 2, w // 2] = True
    return m, shape


def _alpha(shape: np.ndarray, feather: float, pad: int) -> np.ndarray:
    """Blend weights on the shape padded by ``pad``: 1 inside, Gaussian-feathered edge."""
    a = np.pad(shape.astype(np.float64), pad)
    if feather > 0:
        a = ndimage.gaussian_filter(a, feather, mode="constant", truncate=3.0)
        a[a < 1e-3] = 0.0
        # the inner core stays exactly 1 so copied values are copied exactly
        core = ndimage.binary_erosion(np.pad(shape, pad), iterations=int(math.ceil(2 * feather)))
        a[core] = 1.0
    return a


def _pad_for(feather: float) -> int:
    return int(math.ceil(3.0 * feather)) + 1 if feather > 0 else 0


def _draw_size(rng: np.random.Generator, sizes: tuple[int, int], limit: int) -> int:
    lo, hi = int(sizes[0]), int(sizes[1])
    if lo < 4 or hi < lo:
        raise ConfigError(f"region sizes must satisfy 4 <= min <= max, got {sizes}")
    hi_c = min(hi, limit)
    lo_c = min(lo, hi_c)
    if hi_c < 4:
        raise TamperError(f"image too small for a region (limit {limit} px)")
    # log-uniform between the clipped bounds
    return int(round(math.exp(rng.uniform(math.log(lo_c), math.log(hi_c + 0.999)))))


def _box_dims(rng: np.random.Generator, size: int) -> tuple[int, int]:
    aspect = rng.uniform(0.6, 1.0)
    short = max(4, int(round(size * aspect)))
    return (size, short) if rng.random() < 0.5 else (short, size)


def _place(rng: np.random.Generator, H: int, W: int, h: int, w: int, pad: int) -> tuple[int, int]:
    """Top-left (y, x) of an h x w box whose pad-enlarged window fits in the image."""
    if h + 2 * pad > H or w + 2 * pad > W:
        raise TamperError(f"region {h}x{w} (+{pad} px feather) does not fit a {H}x{W} image")
    y = int(rng.integers(pad, H - h - pad + 1))
    x = int(rng.integers(pad, W - w - pad + 1))
    return y, x


def _copy_source(opts: dict[str, Any]) -> str:
    """The ``copy_source`` option, checked."""
    value = str(opts.get("copy_source", "content"))
    if value not in _COPY_SOURCES:
        raise ConfigError(f"unknown copy_source {value!r}; choose from {', '.join(_COPY_SOURCES)}")
    return value


def _clipped_share(values: np.ndarray, vmin: float, vmax: float) -> float:
    """Share of ``values`` at the image's minimum or maximum (0..1)."""
    return float(np.mean((values <= vmin) | (values >= vmax))) if values.size else 0.0


def _textured(img: np.ndarray, y: int, x: int, h: int, w: int, ref_std: float) -> bool:
    """Reject flat (background, saturated) locations."""
    s = float(img[y : y + h, x : x + w].std())
    return s > 0.05 * ref_std


def _harmonic_fill(values: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """Solve Laplace's equation on ``unknown`` pixels with the others as boundary values.

    Args:
        values: float64 (h, w) window; ``unknown`` must not touch the window border.
        unknown: bool (h, w).

    Returns:
        float64 (h, w): ``values`` with the unknown pixels replaced by the harmonic fill.
    """
    h, w = values.shape
    idx = -np.ones((h, w), np.int64)
    ys, xs = np.nonzero(unknown)
    n = ys.size
    idx[ys, xs] = np.arange(n)
    rows = [np.arange(n)]
    cols = [np.arange(n)]
    data = [np.full(n, 4.0)]
    rhs = np.zeros(n)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        nid = idx[ny, nx]
        inner = nid >= 0
        rows.append(np.arange(n)[inner])
        cols.append(nid[inner])
        data.append(np.full(int(inner.sum()), -1.0))
        rhs[~inner] += values[ny[~inner], nx[~inner]]
    a = coo_matrix(
        (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    ).tocsc()
    sol = spsolve(a, rhs)
    out = values.copy()
    out[ys, xs] = sol
    return out


def _op_copy_move(
    img: np.ndarray, rng: np.random.Generator, size: int, feather: float, opts: dict[str, Any],
    ref_std: float,
) -> _Edit:
    H, W = img.shape
    h, w = _box_dims(rng, size)
    shape, shape_name = _shape_mask(rng, h, w)
    pad = _pad_for(feather)
    ty, tx = _place(rng, H, W, h, w, pad)
    # source box: non-overlapping with the target (windows incl. feather pad)
    for _ in range(_MAX_TRIES):
        sy, sx = _place(rng, H, W, h, w, pad)
        if abs(sy - ty) >= h + 2 * pad or abs(sx - tx) >= w + 2 * pad:
            break
    else:
        raise TamperError("no non-overlapping source location for copy-move")
    src = img[sy - pad : sy + h + pad, sx - pad : sx + w + pad].astype(np.float64)
    angle = 0.0
    scale = 1.0
    if opts.get("rotate", False) and rng.random() < float(opts.get("p_transform", 0.5)):
        if rng.random() < 0.3:
            angle = float(rng.choice([90.0, 180.0, 270.0]))
        else:
            angle = float(rng.uniform(-30, 30))
    if opts.get("scale", False) and rng.random() < float(opts.get("p_transform", 0.5)):
        scale = float(rng.uniform(0.8, 1.25))
    quarter = angle in (90.0, 180.0, 270.0) and scale == 1.0
    if quarter:
        # an exact pixel rotation (as an image editor does it): the source window has the
        # target's size turned by the angle, rotated with np.rot90 (counter-clockwise)
        k = int(angle) // 90
        sh, sw = (w, h) if k % 2 else (h, w)
        for _ in range(_MAX_TRIES):
            sy, sx = _place(rng, H, W, sh, sw, pad)
            if abs(sy - ty) >= max(h, sh) + 2 * pad or abs(sx - tx) >= max(w, sw) + 2 * pad:
                break
        else:
            raise TamperError("no non-overlapping source location for the rotated copy-move")
        src = np.rot90(img[sy - pad : sy + sh + pad, sx - pad : sx + sw + pad].astype(np.float64),
                       k)
        h_src, w_src = sh, sw
    else:
        h_src, w_src = h, w
    if not quarter and (angle != 0.0 or scale != 1.0):
        # resample the source around its centre (bilinear)
        cy, cx = sy + h / 2.0, sx + w / 2.0
        yy, xx = np.mgrid[0 : h + 2 * pad, 0 : w + 2 * pad].astype(np.float64)
        yy -= (h + 2 * pad - 1) / 2.0
        xx -= (w + 2 * pad - 1) / 2.0
        t = math.radians(angle)
        # output pixel -> source coordinates (inverse rotation, inverse scale)
        syy = (math.cos(t) * yy - math.sin(t) * xx) / scale + cy - 0.5
        sxx = (math.sin(t) * yy + math.cos(t) * xx) / scale + cx - 0.5
        src = ndimage.map_coordinates(img.astype(np.float64), [syy, sxx], order=1, mode="reflect")
    win = (slice(ty - pad, ty + h + pad), slice(tx - pad, tx + w + pad))
    return _Edit(
        win=win,
        new=src,
        alpha=_alpha(shape, feather, pad),
        detail={"shape": shape_name, "feather": feather, "angle": angle, "scale": scale,
                "shift_yx": [ty - sy, tx - sx]},
        source_win=(slice(sy - pad, sy + h_src + pad), slice(sx - pad, sx + w_src + pad)),
        translation=(ty - sy, tx - sx) if angle == 0.0 and scale == 1.0 else None,
    )


def _op_splice(
    img: np.ndarray, rng: np.random.Generator, size: int, feather: float, opts: dict[str, Any],
    ref_std: float, donor: np.ndarray, donor_polarity: int, polarity: int,
) -> _Edit:
    H, W = img.shape
    dH, dW = donor.shape
    pad = _pad_for(feather)
    size = min(size, dH - 2 * pad - 1, dW - 2 * pad - 1)
    if size < 8:
        raise TamperError(f"donor image {dH}x{dW} too small for a splice")
    h, w = _box_dims(rng, size)
    shape, shape_name = _shape_mask(rng, h, w)
    ty, tx = _place(rng, H, W, h, w, pad)
    d_ref = float(donor.std())
    for _ in range(_MAX_TRIES):
        sy, sx = _place(rng, dH, dW, h, w, pad)
        if _textured(donor, sy, sx, h, w, d_ref):
            break
    src = donor[sy - pad : sy + h + pad, sx - pad : sx + w + pad].astype(np.float64)
    if donor_polarity != polarity:
        src = -src
    dst = img[ty - pad : ty + h + pad, tx - pad : tx + w + pad].astype(np.float64)
    core = np.pad(shape, pad)
    mode = str(opts.get("splice_match", "meanstd"))
    if mode == "meanstd":
        ms, ss = float(src[core].mean()), float(src[core].std())
        md, sd = float(dst[core].mean()), float(dst[core].std())
        gain = sd / ss if ss > 0 else 1.0
        src = (src - ms) * gain + md
    elif mode == "mean":
        src = src - float(src[core].mean()) + float(dst[core].mean())
        gain = 1.0
    elif mode == "none":
        gain = 1.0
    else:
        raise ConfigError(f"unknown splice_match {mode!r} (meanstd, mean, none)")
    return _Edit(
        win=(slice(ty - pad, ty + h + pad), slice(tx - pad, tx + w + pad)),
        new=src,
        alpha=_alpha(shape, feather, pad),
        detail={"shape": shape_name, "feather": feather, "donor_yx": [sy, sx],
                "match": mode, "gain": gain, "donor_flipped": donor_polarity != polarity},
    )


def _op_removal(
    img: np.ndarray, rng: np.random.Generator, size: int, feather: float, opts: dict[str, Any],
    ref_std: float,
) -> _Edit:
    H, W = img.shape
    # the harmonic solve is the cost driver: cap the removal region
    size = min(size, int(opts.get("removal_max", 160)))
    h, w = _box_dims(rng, size)
    shape, shape_name = _shape_mask(rng, h, w)
    pad = _pad_for(feather) + 3  # ring for boundary values and noise estimation
    ty, tx = _place(rng, H, W, h, w, pad)
    win = (slice(ty - pad, ty + h + pad), slice(tx - pad, tx + w + pad))
    vals = img[win].astype(np.float64)
    alpha = _alpha(shape, feather, pad)
    unknown = alpha > 0
    unknown[0, :] = unknown[-1, :] = unknown[:, 0] = unknown[:, -1] = False
    filled = _harmonic_fill(vals, unknown)
    ring = ndimage.binary_dilation(unknown, iterations=3) & ~unknown
    sigma = _ring_sigma(vals, ring)
    noise = rng.normal(0.0, sigma, vals.shape)
    new = filled + np.where(unknown, noise, 0.0)
    return _Edit(win=win, new=new, alpha=alpha,
                 detail={"shape": shape_name, "feather": feather, "fill": "harmonic",
                         "noise_sigma": sigma})


def _ring_sigma(vals: np.ndarray, ring: np.ndarray) -> float:
    """Noise std (robust, white-noise normalised Laplacian residual) on ring pixels only."""
    r = highpass_residual(vals, "laplacian", normalize=True)
    sel = r[ring]
    return robust_std(sel) if sel.size >= 8 else 0.0


def _op_insertion(
    img: np.ndarray, rng: np.random.Generator, size: int, feather: float, opts: dict[str, Any],
    ref_std: float, polarity: int, dyn: float,
) -> _Edit:
    H, W = img.shape
    size = max(8, size)
    h = w = size
    ty, tx = _place(rng, H, W, h, w, 0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    ry = h / 2.0 * rng.uniform(0.75, 1.0)
    rx = w / 2.0 * rng.uniform(0.75, 1.0)
    r = np.hypot((yy - cy) / ry, (xx - cx) / rx)
    p = float(rng.uniform(1.0, 2.5))
    profile = np.clip(1.0 - r**2, 0.0, None) ** p
    tex = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), max(1.0, size / 16.0))
    tex /= tex.std() + 1e-12
    amp = float(rng.uniform(0.04, 0.12)) * dyn
    bump = polarity * amp * profile * (1.0 + 0.15 * tex)
    vals = img[ty : ty + h, tx : tx + w].astype(np.float64)
    return _Edit(
        win=(slice(ty, ty + h), slice(tx, tx + w)),
        new=vals + bump,
        alpha=(profile > 0).astype(np.float64),
        detail={"shape": "nodule", "amplitude": amp, "exponent": p, "radii": [ry, rx]},
    )


def _op_local_edit(
    img: np.ndarray, rng: np.random.Generator, size: int, feather: float, opts: dict[str, Any],
    ref_std: float,
) -> _Edit:
    H, W = img.shape
    h, w = _box_dims(rng, size)
    shape, shape_name = _shape_mask(rng, h, w)
    pad = _pad_for(feather)
    ty, tx = _place(rng, H, W, h, w, pad)
    ctx = max(pad, 8)
    y0, y1 = max(0, ty - pad - ctx), min(H, ty + h + pad + ctx)
    x0, x1 = max(0, tx - pad - ctx), min(W, tx + w + pad + ctx)
    big = img[y0:y1, x0:x1].astype(np.float64)
    mode = str(rng.choice(["contrast", "blur"]))
    if mode == "contrast":
        g = float(rng.uniform(0.55, 0.8) if rng.random() < 0.5 else rng.uniform(1.3, 1.8))
        m = ndimage.gaussian_filter(big, max(2.0, size / 6.0), mode="reflect")
        edited = m + g * (big - m)
        detail = {"mode": mode, "gain": g}
    else:
        s = float(rng.uniform(1.0, 3.0))
        edited = ndimage.gaussian_filter(big, s, mode="reflect")
        detail = {"mode": mode, "sigma": s}
    oy, ox = ty - pad - y0, tx - pad - x0
    new = edited[oy : oy + h + 2 * pad, ox : ox + w + 2 * pad]
    detail.update({"shape": shape_name, "feather": feather})
    return _Edit(win=(slice(ty - pad, ty + h + pad), slice(tx - pad, tx + w + pad)), new=new,
                 alpha=_alpha(shape, feather, pad), detail=detail)


def tamper_array(
    pixels: np.ndarray,
    kind: str,
    rng: np.random.Generator,
    *,
    sizes: tuple[int, int] = (32, 256),
    feather: float | None = None,
    donor: np.ndarray | None = None,
    polarity: int = 1,
    donor_polarity: int = 1,
    options: dict[str, Any] | None = None,
) -> TamperResult:
    """Apply one tampering operation to an image of stored values.

    Args:
        pixels: integer-valued array (H, W) of stored values (any integer or float dtype);
            the output keeps this dtype.
        kind: one of :data:`KINDS`.
        rng: NumPy generator (all randomness comes from it).
        sizes: ``(min, max)`` region size in pixels; drawn log-uniformly, the maximum clipped to
            ``min(H, W) // 2`` (and for splices to the donor size).
        feather: Gaussian feather sigma in pixels; ``None`` draws one of 0, 1, 2 px.
        donor: donor image (stored values) for ``splice``/``splice-device``.
        polarity: +1 when higher stored values are brighter (MONOCHROME2 and positive rescale
            slope), -1 otherwise; used by ``insertion`` and to orient donors.
        donor_polarity: polarity of ``donor``.
        options: ``rotate``/``scale`` (bool, copy-move), ``p_transform`` (probability of each
            transform when enabled, default 0.5), ``copy_source`` (copy-move: "content", the
            default, redraws a source that is flat or more than half at the image's minimum /
            maximum - a copy of clipped background is a constant fill, not a copy of content;
            "clipped" asks for exactly such a source; "any" takes what is drawn),
            ``splice_match`` ("meanstd", "mean", "none"), ``removal_max`` (cap on the removal
            region size, default 160 px).

    Returns:
        :class:`TamperResult`; ``mask`` is exactly ``result.pixels != pixels``.

    Raises:
        ConfigError: unknown kind or bad sizes.
        TamperError: no valid location found (too small / flat image, missing donor).
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown tampering kind {kind!r}; choose from {', '.join(KINDS)}")
    arr = np.asarray(pixels)
    if arr.ndim != 2:
        raise TamperError(f"expected a 2-D image, got shape {arr.shape}")
    if kind in ("splice", "splice-device") and donor is None:
        raise TamperError(f"{kind} needs a donor image")
    opts = dict(options or {})
    H, W = arr.shape
    orig = arr.astype(np.float64)
    vmin, vmax = float(orig.min()), float(orig.max())
    if vmax <= vmin:
        raise TamperError("constant image: nothing to tamper")
    p1, p99 = np.percentile(orig, [1, 99])
    dyn = float(max(p99 - p1, 1.0))
    ref_std = float(orig.std())
    copy_source = _copy_source(opts)
    limit = min(H, W) // 2
    last_reason = "no attempt"
    for _attempt in range(_MAX_TRIES):
        size = _draw_size(rng, sizes, limit)
        f = float(rng.choice([0.0, 1.0, 2.0])) if feather is None else float(feather)
        try:
            if kind == "copy-move":
                ed = _op_copy_move(arr, rng, size, f, opts, ref_std)
            elif kind in ("splice", "splice-device"):
                assert donor is not None
                ed = _op_splice(arr, rng, size, f, opts, ref_std, np.asarray(donor),
                                donor_polarity, polarity)
            elif kind == "removal":
                ed = _op_removal(arr, rng, size, f, opts, ref_std)
            elif kind == "insertion":
                ed = _op_insertion(arr, rng, size, f, opts, ref_std, polarity, dyn)
            else:
                ed = _op_local_edit(arr, rng, size, f, opts, ref_std)
        except TamperError as exc:
            last_reason = str(exc)
            continue
        ys, xs = ed.win
        region = ed.alpha >= 1.0
        if not _textured(arr, ys.start, xs.start, ys.stop - ys.start, xs.stop - xs.start, ref_std):
            last_reason = "flat location"
            continue
        if kind == "copy-move" and ed.source_win is not None:
            src_values = orig[ed.source_win]
            clipped = _clipped_share(src_values, vmin, vmax)
            if copy_source == "content" and (clipped > 0.5 or src_values.std() <= 0.05 * ref_std):
                last_reason = "copy-move source is flat or clipped background"
                continue
            if copy_source == "clipped" and clipped <= 0.5:
                last_reason = "copy-move source is not clipped background"
                continue
            ed.detail["source_clipped"] = round(clipped, 3)
        old = orig[ed.win]
        blended = ed.alpha * ed.new + (1.0 - ed.alpha) * old
        q = np.clip(np.rint(blended), vmin, vmax)
        out = orig.copy()
        out[ed.win] = q
        if float(out.min()) != vmin or float(out.max()) != vmax:
            last_reason = "edit would change the image min/max"
            continue
        mask = out != orig
        n_region = int(region.sum())
        changed_in_region = int(mask[ed.win][region].sum())
        # near-no-op edits (e.g. a contrast-matched splice into flat background) are redrawn
        need = 0.5 if kind == "insertion" else 0.8
        if n_region == 0 or changed_in_region < need * n_region:
            last_reason = f"edit changed only {changed_in_region}/{n_region} region pixels"
            continue
        res = TamperResult(
            pixels=out.astype(arr.dtype),
            mask=mask,
            kind=kind,
            bbox=_bbox(mask),
            region_size=int(size),
            detail={**ed.detail, "attempt": _attempt},
        )
        if kind == "copy-move" and ed.source_win is not None:
            sm = np.zeros((H, W), bool)
            if ed.translation is not None:
                dy, dx = ed.translation
                ys_, xs_ = np.nonzero(mask)
                sm[ys_ - dy, xs_ - dx] = True
            elif ed.detail.get("scale") == 1.0 and ed.detail.get("angle") in (90.0, 180.0, 270.0):
                # exact quarter turn: the source window is the target's turned back
                sm[ed.source_win] = np.rot90(ed.alpha > 0, -int(ed.detail["angle"]) // 90)
            else:
                sm[ed.source_win] = ed.alpha > 0
            res.source_mask = sm
            res.source_bbox = _bbox(sm)
        return res
    raise TamperError(f"could not place a {kind} edit after {_MAX_TRIES} attempts ({last_reason})")


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------


@dataclass
class Raster:
    """A single-frame grey image in its stored domain plus what is needed to write it back.

    Attributes:
        path: source file.
        fmt: ``"dicom"``, ``"png"``, ``"jpeg"`` or ``"tiff"``.
        pixels: stored values (DICOM: Pixel Data values before the Modality LUT), integer dtype.
        polarity: +1 if higher stored values are brighter, else -1.
        device: device key (manifest ``unit``/``model`` or DICOM header), "" when unknown.
        ext: file extension to write (with dot).
        writer: ``writer(path, pixels, tag)`` writes pixels in the source format; ``tag`` makes
            the new DICOM SOPInstanceUID deterministic and distinct per output.
    """

    path: Path
    fmt: str
    pixels: np.ndarray
    polarity: int
    device: str
    ext: str
    writer: Callable[[Path, np.ndarray, str], None]


def _dicom_raster(path: Path) -> Raster:
    import pydicom
    from pydicom.uid import generate_uid

    pixels, meta = read_stored(path)
    if meta.n_frames > 1:
        raise TamperError(f"{path}: multi-frame DICOM ({meta.n_frames} frames) is not supported "
                          "by the tampering generator")
    if meta.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise TamperError(f"{path}: photometric {meta.photometric} is not supported (grey only)")
    hdr = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    slope = float(getattr(hdr, "RescaleSlope", 1) or 1)
    polarity = (1 if meta.photometric == "MONOCHROME2" else -1) * (1 if slope >= 0 else -1)
    src_uid = meta.sop_uid or path.name
    device = " ".join(v for v in (meta.manufacturer, meta.model, meta.serial) if v).strip()

    def write(out: Path, arr: np.ndarray, tag: str) -> None:
        ds = hdr.copy()
        ds.file_meta = pydicom.dataset.FileMetaDataset(hdr.file_meta)
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[src_uid, tag])
        save_dicom_like(ds, arr, out, new_sop_uid=False)

    return Raster(path, "dicom", np.asarray(pixels), polarity, device, ".dcm", write)


def _raster_file(path: Path) -> Raster:
    pixels, meta = read_image(path)
    if meta.n_frames > 1:
        raise TamperError(f"{path}: multi-frame images are not supported")
    fmt = meta.format
    dtype = np.uint8 if meta.bits_stored <= 8 else np.uint16
    arr = pixels.astype(dtype)
    qtables = None
    if fmt == "jpeg":
        from PIL import Image

        with Image.open(path) as im:
            qtables = getattr(im, "quantization", None)

    def write(out: Path, a: np.ndarray, tag: str) -> None:
        if fmt == "tiff":
            import tifffile

            tifffile.imwrite(out, np.asarray(a).astype(dtype))
        elif fmt == "jpeg":
            from PIL import Image

            img = Image.fromarray(np.asarray(a).astype(np.uint8), mode="L")
            # re-encode with the source's quantisation tables (same "quality")
            if qtables:
                img.save(out, format="JPEG", qtables=qtables)
            else:
                img.save(out, format="JPEG", quality=90)
        elif dtype == np.uint8:
            write_png8(out, a)
        else:
            write_png16(out, a)

    ext = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif"}.get(fmt)
    if ext is None:
        raise TamperError(f"{path}: format {fmt} is not supported")
    return Raster(path, fmt, arr, 1, "", ext, write)


def load_raster(path: str | Path) -> Raster:
    """Load a single-frame grey image in its stored domain (see :class:`Raster`).

    DICOM is read with :func:`medforensics.io.read_stored` and written with
    :func:`medforensics.io.save_dicom_like`; PNG/TIFF/JPEG with
    :func:`medforensics.io.read_image` (JPEG re-encoding keeps the source's quantisation
    tables).

    Raises:
        medforensics.errors.ReadError: unreadable file (from the reader).
        TamperError: unsupported for tampering (multi-frame, colour).
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise FileAccessError(f"cannot read: {exc}", p) from exc
    if sniff(head).startswith("dicom") or sniff(head) == "acr-nema":
        return _dicom_raster(p)
    return _raster_file(p)


def _mask_png(path: Path, mask: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(path, format="PNG")


def _fmt_box(b: tuple[int, int, int, int] | None) -> str:
    return "" if b is None else " ".join(str(int(v)) for v in b)


def tamper_file(
    src: str | Path,
    out_dir: str | Path,
    kind: str,
    *,
    seed: int,
    pair_id: str,
    sizes: tuple[int, int] = (32, 256),
    donor: str | Path | None = None,
    feather: float | None = None,
    options: dict[str, Any] | None = None,
    carried: dict[str, str] | None = None,
    raster: Raster | None = None,
    donor_raster: Raster | None = None,
) -> list[dict[str, str]]:
    """Tamper one file and write the tampered copy, the matched original and both masks.

    Files written (``out_dir/images``, ``out_dir/masks``): ``{pair_id}_{kind}{ext}``,
    ``{pair_id}_original{ext}``, ``{pair_id}_{kind}.png`` (mask), ``{pair_id}_original.png``
    (all-zero mask), and for copy-move ``{pair_id}_{kind}_source.png``.

    Args:
        src: source image file.
        out_dir: output directory (created).
        kind: one of :data:`KINDS`.
        seed: integer seed; the edit depends only on it, the source and the donor.
        pair_id: identifier prefix shared by the tampered/original pair.
        sizes: ``(min, max)`` region size in pixels.
        donor: donor file for splices.
        feather: feather sigma (``None``: random 0/1/2 px).
        options: see :func:`tamper_array`.
        carried: input-manifest values copied to the rows (PatientID, unit, split, ...).
        raster: pre-loaded source (avoids reading twice).
        donor_raster: pre-loaded donor.

    Returns:
        Two manifest rows (tampered, original) with the columns of :data:`MANIFEST_COLUMNS`.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    r = raster if raster is not None else load_raster(src)
    d = None
    if kind in ("splice", "splice-device"):
        if donor_raster is not None:
            d = donor_raster
        elif donor is not None:
            d = load_raster(donor)
        else:
            raise TamperError(f"{kind} needs a donor file")
    rng = np.random.default_rng(int(seed))
    res = tamper_array(
        r.pixels, kind, rng, sizes=sizes, feather=feather,
        donor=None if d is None else d.pixels, polarity=r.polarity,
        donor_polarity=1 if d is None else d.polarity, options=options,
    )
    t_path = out / "images" / f"{pair_id}_{kind}{r.ext}"
    o_path = out / "images" / f"{pair_id}_original{r.ext}"
    tm_path = out / "masks" / f"{pair_id}_{kind}.png"
    om_path = out / "masks" / f"{pair_id}_original.png"
    r.writer(t_path, res.pixels, f"tampered:{kind}:{seed}")
    r.writer(o_path, r.pixels, f"original:{seed}")
    _mask_png(tm_path, res.mask)
    _mask_png(om_path, np.zeros_like(res.mask))
    sm_path = ""
    if res.source_mask is not None:
        smp = out / "masks" / f"{pair_id}_{kind}_source.png"
        _mask_png(smp, res.source_mask)
        sm_path = str(smp.resolve())
    base = {c: "" for c in MANIFEST_COLUMNS}
    base.update({k: str(v) for k, v in (carried or {}).items() if k in _CARRIED})
    base.update({"original_path": str(Path(src)), "pair_id": pair_id, "format": r.fmt,
                 "seed": str(int(seed))})
    t_row = dict(base)
    t_row.update({
        "path": str(t_path.resolve()), "label": "tampered", "kind": kind,
        "bbox": _fmt_box(res.bbox), "region_size": str(res.region_size),
        "n_changed": str(int(res.mask.sum())),
        "donor_path": "" if d is None else str(d.path),
        "mask_path": str(tm_path.resolve()), "source_mask_path": sm_path,
        "source_bbox": _fmt_box(res.source_bbox),
        "detail": json.dumps({**res.detail, **({"donor_device": d.device} if d else {})},
                             sort_keys=True, default=float),
    })
    o_row = dict(base)
    o_row.update({"path": str(o_path.resolve()), "label": "original", "kind": "none",
                  "n_changed": "0", "mask_path": str(om_path.resolve())})
    return [t_row, o_row]


_IMAGE_EXT = {".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff"}


def read_inputs(source: str | Path) -> list[dict[str, str]]:
    """List input images from a manifest CSV (eligible rows) or a directory (recursive).

    Args:
        source: a CSV with a ``path`` column (rows whose ``status`` is not ``eligible`` are
            skipped and counted in the log), or a directory searched for
            .dcm/.dicom/.png/.jpg/.jpeg/.tif/.tiff files and extension-less DICOM files.

    Returns:
        Rows with at least ``path`` (plus any manifest columns), sorted by path.
    """
    s = Path(source)
    if s.is_file():
        with open(s, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                raise ConfigError(f"{s}: manifest has no 'path' column")
            rows = list(reader)
        keep = [r for r in rows if r.get("status", "eligible") in ("", "eligible")]
        if len(keep) < len(rows):
            log.info("%s: %d of %d rows are not eligible and are not tampered",
                     s, len(rows) - len(keep), len(rows))
        base = s.parent
        for r in keep:
            p = Path(r["path"])
            if not p.is_absolute() and not p.exists() and (base / p).exists():
                r["path"] = str(base / p)
        return sorted(keep, key=lambda r: r["path"])
    if s.is_dir():
        found = []
        for p in sorted(s.rglob("*")):
            if not p.is_file():
                continue
            if p.suffix.lower() in _IMAGE_EXT:
                found.append({"path": str(p)})
            elif p.suffix == "":
                with open(p, "rb") as fh:
                    if fh.read(132)[128:132] == b"DICM":
                        found.append({"path": str(p)})
        return found
    raise ConfigError(f"{s} is neither a manifest CSV nor a directory")


def write_manifest(rows: Sequence[dict[str, str]], path: str | Path) -> None:
    """Write tamper-manifest rows (columns :data:`MANIFEST_COLUMNS`) to CSV."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in MANIFEST_COLUMNS})


def _device_of(row: dict[str, str], raster: Raster | None) -> str:
    for k in ("unit", "model"):
        if row.get(k):
            return str(row[k])
    return raster.device if raster is not None else ""


@dataclass
class GenerateReport:
    """Summary of :func:`generate`: rows written and the inputs that failed (path, reason)."""

    rows: list[dict[str, str]]
    failures: list[tuple[str, str]]
    manifest_path: Path


def generate(
    inputs: str | Path | Sequence[dict[str, str]],
    out_dir: str | Path,
    *,
    kinds: Iterable[str] = DEFAULT_KINDS,
    seed: int = 0,
    sizes: tuple[int, int] = (32, 256),
    n: int | None = None,
    feather: float | None = None,
    options: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> GenerateReport:
    """Generate a tampering data set: one tampered + one matched original per source image.

    Sources are shuffled with ``seed``; the first ``n`` (default all) are used and kinds are
    assigned round-robin in that shuffled order (balanced). Splice donors are other inputs
    (``splice``: any other image; ``splice-device``: an image whose device label differs).
    Per-image seeds are derived from ``(seed, index)`` and recorded in the manifest.
    Failures (unreadable, unsupported, no donor) are logged, recorded, and do not stop the batch.

    Args:
        inputs: manifest CSV, directory, or rows with a ``path`` key.
        out_dir: output directory; writes ``images/``, ``masks/``, ``tamper_manifest.csv`` and
            ``failures.csv`` (when any failed).
        kinds: kinds to use (subset of :data:`KINDS`).
        seed: master seed.
        sizes: ``(min, max)`` region size in pixels.
        n: number of source images to use (default: all).
        feather: feather sigma (``None``: random 0/1/2 px per image).
        options: see :func:`tamper_array`.
        progress: optional callback ``(done, total)``.

    Returns:
        :class:`GenerateReport`.
    """
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ConfigError(f"unknown kinds {bad}; choose from {', '.join(KINDS)}")
    _copy_source(dict(options or {}))
    rows_in = read_inputs(inputs) if isinstance(inputs, (str, Path)) else list(inputs)
    if not rows_in:
        raise ConfigError("no input images")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    master = np.random.default_rng(seed)
    order = master.permutation(len(rows_in))
    if n is not None:
        if n < 1:
            raise ConfigError("n must be >= 1")
        order = order[:n]
    devices: dict[str, str] = {}
    for r in rows_in:
        if r.get("unit") or r.get("model"):
            devices[r["path"]] = _device_of(r, None)
    rows_out: list[dict[str, str]] = []
    failures: list[tuple[str, str]] = []
    cache: dict[str, Raster] = {}

    def get(path: str) -> Raster:
        if path not in cache:
            if len(cache) > 8:
                cache.pop(next(iter(cache)))
            cache[path] = load_raster(path)
            devices.setdefault(path, cache[path].device)
        return cache[path]

    total = len(order)
    for i, idx in enumerate(order):
        row = rows_in[int(idx)]
        path = row["path"]
        kind = kinds[i % len(kinds)]
        item_seed = int(np.random.SeedSequence([int(seed), int(i)]).generate_state(1)[0])
        pair_id = f"{i:05d}"
        try:
            r = get(path)
            donor_r = None
            if kind in ("splice", "splice-device"):
                drng = np.random.default_rng(item_seed ^ 0x5A5A)
                own = devices.get(path, r.device)
                cands = [j for j in drng.permutation(len(rows_in))
                         if rows_in[int(j)]["path"] != path]
                donor_r = None
                for j in cands:
                    dp = rows_in[int(j)]["path"]
                    if kind == "splice-device":
                        dev = devices.get(dp)
                        if dev is None:
                            try:
                                dev = get(dp).device
                            except MedForensicsError:
                                continue
                        if not own or not dev or dev == own:
                            continue
                    try:
                        donor_r = get(dp)
                    except MedForensicsError:
                        continue
                    break
                if donor_r is None:
                    raise TamperError(
                        "no donor image" + (" from another device (device labels missing or a "
                                            "single device)" if kind == "splice-device" else "")
                    )
            carried = {k: row.get(k, "") for k in _CARRIED}
            rows_out.extend(tamper_file(
                path, out, kind, seed=item_seed, pair_id=pair_id, sizes=sizes,
                feather=feather, options=options, carried=carried, raster=r,
                donor_raster=donor_r,
            ))
        except MedForensicsError as exc:
            log.warning("tamper %s (%s) failed: %s", path, kind, exc)
            failures.append((path, f"{type(exc).__name__}: {exc}"))
        if progress is not None:
            progress(i + 1, total)
    mpath = out / "tamper_manifest.csv"
    write_manifest(rows_out, mpath)
    if failures:
        with open(out / "failures.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "reason"])
            w.writerows(failures)
    return GenerateReport(rows_out, failures, mpath)
