"""The edit kinds of the tampering generator: where an edit goes and what it writes there.

Each ``_op_*`` function proposes one edit of its kind on an image of stored values
(:class:`Edit`: a window, the new values and the blend weights); :func:`propose_edit` picks the
kind. Whether a proposal is kept (not flat, not changing the image's range, changing enough
pixels) and the exact mask are decided by :func:`medforensics.synth.tamper.tamper_array`, which
also documents the kinds and the pixel domain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

from medforensics.dsp.residuals import highpass_residual, robust_std
from medforensics.errors import ConfigError, TamperError

__all__ = [
    "COPY_SOURCES",
    "KINDS",
    "MAX_TRIES",
    "Edit",
    "bbox_of",
    "clipped_share",
    "copy_source_option",
    "draw_size",
    "propose_edit",
    "textured",
]

#: the tampering kinds (see :mod:`medforensics.synth.tamper`)
KINDS: tuple[str, ...] = (
    "copy-move",
    "splice",
    "splice-device",
    "removal",
    "insertion",
    "local-edit",
)
#: attempts at placing an edit (and at finding a copy-move source) before giving up
MAX_TRIES = 40
#: values of the ``copy_source`` option of copy-move
COPY_SOURCES = ("content", "clipped", "any")


@dataclass
class Edit:
    """A proposed edit on a window: ``out = alpha * new + (1 - alpha) * old`` inside ``win``."""

    win: tuple[slice, slice]
    new: np.ndarray
    alpha: np.ndarray
    detail: dict[str, Any]
    source_win: tuple[slice, slice] | None = None
    translation: tuple[int, int] | None = None  # (dy, dx) target - source, copy-move only


def bbox_of(mask: np.ndarray) -> tuple[int, int, int, int]:
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


def draw_size(rng: np.random.Generator, sizes: tuple[int, int], limit: int) -> int:
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


def copy_source_option(opts: dict[str, Any]) -> str:
    """The ``copy_source`` option, checked."""
    value = str(opts.get("copy_source", "content"))
    if value not in COPY_SOURCES:
        raise ConfigError(f"unknown copy_source {value!r}; choose from {', '.join(COPY_SOURCES)}")
    return value


def clipped_share(values: np.ndarray, vmin: float, vmax: float) -> float:
    """Share of ``values`` at the image's minimum or maximum (0..1)."""
    return float(np.mean((values <= vmin) | (values >= vmax))) if values.size else 0.0


def textured(img: np.ndarray, y: int, x: int, h: int, w: int, ref_std: float) -> bool:
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
) -> Edit:
    H, W = img.shape
    h, w = _box_dims(rng, size)
    shape, shape_name = _shape_mask(rng, h, w)
    pad = _pad_for(feather)
    ty, tx = _place(rng, H, W, h, w, pad)
    # source box: non-overlapping with the target (windows incl. feather pad)
    for _ in range(MAX_TRIES):
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
        for _ in range(MAX_TRIES):
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
    return Edit(
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
) -> Edit:
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
    for _ in range(MAX_TRIES):
        sy, sx = _place(rng, dH, dW, h, w, pad)
        if textured(donor, sy, sx, h, w, d_ref):
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
    return Edit(
        win=(slice(ty - pad, ty + h + pad), slice(tx - pad, tx + w + pad)),
        new=src,
        alpha=_alpha(shape, feather, pad),
        detail={"shape": shape_name, "feather": feather, "donor_yx": [sy, sx],
                "match": mode, "gain": gain, "donor_flipped": donor_polarity != polarity},
    )


def _op_removal(
    img: np.ndarray, rng: np.random.Generator, size: int, feather: float, opts: dict[str, Any],
    ref_std: float,
) -> Edit:
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
    return Edit(win=win, new=new, alpha=alpha,
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
) -> Edit:
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
    return Edit(
        win=(slice(ty, ty + h), slice(tx, tx + w)),
        new=vals + bump,
        alpha=(profile > 0).astype(np.float64),
        detail={"shape": "nodule", "amplitude": amp, "exponent": p, "radii": [ry, rx]},
    )


def _op_local_edit(
    img: np.ndarray, rng: np.random.Generator, size: int, feather: float, opts: dict[str, Any],
    ref_std: float,
) -> Edit:
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
    return Edit(win=(slice(ty - pad, ty + h + pad), slice(tx - pad, tx + w + pad)), new=new,
                 alpha=_alpha(shape, feather, pad), detail=detail)


def propose_edit(kind: str, img: np.ndarray, rng: np.random.Generator, size: int,
                 feather: float, opts: dict[str, Any], ref_std: float, *,
                 donor: np.ndarray | None = None, donor_polarity: int = 1, polarity: int = 1,
                 dyn: float = 1.0) -> Edit:
    """One proposed edit of ``kind`` (one of :data:`KINDS`) on ``img`` (stored values).

    Args:
        kind: the edit kind.
        img: (H, W) stored values.
        rng: the generator every random choice comes from.
        size: nominal region size in pixels.
        feather: Gaussian feather sigma in pixels (0 = hard edge).
        opts: the ``options`` of :func:`~medforensics.synth.tamper.tamper_array`.
        ref_std: standard deviation of the whole image (flatness reference).
        donor: donor image for ``splice`` / ``splice-device``.
        donor_polarity: polarity of ``donor``.
        polarity: +1 when higher stored values are brighter, else -1.
        dyn: the image's 1-99 percentile range (insertion contrast).

    Raises:
        TamperError: no valid location for this proposal (the caller draws again).
    """
    if kind == "copy-move":
        return _op_copy_move(img, rng, size, feather, opts, ref_std)
    if kind in ("splice", "splice-device"):
        if donor is None:
            raise TamperError(f"{kind} needs a donor image")
        return _op_splice(img, rng, size, feather, opts, ref_std, np.asarray(donor),
                          donor_polarity, polarity)
    if kind == "removal":
        return _op_removal(img, rng, size, feather, opts, ref_std)
    if kind == "insertion":
        return _op_insertion(img, rng, size, feather, opts, ref_std, polarity, dyn)
    return _op_local_edit(img, rng, size, feather, opts, ref_std)
