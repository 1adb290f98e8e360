"""Hard-edged paste seams: straight pixel-grid discontinuities that meet at right angles.

A block pasted with hard edges (cut from another image, another place of the same image, or
filled) puts two *unrelated* pixels side by side along its border. Across that border the
first difference ``|x[:, j + 1] - x[:, j]|`` carries the content mismatch of the two sources on
top of the noise, while the differences one or two columns further (inside either source) do
not. A real edge of the anatomy is blurred by the detector over two or more pixels and is not
aligned with the pixel grid over dozens of rows; a detector seam or a collimator edge runs
across the whole image, or has a clipped / flat side.

The functions here are pure NumPy / SciPy (no I/O, no logging):

* :func:`boundary_excess`: for every column boundary ``j`` (between columns ``j`` and
  ``j + 1``), the mean ``|dx|`` over a window of ``window`` rows minus the largest of the same
  mean at the four neighbouring boundaries (``j - 2 .. j + 2``), relative to their average;
  pixel pairs that touch a clipped or flat pixel (or lie within ``clip_margin`` of one) are
  left out of every mean, so a few clipped specks do not blank a whole window; 0 where too
  few pairs are left or a neighbouring boundary is noiseless (flat or clipped background). A
  hard seam scores ~ (mismatch / noise); noise alone stays below ~0.3 at 16 rows.
* :func:`straight_seams`: runs of ``excess > threshold`` along one boundary that are at least
  ``min_len`` long and at most ``max_frac`` of the image side (full-height lines are detector
  or stitching seams, not pastes).
* :func:`seam_boxes`: vertical and horizontal seams whose ends meet (within ``tol`` px) form
  corners; each corner implies a box (the pasted block); boxes of one block are merged and
  report how many of its four corners were seen.

Property: a block of independent content pasted with hard edges into an image is recovered
as one box whose edges are the block's edges (``tests/test_seams.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medforensics.dsp._checks import as_image

__all__ = ["Seam", "SeamBox", "boundary_excess", "straight_seams", "seam_boxes"]

#: rows per strip when computing the excess of large images (bounds the working memory)
STRIP_ROWS = 1024


@dataclass(frozen=True)
class Seam:
    """A straight seam along one pixel boundary.

    Attributes:
        axis: ``"v"`` - between columns ``pos`` and ``pos + 1``, rows ``start .. stop - 1``;
            ``"h"`` - between rows ``pos`` and ``pos + 1``, columns ``start .. stop - 1``.
        pos: index of the boundary (the pixel before it).
        start: first row (``v``) or column (``h``) of the run.
        stop: one past the last.
    """

    axis: str
    pos: int
    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class SeamBox:
    """A block bounded by paste seams.

    Attributes:
        box: ``(x0, y0, x1, y1)``, end-exclusive pixel coordinates of the block.
        corners: how many of its four corners were seen (1-4).
        side: over its corners, the longest of (the shorter of the two seams that meet
            there), in pixels.
    """

    box: tuple[int, int, int, int]
    corners: int
    side: int


def _noise_floor(x: np.ndarray) -> float:
    """Median of the non-zero ``|dx|`` on every 4th row (the image's typical step)."""
    d = np.abs(np.diff(x[::4], axis=1))
    nz = d[d > 0]
    return float(np.median(nz)) if nz.size else 1.0


def _excess_strip(x: np.ndarray, lo: float, hi: float, window: int, floor: float,
                  min_noise: float, clip_margin: int, min_valid: float) -> np.ndarray:
    # clipped or flat pixels (at the image's extremes, or a constant 3 x 3 neighbourhood):
    # a step next to them is the edge of a background / graphic, not between two sources
    flat = ndimage.maximum_filter(x, size=3) == ndimage.minimum_filter(x, size=3)
    bad = (x <= lo) | (x >= hi) | flat
    if clip_margin > 0:
        bad = ndimage.maximum_filter(bad, size=2 * clip_margin + 1)
    usable = ~(bad[:, 1:] | bad[:, :-1])
    d = np.abs(np.diff(x, axis=1)).astype(np.float32) * usable
    share = ndimage.uniform_filter1d(usable.astype(np.float32), window, axis=0, mode="nearest")
    m = (ndimage.uniform_filter1d(d, window, axis=0, mode="nearest")
         / np.maximum(share, np.float32(1e-6)))
    pad = np.pad(m, ((0, 0), (2, 2)), mode="edge")
    l2, l1, r1, r2 = pad[:, :-4], pad[:, 1:-3], pad[:, 3:-1], pad[:, 4:]
    nb_max = np.maximum(np.maximum(l1, l2), np.maximum(r1, r2))
    nb_mean = (l1 + l2 + r1 + r2) / np.float32(4)
    least = ndimage.minimum_filter1d(share, 5, axis=1, mode="nearest")
    valid = (np.minimum(l1, r1) >= min_noise * floor) & (least >= min_valid)
    out = (m - nb_max) / np.maximum(nb_mean, np.float32(1e-9))
    out[~valid] = 0.0
    return out


def boundary_excess(x: np.ndarray, *, window: int = 16, min_noise: float = 0.3,
                    clip_values: tuple[float, float] | None = None, clip_margin: int = 1,
                    min_valid: float = 0.3) -> np.ndarray:
    """Relative excess of the step across every column boundary (vertical seams).

    Args:
        x: float (H, W) image, H and W >= 8.
        window: rows averaged per position (odd or even, >= 2).
        min_noise: a boundary counts only where the mean ``|dx|`` at both adjacent boundaries
            is at least ``min_noise`` x the image's median non-zero step (flat or clipped
            areas have no noise to compare with).
        clip_values: (low, high) values treated as clipped; default the image's min and max.
            Pixels of a constant 3 x 3 neighbourhood count as clipped as well (a background
            or graphic whose value is no longer the image's extreme after an edit).
        clip_margin: a pixel pair is left out of the means when a clipped pixel lies within
            this many pixels of either of its pixels (the skin line or collimator edge next
            to a clipped background).
        min_valid: a boundary scores only where, at it and at its four neighbouring
            boundaries, at least this share of the window's pairs is left (a window of
            mostly clipped or flat pixels has nothing to compare).

    Returns:
        float32 (H, W - 1): ``(m_j - max(m_{j-2}, m_{j-1}, m_{j+1}, m_{j+2})) / mean(...)``
        with ``m`` the windowed mean ``|dx|``; 0 where not valid. Transpose ``x`` for
        horizontal seams.

    Raises:
        InvalidArrayError: not a finite 2-D array of at least 8 x 8.
    """
    a = as_image(x, "image", min_size=8, dtype=np.float32)
    if window < 2:
        raise ValueError("window must be >= 2")
    lo, hi = (float(a.min()), float(a.max())) if clip_values is None else clip_values
    floor = _noise_floor(a)
    h = a.shape[0]
    out = np.empty((h, a.shape[1] - 1), np.float32)
    halo = window // 2 + int(clip_margin) + 2
    for s in range(0, h, STRIP_ROWS):
        e = min(h, s + STRIP_ROWS)
        s0, e0 = max(0, s - halo), min(h, e + halo)
        out[s:e] = _excess_strip(a[s0:e0], lo, hi, window, floor, min_noise, int(clip_margin),
                                 float(min_valid))[s - s0:e - s0]
    return out


def straight_seams(excess: np.ndarray, *, axis: str = "v", threshold: float = 0.5,
                   min_len: int = 24, max_frac: float = 0.6, max_gap: int = 0,
                   max_pieces: int = 3) -> list[Seam]:
    """Runs of ``excess > threshold`` along single boundaries.

    Args:
        excess: float (N, B) from :func:`boundary_excess` (N positions along the boundary,
            B boundaries).
        axis: label of the seams (``"v"`` for ``boundary_excess(x)``, ``"h"`` for
            ``boundary_excess(x.T)``).
        threshold: relative excess a position needs.
        min_len: shortest run kept, in pixels.
        max_frac: longest run kept, as a fraction of N.
        max_gap: runs on one boundary separated by at most this many positions are joined
            (a seam fades where the two sources happen to agree).
        max_pieces: a boundary with this many runs of at least ``min_len / 2`` is a line
            artefact of the detector or of the anatomy model (a panel or tile seam that the
            content hides in places), not the edge of one block: none of its runs is kept.

    Returns:
        Seams, longest first.
    """
    e = np.asarray(excess)
    lab, _ = ndimage.label(e > threshold, structure=[[0, 1, 0], [0, 1, 0], [0, 1, 0]])
    runs: dict[int, list[list[int]]] = {}
    for sl in ndimage.find_objects(lab):
        if sl is not None:
            runs.setdefault(int(sl[1].start), []).append([int(sl[0].start), int(sl[0].stop)])
    out = []
    for pos, rs in runs.items():
        if sum(b - a >= min_len / 2 for a, b in rs) >= max_pieces:
            continue
        rs.sort()
        merged = [rs[0]]
        for a, b in rs[1:]:
            if a - merged[-1][1] <= max_gap:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        out += [Seam(axis, pos, a, b) for a, b in merged
                if min_len <= b - a <= max_frac * e.shape[0]]
    out.sort(key=lambda s: -s.length)
    return out


def _corner_box(v: Seam, h: Seam, trim: int) -> tuple[tuple[int, int, int, int], tuple[str, str]]:
    """Box implied by a vertical and a horizontal seam meeting at a corner."""
    top = abs(h.pos - v.start) <= abs(h.pos - v.stop)
    left = abs(v.pos - h.start) <= abs(v.pos - h.stop)
    y0, y1 = (h.pos + 1, v.stop - trim) if top else (v.start + trim, h.pos + 1)
    x0, x1 = (v.pos + 1, h.stop - trim) if left else (h.start + trim, v.pos + 1)
    return (x0, y0, x1, y1), ("x0" if left else "x1", "y0" if top else "y1")


def _same_block(a: tuple, b: tuple) -> bool:
    """Whether two corner boxes belong to one block: they overlap by half (IoU), or share an
    exact edge and the smaller one lies mostly inside the other."""
    (ba, ea, _, _), (bb, eb, _, _) = a, b
    ix = max(0, min(ba[2], bb[2]) - max(ba[0], bb[0]))
    iy = max(0, min(ba[3], bb[3]) - max(ba[1], bb[1]))
    inter = ix * iy
    area_a = (ba[2] - ba[0]) * (ba[3] - ba[1])
    area_b = (bb[2] - bb[0]) * (bb[3] - bb[1])
    if inter >= 0.5 * (area_a + area_b - inter):
        return True
    keys = ("x0", "y0", "x1", "y1")
    shared = any(k in ea and k in eb and abs(ba[i] - bb[i]) <= 1 for i, k in enumerate(keys))
    return shared and inter >= 0.5 * min(area_a, area_b)


def seam_boxes(vertical: list[Seam], horizontal: list[Seam], *, tol: int = 16,
               trim: int = 4, max_seams: int = 500) -> list[SeamBox]:
    """Blocks outlined by seams that meet at right angles.

    Args:
        vertical: seams with ``axis="v"``.
        horizontal: seams with ``axis="h"``.
        tol: how far (px) a seam's end may lie from the other seam's line (a seam found with
            a ``window``-row mean is smeared by up to ``window / 2`` past its true end, and
            may stop short where the two sources agree).
        trim: pixels taken off a box edge that is known only from a seam's (window-smeared)
            far end; edges at a corner are exact.
        max_seams: only the longest this many seams of each direction are paired.

    Returns:
        Boxes, most corners first, then longest shortest side.
    """
    raw = []
    for v in vertical[:max_seams]:
        for h in horizontal[:max_seams]:
            if (min(abs(h.pos - v.start), abs(h.pos - v.stop)) <= tol
                    and min(abs(v.pos - h.start), abs(v.pos - h.stop)) <= tol):
                box, exact = _corner_box(v, h, trim)
                if box[2] - box[0] >= 8 and box[3] - box[1] >= 8:
                    raw.append((box, exact, (v.pos, h.pos), min(v.length, h.length)))
    groups: list[list[tuple]] = []
    for item in sorted(raw, key=lambda r: -r[3]):
        for g in groups:
            if any(_same_block(m, item) for m in g):
                g.append(item)
                break
        else:
            groups.append([item])
    out = []
    for g in groups:
        edges: dict[str, tuple[list[int], list[int]]] = {
            k: ([], []) for k in ("x0", "y0", "x1", "y1")}
        for box, exact, _, _ in g:
            for k, val in zip(("x0", "y0", "x1", "y1"), box):
                edges[k][0 if k in exact else 1].append(val)
        coords = tuple(int(np.median(ex if ex else est)) for ex, est in
                       (edges[k] for k in ("x0", "y0", "x1", "y1")))
        corners = len({exact for _, exact, _, _ in g})
        out.append(SeamBox(coords, corners, int(max(r[3] for r in g))))  # type: ignore[arg-type]
    out.sort(key=lambda b: (-b.corners, -b.side))
    return out
