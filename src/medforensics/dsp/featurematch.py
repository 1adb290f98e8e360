"""Copies turned, scaled or re-compressed: local descriptors (SIFT) and a dense content check.

Block matching (:mod:`medforensics.dsp.blockmatch`) and exact-value keypoints
(:mod:`medforensics.dsp.valuematch`) need the copy's stored values - its noise - unchanged.
A copy resampled *with interpolation* (bilinear turning or scaling, the default of most
editors) or saved through JPEG after the edit keeps its *content* instead: the same bone
edges, vessels and corners, only smoothed, requantised and moved. This module finds copies
from that content:

1. **Features**: SIFT keypoints and descriptors (OpenCV) of an 8-bit rendering of the image
   (the caller windows stored values to 8 bits: the rendering is a detection aid, nothing is
   measured on it). Large images are processed in overlapping tiles, so memory stays bounded
   (one tile's scale space at a time).
2. **Matches within the image**: every descriptor's nearest neighbours (FLANN kd-trees,
   approximate); neighbours are accepted while the distance ratio of consecutive neighbours
   stays below ``ratio`` (the generalised 2-NN test), and only partners at least
   ``min_dist`` px away.
3. **Model**: a similarity ``q = a p + b`` by RANSAC with two-point samples among nearby
   matches (:func:`medforensics.dsp.valuematch.fit_similarities`).
4. **Dense check** (:func:`similarity_content_map`): the image's band-pass content (minus a
   Gaussian blur) is compared with the content at the model's source positions (bilinear
   look-up), as a local correlation in a square window. A copy correlates at 0.9-1.0 over its
   whole area; anatomy that merely looks alike (left and right ribs, repeated vessels)
   correlates along a few structures only. A model counts when enough pixels correlate.

Pure functions of arrays, no I/O.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType

import numpy as np
from scipy import ndimage

from medforensics.dsp.valuematch import SimilarityCopy
from medforensics.errors import InvalidArrayError

__all__ = ["Features", "sift_features", "match_features", "similarity_content_map"]


def _cv2() -> ModuleType:
    """OpenCV, with its thread pool sized like the rest of the process (``OMP_NUM_THREADS``,
    which :func:`medforensics.common.runtime.configure_threads` sets), not to every core."""
    import cv2

    n = os.environ.get("OMP_NUM_THREADS", "")
    if n.isdigit() and int(n) > 0 and cv2.getNumThreads() != int(n):
        cv2.setNumThreads(int(n))
    return cv2


@dataclass
class Features:
    """Keypoints and descriptors of one image.

    Attributes:
        y: float64 (K,) rows (sub-pixel).
        x: float64 (K,) columns.
        desc: float32 (K, 128) SIFT descriptors.
    """

    y: np.ndarray
    x: np.ndarray
    desc: np.ndarray


def sift_features(img8: np.ndarray, *, tile: int = 1024, overlap: int = 48,
                  max_features: int = 20000, contrast: float = 0.005) -> Features:
    """SIFT keypoints of an 8-bit image, tile by tile.

    Args:
        img8: uint8 (H, W).
        tile: tile side in pixels (the image is cut into tiles of about this size that
            overlap by ``overlap``; a keypoint is kept by the tile whose core holds it).
        overlap: overlap of neighbouring tiles in pixels.
        max_features: at most this many keypoints over the whole image (the strongest per
            tile, shared out by tile area).
        contrast: SIFT's contrast threshold (OpenCV default 0.04; radiographs are smooth and
            need a low one to give enough keypoints).

    Returns:
        :class:`Features` (possibly empty).

    Raises:
        InvalidArrayError: not a 2-D uint8 array.
    """
    cv2 = _cv2()

    a = np.asarray(img8)
    if a.ndim != 2 or a.dtype != np.uint8:
        raise InvalidArrayError(f"expected a 2-D uint8 image, got {a.dtype} {a.shape}")
    H, W = a.shape
    ny, nx = max(1, round(H / tile)), max(1, round(W / tile))
    ys = np.linspace(0, H, ny + 1).round().astype(int)
    xs = np.linspace(0, W, nx + 1).round().astype(int)
    yy: list[np.ndarray] = []
    xx: list[np.ndarray] = []
    dd: list[np.ndarray] = []
    for ty in range(ny):
        for tx in range(nx):
            y0, y1, x0, x1 = ys[ty], ys[ty + 1], xs[tx], xs[tx + 1]
            a0, a1 = max(y0 - overlap, 0), min(y1 + overlap, H)
            b0, b1 = max(x0 - overlap, 0), min(x1 + overlap, W)
            share = (y1 - y0) * (x1 - x0) / float(H * W)
            sift = cv2.SIFT_create(nfeatures=max(1, int(max_features * share)),
                                   contrastThreshold=contrast)
            kps, desc = sift.detectAndCompute(np.ascontiguousarray(a[a0:a1, b0:b1]), None)
            if desc is None or not len(kps):
                continue
            pts = np.array([k.pt for k in kps], np.float64)  # (x, y) in the tile
            py, px = pts[:, 1] + a0, pts[:, 0] + b0
            core = (py >= y0) & (py < y1) & (px >= x0) & (px < x1)
            yy.append(py[core])
            xx.append(px[core])
            dd.append(desc[core].astype(np.float32))
    if not yy:
        return Features(np.zeros(0), np.zeros(0), np.zeros((0, 128), np.float32))
    return Features(np.concatenate(yy), np.concatenate(xx), np.concatenate(dd))


def match_features(f: Features, *, ratio: float = 0.6, min_dist: float = 16.0, k: int = 4,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of keypoints of one image with near-identical descriptors.

    Args:
        f: the image's features.
        ratio: a neighbour is accepted while its descriptor distance is below ``ratio`` times
            the next neighbour's (generalised 2-NN test); the first rejection stops.
        min_dist: partners closer than this (px) are not matches.
        k: neighbours looked at per keypoint (the keypoint itself included).
        seed: seed of the kd-trees' random splits. FLANN draws them from OpenCV's global
            random generator, whose state otherwise depends on every earlier call in the
            process; it is re-seeded here (``cv2.setRNGSeed``) so that an image gives the
            same matches whatever was analysed before it.

    Returns:
        ``(i, j)``: int64 (M,) index pairs with ``i < j`` (each pair once).
    """
    cv2 = _cv2()

    n = len(f.y)
    e = np.zeros(0, np.int64)
    if n < 3:
        return e, e.copy()
    k = min(k, n)
    cv2.setRNGSeed(int(seed))
    flann = cv2.FlannBasedMatcher({"algorithm": 1, "trees": 4}, {"checks": 64})
    knn = flann.knnMatch(f.desc, f.desc, k=k)
    idx = np.full((n, k), -1, np.int64)
    dist = np.full((n, k), np.inf)
    for q, ms in enumerate(knn):
        for c, m in enumerate(ms[:k]):
            idx[q, c], dist[q, c] = m.trainIdx, m.distance
    # drop the keypoint itself (and duplicates at the same position), keep the order
    valid = idx >= 0
    safe = np.where(valid, idx, 0)
    drop = ~valid | (np.hypot(f.y[safe] - f.y[:, None], f.x[safe] - f.x[:, None]) < 1.0)
    order = np.argsort(drop, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, 1)
    dist = np.take_along_axis(dist, order, 1)
    keep = ~np.take_along_axis(drop, order, 1)
    ii, jj = [], []
    rows = np.arange(n)
    ok = np.ones(n, bool)
    for c in range(k - 1):  # accept neighbour c while d_c < ratio * d_(c+1)
        ok &= keep[:, c] & keep[:, c + 1] & (dist[:, c] < ratio * dist[:, c + 1])
        if not ok.any():
            break
        ii.append(rows[ok])
        jj.append(idx[ok, c])
    if not ii:
        return e, e.copy()
    i, j = np.concatenate(ii), np.concatenate(jj)
    far = np.hypot(f.y[i] - f.y[j], f.x[i] - f.x[j]) >= min_dist
    i, j = i[far], j[far]
    a, b = np.minimum(i, j), np.maximum(i, j)
    pairs = np.unique(np.column_stack([a, b]), axis=0) if len(a) else np.zeros((0, 2), np.int64)
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


def similarity_content_map(x: np.ndarray, model: SimilarityCopy, *, margin: int = 32,
                           window: int = 15, sigma: float = 3.0, min_shift: float = 16.0,
                           min_energy: float = 0.1, valid: np.ndarray | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Local correlation of the image's content with its content at the model's source.

    The content is ``x - gaussian(x, sigma)``; for pixels ``q`` around the inliers of the
    copy side, the content at ``(q - b) / a`` (bilinear) is correlated with the content at
    ``q`` over a ``window`` square. Pixels whose source is nearer than ``min_shift`` px
    (the model's fixed point) or whose window holds little content (standard deviation
    below ``min_energy`` times the median over the examined area: flat background) get 0.

    Args:
        x: float (H, W) image (stored values or 8-bit, any range).
        model: a :class:`medforensics.dsp.valuematch.SimilarityCopy` (``q = a p + b``).
        margin: pixels around the inliers' bounding box that are examined.
        window: side of the correlation square (odd).
        sigma: Gaussian blur subtracted to keep the content's fine structure.
        min_shift: see above.
        min_energy: see above.
        valid: optional bool (H, W) of usable pixels (both ends of a pair must be usable).

    Returns:
        ``(dst_map, src_map)``: float32 (H, W) correlations clipped to [0, 1] on the copy
        side, and the same values mapped back to the source side.
    """
    img = np.asarray(x, dtype=np.float64)
    H, W = img.shape
    dst = np.zeros((H, W), np.float32)
    src = np.zeros((H, W), np.float32)
    y0, y1, x0, x1 = model.dst_box((H, W), margin)
    if y1 - y0 < window or x1 - x0 < window:
        return dst, src
    yy, xx = np.mgrid[y0:y1, x0:x1]
    zp = (xx + 1j * yy - model.b) / model.a
    sy, sx = zp.imag, zp.real
    inside = (sy >= 0) & (sy <= H - 1) & (sx >= 0) & (sx <= W - 1)
    # content of the source area (crop with a margin for the blur and the bilinear look-up)
    pad = int(3 * sigma) + 2
    s0 = max(int(np.floor(sy[inside].min())) - pad, 0) if inside.any() else 0
    s1 = min(int(np.ceil(sy[inside].max())) + pad + 1, H) if inside.any() else 1
    t0 = max(int(np.floor(sx[inside].min())) - pad, 0) if inside.any() else 0
    t1 = min(int(np.ceil(sx[inside].max())) + pad + 1, W) if inside.any() else 1
    if not inside.any():
        return dst, src
    src_crop = img[s0:s1, t0:t1]
    src_c = src_crop - ndimage.gaussian_filter(src_crop, sigma)
    a0, a1 = max(y0 - pad, 0), min(y1 + pad, H)
    b0, b1 = max(x0 - pad, 0), min(x1 + pad, W)
    dst_crop = img[a0:a1, b0:b1]
    dst_c = (dst_crop - ndimage.gaussian_filter(dst_crop, sigma))[y0 - a0:y1 - a0, x0 - b0:x1 - b0]
    warped = ndimage.map_coordinates(src_c, [np.clip(sy, 0, H - 1) - s0,
                                             np.clip(sx, 0, W - 1) - t0], order=1,
                                     mode="nearest")
    f = lambda v: ndimage.uniform_filter(v, size=window)  # noqa: E731
    ma, mb = f(dst_c), f(warped)
    va = np.maximum(f(dst_c * dst_c) - ma * ma, 0.0)
    vb = np.maximum(f(warped * warped) - mb * mb, 0.0)
    cov = f(dst_c * warped) - ma * mb
    corr = cov / np.sqrt(np.maximum(va * vb, 1e-12))
    floor = min_energy * float(np.median(np.sqrt(va))) if va.size else 0.0
    ok = inside & (np.hypot(sy - yy, sx - xx) >= min_shift)
    ok &= (np.sqrt(va) > floor) & (np.sqrt(vb) > floor)
    if valid is not None:
        v = np.asarray(valid, bool)
        ok &= v[y0:y1, x0:x1] & v[np.clip(np.rint(sy), 0, H - 1).astype(np.int64),
                                  np.clip(np.rint(sx), 0, W - 1).astype(np.int64)]
    c = np.where(ok, np.clip(corr, 0.0, 1.0), 0.0).astype(np.float32)
    dst[y0:y1, x0:x1] = c
    hit = c >= 0.5
    ry = np.clip(np.rint(sy[hit]), 0, H - 1).astype(np.int64)
    rx = np.clip(np.rint(sx[hit]), 0, W - 1).astype(np.int64)
    np.maximum.at(src, (ry, rx), c[hit])
    src = ndimage.grey_closing(src, size=3)  # fill the pixels a down-scaled copy skipped
    return dst, src
