"""Copies turned or scaled by any amount with nearest-neighbour resampling: exact-value keypoints.

Block matching (:mod:`medforensics.dsp.blockmatch`) finds copies moved by a translation, a
quarter turn or a mirroring, where every residual block of the copy exists unchanged in the
source. An editor that turns a selection by 17 degrees or scales it by 1.1 with
nearest-neighbour resampling (PIL's default, ``scipy.ndimage`` with ``order=0``) breaks the
blocks apart, but every pixel of the copy is still *exactly* one pixel of the source: the
stored values - noise included - are preserved, only their positions move.

This module finds such copies from points whose neighbourhood survives resampling:

1. **Keypoints**: strict local maxima and minima of the stored values over a disc of radius
   2 (12 neighbours). A resampled copy keeps most of them (the value and the disc's largest
   neighbours come along).
2. **Keys**: ``(sign, value, 1st and 2nd largest neighbour)`` (for minima of ``-x``) - exact
   stored values, rotation-invariant. Points with identical keys, at least ``min_dist``
   apart, are candidate matches; keys shared by more than ``max_group`` points (flat,
   quantised areas) are dropped.
3. **Model**: a similarity ``q = a p + b`` (complex numbers ``x + iy``; ``|a|`` the scale,
   ``arg a`` the angle) is fitted to the candidate matches by RANSAC with two-point samples
   drawn from nearby matches; a copy gives hundreds of inliers (within ``tol`` px), chance
   matches a handful. Each found model is refined by least squares on its inliers.

Bilinear or spline resampling changes the values and is not found here (the noise cue sees
its smoothing instead). How many consistent matches copies and untouched images give is in
docs/forgery.md.

Pure NumPy / SciPy, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import ndimage

from medforensics.dsp._checks import as_image

__all__ = ["Points", "ValueKeypoints", "SimilarityCopy", "value_keypoints", "match_keys",
           "fit_similarities", "similarity_equal_map"]

_DISC = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if 0 < dy * dy + dx * dx <= 5]
#: model x match residuals evaluated at once in the RANSAC (bounds its working memory)
_EVAL_ELEMENTS = 1 << 18
_FOOT = np.array([[dy * dy + dx * dx <= 5 for dx in range(-2, 3)] for dy in range(-2, 3)])


class Points(Protocol):
    """Anything with keypoint rows ``y`` and columns ``x`` (arrays of one length)."""

    y: np.ndarray
    x: np.ndarray


@dataclass
class ValueKeypoints:
    """Exact-value keypoints of one image.

    Attributes:
        y: int64 (K,) rows.
        x: int64 (K,) columns.
        keys: float64 (K, 4): ``(sign, value, largest, 2nd largest neighbour)`` of ``sign * x``.
    """

    y: np.ndarray
    x: np.ndarray
    keys: np.ndarray


@dataclass
class SimilarityCopy:
    """A copy of one area onto another by ``q = a p + b`` (complex ``x + iy`` coordinates).

    Attributes:
        a: complex scale-rotation; ``abs(a)`` the scale, ``angle`` its argument.
        b: complex translation.
        angle: rotation in degrees (counter-clockwise in ``(x, y)`` with y down = clockwise
            on screen).
        scale: ``abs(a)``.
        src: int64 (N, 2) ``(y, x)`` of the inlier keypoints on the mapped-from side.
        dst: int64 (N, 2) ``(y, x)`` of their partners.
    """

    a: complex
    b: complex
    angle: float
    scale: float
    src: np.ndarray
    dst: np.ndarray

    @property
    def support(self) -> int:
        return int(len(self.src))

    def dst_box(self, shape: tuple[int, int], margin: int) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)``: the inliers' bounding box on the copy side, grown by
        ``margin`` px and clipped to an image of ``shape`` (ends exclusive)."""
        H, W = shape
        return (max(int(self.dst[:, 0].min()) - margin, 0),
                min(int(self.dst[:, 0].max()) + margin + 1, H),
                max(int(self.dst[:, 1].min()) - margin, 0),
                min(int(self.dst[:, 1].max()) + margin + 1, W))


def value_keypoints(x: np.ndarray, valid: np.ndarray | None = None, *,
                    strip_rows: int = 1024) -> ValueKeypoints:
    """Strict local extrema over a radius-2 disc, with exact-value keys.

    Args:
        x: float (H, W) stored values, H, W >= 8.
        valid: optional bool (H, W); keypoints outside it are dropped.
        strip_rows: rows per strip (bounds the working memory of large images).

    Returns:
        :class:`ValueKeypoints`.

    Raises:
        InvalidArrayError: not a finite 2-D array of at least 8 x 8.
    """
    img = as_image(x, "image", min_size=8, dtype=np.float32)
    H, W = img.shape
    ys_all, xs_all, keys_all = [], [], []
    for s0 in range(0, H, strip_rows):
        s1 = min(H, s0 + strip_rows)
        a0, a1 = max(0, s0 - 2), min(H, s1 + 2)
        for sign in (1.0, -1.0):
            v = np.float32(sign) * img[a0:a1]
            cand = v == ndimage.maximum_filter(v, footprint=_FOOT, mode="nearest")
            cand[: s0 - a0 + (2 if s0 == 0 else 0)] = False  # halo rows / top image border
            cand[s1 - a0 - (2 if s1 == H else 0):] = False  # halo rows / bottom image border
            cand[:, :2] = False
            cand[:, -2:] = False
            if valid is not None:
                cand &= valid[a0:a1]
            ys, xs = np.nonzero(cand)
            if not len(ys):
                continue
            nb = np.stack([v[ys + dy, xs + dx] for dy, dx in _DISC], axis=1)
            c = v[ys, xs]
            strict = (nb < c[:, None]).all(axis=1)
            ys, xs, nb, c = ys[strict], xs[strict], nb[strict], c[strict]
            top = -np.sort(-nb, axis=1)[:, :2]
            ys_all.append(ys + a0)
            xs_all.append(xs)
            keys_all.append(np.column_stack([np.full(len(c), sign), c, top]).astype(np.float64))
    if not ys_all:
        e = np.zeros(0, np.int64)
        return ValueKeypoints(e, e.copy(), np.zeros((0, 4)))
    return ValueKeypoints(np.concatenate(ys_all).astype(np.int64),
                          np.concatenate(xs_all).astype(np.int64), np.concatenate(keys_all))


def match_keys(kp: ValueKeypoints, *, min_dist: int = 16, max_group: int = 4
               ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of keypoints with identical keys.

    Args:
        kp: keypoints.
        min_dist: smallest distance (max of |dy|, |dx|) between the two points.
        max_group: keys shared by more points than this are ignored (chance repeats).

    Returns:
        ``(i, j)``: int64 arrays of keypoint indices, ``i < j`` in the sort order.
    """
    n = len(kp.y)
    if n < 2:
        e = np.zeros(0, np.int64)
        return e, e.copy()
    order = np.lexsort(kp.keys.T[::-1])
    k = kp.keys[order]
    new = np.r_[True, np.any(k[1:] != k[:-1], axis=1)]
    starts = np.nonzero(new)[0]
    sizes = np.diff(np.r_[starts, n])
    ii, jj = [], []
    for g in range(2, max_group + 1):
        s = starts[sizes == g]
        for u in range(g):
            for w in range(u + 1, g):
                ii.append(order[s + u])
                jj.append(order[s + w])
    if not ii:
        e = np.zeros(0, np.int64)
        return e, e.copy()
    i, j = np.concatenate(ii), np.concatenate(jj)
    far = np.maximum(np.abs(kp.y[i] - kp.y[j]), np.abs(kp.x[i] - kp.x[j])) >= min_dist
    return i[far], j[far]


def _is_block_transform(a: np.ndarray, tol_deg: float = 2.0,
                        tol_scale: float = 0.02) -> np.ndarray:
    """bool per complex ``a``: a translation or exact quarter turn (block matching finds
    those; they are not reported here)."""
    ang = np.degrees(np.angle(a)) % 90.0
    return (np.abs(np.abs(a) - 1.0) <= tol_scale) & (np.minimum(ang, 90.0 - ang) <= tol_deg)


def _moving_matches(kp: Points, i: np.ndarray, j: np.ndarray, max_same: int
                    ) -> np.ndarray:
    """bool (M,): matches not explained by a translation, quarter turn or mirroring.

    For each of the 8 exact pixel transforms ``T`` (``p -> i^k p`` or ``i^k conj(p)``) and
    both directions of a match, the offset ``q - T(p)`` is the same for every match of one
    such copy; matches whose offset is shared by ``max_same`` matches are taken out.
    """
    zi = kp.x[i] + 1j * kp.y[i]
    zj = kp.x[j] + 1j * kp.y[j]
    block = np.zeros(len(i), bool)
    for k in range(4):
        rot = 1j ** k
        for mirror in (False, True):
            for src, dst in ((zi, zj), (zj, zi)):
                t = dst - rot * (np.conj(src) if mirror else src)
                tx, ty = np.rint(t.real).astype(np.int64), np.rint(t.imag).astype(np.int64)
                key = (tx - tx.min()) * (int(ty.max() - ty.min()) + 1) + (ty - ty.min())
                _, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
                block |= cnt[inv] >= max_same
    return ~block


def fit_similarities(kp: Points, i: np.ndarray, j: np.ndarray, *, tol: float = 1.5,
                     min_inliers: int = 20, max_models: int = 4, iters: int = 600,
                     radius: float = 160.0, neighbours: int = 32,
                     scale_range: tuple[float, float] = (0.5, 2.0),
                     max_same_shift: int = 8, block_transforms: bool = False,
                     seed: int = 0) -> list[SimilarityCopy]:
    """Similarity transforms shared by many keypoint matches (RANSAC, two-point samples).

    Args:
        kp: keypoints (:class:`ValueKeypoints`, or any :class:`Points` such as SIFT
            features); ``i``, ``j``: matched index pairs (:func:`match_keys`).
        tol: inlier distance in pixels.
        min_inliers: a model needs this many inlier matches.
        max_models: at most this many models are returned (strongest first).
        iters: samples per model search.
        radius: the second point of a sample is drawn among the ``neighbours`` nearest
            matches of the first within this distance.
        scale_range: allowed ``abs(a)``.
        max_same_shift: matches whose offset under a translation, quarter turn or mirroring
            is shared by this many matches belong to such a copy (block matching's job) and
            are left out.
        block_transforms: also fit and return translations and quarter turns (for
            features that survive interpolation or lossy compression, where block matching
            does not find such copies); the ``max_same_shift`` filter is then off.
        seed: seed of the sampler (results are deterministic for a seed).

    Returns:
        Models, most inliers first; translations and quarter turns are left out (block
        matching reports them) unless ``block_transforms``.
    """
    if len(i) < min_inliers:
        return []
    if not block_transforms:
        moving = _moving_matches(kp, i, j, max_same_shift)
        i, j = i[moving], j[moving]
    if len(i) < min_inliers:
        return []
    # both directions: a copy's matches may be listed source->copy or copy->source
    zp = np.r_[kp.x[i] + 1j * kp.y[i], kp.x[j] + 1j * kp.y[j]]
    zq = np.r_[kp.x[j] + 1j * kp.y[j], kp.x[i] + 1j * kp.y[i]]
    pair = np.r_[np.arange(len(i)), np.arange(len(i))]
    alive = np.ones(len(zp), bool)
    rng = np.random.default_rng(seed)
    out: list[SimilarityCopy] = []
    from scipy.spatial import cKDTree

    while len(out) < max_models and alive.sum() >= 2 * min_inliers:
        idx = np.nonzero(alive)[0]
        tree = cKDTree(np.column_stack([zp[idx].real, zp[idx].imag]))
        first = rng.integers(0, len(idx), iters)
        kn = min(neighbours, len(idx))
        dist, near = tree.query(np.column_stack([zp[idx[first]].real, zp[idx[first]].imag]),
                                k=kn, distance_upper_bound=radius)
        near = np.asarray(near).reshape(len(first), kn)
        pick = near[np.arange(len(first)), rng.integers(0, kn, len(first))]
        second = np.where(pick < len(idx), pick, first)  # beyond the radius: no sample
        p1, p2 = idx[first], idx[second]
        dp = zp[p2] - zp[p1]
        ok = np.abs(dp) >= 8
        a = np.where(ok, (zq[p2] - zq[p1]) / np.where(ok, dp, 1), 0)
        ok &= (np.abs(a) >= scale_range[0]) & (np.abs(a) <= scale_range[1])
        if not block_transforms:
            ok &= ~_is_block_transform(a)
        if not ok.any():
            break
        a, p1 = a[ok], p1[ok]
        b = zq[p1] - a * zp[p1]
        # inliers of every sampled model (chunked: models x alive matches)
        best_n, best_k = 0, -1
        zpi, zqi = zp[idx], zq[idx]
        step = max(1, _EVAL_ELEMENTS // len(idx))  # models per chunk: bounded memory
        for s in range(0, len(a), step):
            err = np.abs(a[s:s + step, None] * zpi[None, :] + b[s:s + step, None]
                         - zqi[None, :])
            cnt = (err <= tol).sum(axis=1)
            k = int(np.argmax(cnt))
            if cnt[k] > best_n:
                best_n, best_k = int(cnt[k]), s + k
            del err
        if best_n < min_inliers:
            break
        inl = idx[np.abs(a[best_k] * zp[idx] + b[best_k] - zq[idx]) <= tol]
        # least-squares refinement: q = a p + b over the inliers
        A = np.column_stack([zp[inl], np.ones(len(inl))])
        (ra, rb), *_ = np.linalg.lstsq(A, zq[inl], rcond=None)
        inl2 = idx[np.abs(ra * zp[idx] + rb - zq[idx]) <= tol]
        if len(inl2) >= len(inl):
            inl, a_best, b_best = inl2, complex(ra), complex(rb)
        else:
            a_best, b_best = complex(a[best_k]), complex(b[best_k])
        alive &= ~np.isin(pair, pair[inl])  # both directions of the used matches
        if not block_transforms and _is_block_transform(np.asarray(a_best)):
            continue
        out.append(SimilarityCopy(
            a=a_best, b=b_best, angle=float(np.degrees(np.angle(a_best))),
            scale=float(abs(a_best)),
            src=np.column_stack([zp[inl].imag, zp[inl].real]).round().astype(np.int64),
            dst=np.column_stack([zq[inl].imag, zq[inl].real]).round().astype(np.int64)))
    return out


def similarity_equal_map(x: np.ndarray, model: SimilarityCopy, *, margin: int = 24,
                         window: int = 9, valid: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Where the copy holds exactly the source's values, on both sides.

    For pixels ``q`` around the inlier keypoints of the copy side, the source pixel
    ``round((q - b) / a)`` is looked up; the share of exactly equal values in a ``window``
    square is the copy side's map. The source side gets the same map mapped back.

    Args:
        x: float (H, W) stored values.
        model: a found :class:`SimilarityCopy`.
        margin: pixels around the inliers' bounding box that are examined.
        window: side of the averaging square.
        valid: optional bool (H, W) of usable pixels (clipped areas repeat by chance).

    Returns:
        ``(dst_map, src_map)``: float32 (H, W) in [0, 1].
    """
    img = np.asarray(x, dtype=np.float64)
    H, W = img.shape
    dst = np.zeros((H, W), np.float32)
    src = np.zeros((H, W), np.float32)
    y0, y1, x0, x1 = model.dst_box((H, W), margin)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    zp = (xx + 1j * yy - model.b) / model.a
    sy, sx = np.rint(zp.imag).astype(np.int64), np.rint(zp.real).astype(np.int64)
    inside = (sy >= 0) & (sy < H) & (sx >= 0) & (sx < W)
    sy_c, sx_c = np.clip(sy, 0, H - 1), np.clip(sx, 0, W - 1)
    eq = inside & (img[y0:y1, x0:x1] == img[sy_c, sx_c])
    # a pixel and its own source are not a copy (the map's fixed point)
    eq &= (np.abs(sy - yy) + np.abs(sx - xx)) > 2
    if valid is not None:
        eq &= valid[y0:y1, x0:x1] & valid[sy_c, sx_c]
    share = ndimage.uniform_filter(eq.astype(np.float32), size=window)
    dst[y0:y1, x0:x1] = share
    hit = share >= 0.5
    np.maximum.at(src, (sy_c[hit & inside], sx_c[hit & inside]), share[hit & inside])
    src = ndimage.grey_closing(src, size=3)  # fill the pixels a down-scaled copy skipped
    return dst, src
