"""Flagged regions of a forgery map, described for people: where, how large, which cue.

A per-pixel map answers "where"; an analyst also wants a short list: "a 96 x 80 px area at
(412, 233), 0.6 % of the image, flagged by the copy-move cue, a copy of the area at
(120, 540) turned by 90 degrees". :func:`describe_regions` turns a probability map, the cue
maps and the copy-move matches into that list (pure NumPy / SciPy, no I/O).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from medforensics.errors import InvalidArrayError

#: role of a copy-move area whose pasted side could not be told
UNDETERMINED = "undetermined"

__all__ = ["describe_regions", "overlap_share"]

Box = tuple[int, int, int, int]


def overlap_share(a: Box, b: Box) -> float:
    """Intersection area over the area of ``a`` (boxes ``(x0, y0, x1, y1)``, ends exclusive)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / max((a[2] - a[0]) * (a[3] - a[1]), 1)


def _copy_partner(box: Box, copies: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The copy-move match whose side ``a`` or ``b`` overlaps ``box`` most (>= 25 %)."""
    best: tuple[float, dict[str, Any]] | None = None
    for c in copies:
        ba, bb = c.get("bbox_a"), c.get("bbox_b")
        for mine, other in ((ba, bb), (bb, ba)):
            if mine is None or other is None:
                continue
            ov = overlap_share(box, tuple(mine))
            if ov >= 0.25 and (best is None or ov > best[0]):
                side = "a" if mine is ba else "b"
                role = ("pasted copy" if c.get("target_side") == side else
                        "source" if c.get("target_side") else UNDETERMINED)
                best = (ov, {"partner_bbox": list(other), "transform": c.get("transform",
                                                                             "identity"),
                             "shift": c.get("shift"), "role": role,
                             "method": c.get("method", "blocks"),
                             "cue": c.get("cue") or None,
                             "evidence": c.get("direction_evidence") or None})
    return None if best is None else best[1]


def describe_regions(
    prob_map: np.ndarray,
    cue_maps: Mapping[str, np.ndarray] | None = None,
    *,
    threshold: float = 0.5,
    min_area: int = 16,
    max_regions: int = 20,
    copies: Sequence[Mapping[str, Any]] = (),
    lattice_boxes: Sequence[Sequence[int]] = (),
) -> list[dict[str, Any]]:
    """Connected areas of ``prob_map >= threshold``, largest first.

    Args:
        prob_map: float (H, W) forgery probability in [0, 1].
        cue_maps: optional per-cue float (H, W) maps (each 0.5 at its own decision point);
            the cue with the highest mean inside an area is named as its ``cue``.
        threshold: map threshold (the detector's ``map_threshold``).
        min_area: areas smaller than this many pixels are not listed (the detector's
            forged-area percentage still counts them).
        max_regions: at most this many areas are described.
        copies: copy-move matches (``CopyMoveResult.regions``: ``bbox_a``, ``bbox_b``,
            ``transform``, ``shift``, ``target_side``); an area overlapping one side gets a
            ``copy_of`` entry: ``partner_bbox`` (the other side), ``transform``, ``shift`` and
            ``role`` of this area (``"pasted copy"``, ``"source"``, or ``"undetermined"``
            when no evidence tells the two apart), ``cue`` (the evidence that named it) and
            ``evidence`` (why, in words).
        lattice_boxes: ``(x0, y0, x1, y1)`` boxes of coarse value-lattice blocks (the texture
            cue's ``coarse_boxes``); an area overlapping one gets ``coarse_lattice: True``
            (its values were scaled up from fewer grey levels and rounded).

    Returns:
        List of dicts: ``bbox`` ``[x0, y0, x1, y1]`` (ends exclusive), ``area_px``,
        ``area_percent`` (of the image), ``mean_prob``, ``max_prob``, ``cue`` (or None),
        ``cue_means`` (per cue), ``copy_of`` when a copy-move match covers the area and
        ``coarse_lattice`` when a coarse-lattice box overlaps it.

    Raises:
        InvalidArrayError: ``prob_map`` not 2-D, or a cue map of another shape.
    """
    p = np.asarray(prob_map, dtype=np.float32)
    if p.ndim != 2:
        raise InvalidArrayError(f"prob_map must be 2-D, got shape {p.shape}")
    cues = dict(cue_maps or {})
    for name, m in cues.items():
        if np.shape(m) != p.shape:
            raise InvalidArrayError(f"cue map {name!r} has shape {np.shape(m)}, map {p.shape}")
    lbl, n = ndimage.label(p >= threshold, structure=np.ones((3, 3), bool))
    if n == 0:
        return []
    area = np.bincount(lbl.ravel(), minlength=n + 1)
    order = [int(i) for i in np.argsort(-area[1:], kind="stable") + 1 if area[i] >= min_area]
    slices = ndimage.find_objects(lbl)
    out: list[dict[str, Any]] = []
    total = float(p.size)
    for i in order[:max_regions]:
        sl = slices[i - 1]
        inside = lbl[sl] == i
        vals = p[sl][inside]
        box: Box = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
        means = {name: float(np.asarray(m, dtype=np.float32)[sl][inside].mean())
                 for name, m in cues.items()}
        rec: dict[str, Any] = {
            "bbox": list(box),
            "area_px": int(area[i]),
            "area_percent": 100.0 * float(area[i]) / total,
            "mean_prob": float(vals.mean()),
            "max_prob": float(vals.max()),
            "cue": max(means, key=means.__getitem__) if means else None,
            "cue_means": means,
        }
        partner = _copy_partner(box, copies)
        if partner is not None:
            rec["copy_of"] = partner
        if any(overlap_share(box, tuple(b)) > 0 for b in lattice_boxes):
            rec["coarse_lattice"] = True
        out.append(rec)
    return out
