"""Which side of a copy-move was pasted - claimed only with evidence.

A copy-move match gives two areas with the same content; it does not say which of them was
there first. Naming the wrong one accuses the untouched area, so the direction is stated only
when a measurement tells the two apart, and is ``undetermined`` otherwise:

* **border seam** (:func:`border_steps`): a block pasted with hard edges puts two unrelated
  pixels side by side along its border, so the first difference across that border is far
  above the differences one or two pixels to either side (the test of
  :mod:`medforensics.dsp.seams`, averaged over a whole edge of the area and searched a few
  pixels around the matched box). The source sits in its own, continuous surroundings: none
  of its measurable edges shows such a step. The paste is named when one area has an edge at
  :data:`SEAM_STRONG` or more and every measurable edge of the other stays below
  :data:`SEAM_QUIET`. Edges at the image border, along clipped or flat pixels, or inside the
  partner area are not measured.
* **paste seam** (:func:`medforensics.forgery.cues.seam.seam_cue`): a seam box - straight seams
  meeting at right angles - that covers most of one area and little of the other.
* **interpolation** (copies matched by content only): a copy resampled with interpolation
  carries averaged, quieter noise than its source at the same content
  (``smoothing_log_ratio`` of :func:`medforensics.forgery.cues.copymove.detect_copy_move`).

Items of evidence that point to different areas cancel: the pair stays ``undetermined``. A
clone pasted into a place whose surroundings continue it (same intensity, same noise, no
step at its border) therefore stays undetermined; so does a paste whose edges were feathered
(no step is left to measure). The residual energy in a band around each area is not used as
evidence: it compares two different surroundings, whose noise differs with their intensity.

The thresholds and the share of pairs for which a direction is claimed, with how often it is
right, are measured in ``bench/forgery_independent.py`` (see docs/forgery.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medforensics.forgery.regions import UNDETERMINED, overlap_share

__all__ = [
    "SEAM_QUIET",
    "SEAM_STRONG",
    "SMOOTH_MARGIN",
    "UNDETERMINED",
    "apply_direction",
    "border_steps",
    "decide_direction",
    "pair_summary",
]

#: an edge whose step is this many times above its neighbours' (relative excess) is a seam
SEAM_STRONG = 2.0
#: every measurable edge of the other area must stay below this relative excess
SEAM_QUIET = 1.0
#: |log ratio| of the two areas' residual energies that names the quieter one interpolated
SMOOTH_MARGIN = 0.3

Box = tuple[int, int, int, int]


def _edge_excess(x: np.ndarray, pos: int, a: int, b: int, lo: float, hi: float,
                 search: int, min_len: int, blocked: np.ndarray | None) -> float | None:
    """Largest relative step excess at boundaries ``pos - 1 - search .. pos - 1 + search``
    (between columns ``j`` and ``j + 1``) over rows ``a .. b - 1`` of ``x``; None when the
    edge cannot be measured."""
    n = x.shape[1]
    j0, j1 = pos - 1 - search - 2, pos - 1 + search + 2  # diff indices needed
    a, b = max(a, 0), min(b, x.shape[0])
    if j0 < 0 or j1 + 1 >= n or b - a < min_len:
        return None
    strip = x[a:b, j0:j1 + 2].astype(np.float64)
    rows = ~(((strip <= lo) | (strip >= hi)).any(axis=1))
    if blocked is not None:
        rows &= ~blocked[a:b, j0:j1 + 2].any(axis=1)
    if int(rows.sum()) < min_len:
        return None
    d = np.abs(np.diff(strip[rows], axis=1))
    flat_rows = (d == 0).mean(axis=1) > 0.5  # constant runs: a graphic, not noise
    if int((~flat_rows).sum()) < min_len:
        return None
    m = d[~flat_rows].mean(axis=0)  # m[k]: boundary j0 + k
    best: float | None = None
    for k in range(2, len(m) - 2):
        nb = (m[k - 2], m[k - 1], m[k + 1], m[k + 2])
        mean = sum(nb) / 4.0
        if mean <= 0:
            continue
        e = (m[k] - max(nb)) / mean
        best = e if best is None else max(best, e)
    return best


def border_steps(img: np.ndarray, box: Sequence[int], *, partner: Sequence[int] | None = None,
                 search: int = 5, min_len: int = 24, margin: int = 8
                 ) -> list[float | None]:
    """Relative step excess along the four edges of ``box`` (left, right, top, bottom).

    Args:
        img: float (H, W) stored values.
        box: ``(x0, y0, x1, y1)``, ends exclusive.
        partner: the other area of the pair; boundaries within ``margin`` px of it are not
            measured (a paste next to its source shares a border with it).
        search: the step is searched this many pixels either side of the box edge (the
            matched box can be a few pixels off the paste's true edge).
        min_len: fewest usable rows / columns an edge needs.
        margin: see ``partner``.

    Returns:
        Four values, None for an edge that cannot be measured (at the image border, along
        clipped or flat pixels, next to the partner, or too short).
    """
    x = np.asarray(img)
    H, W = x.shape
    lo, hi = float(x.min()), float(x.max())
    blocked = None
    if partner is not None:
        blocked = np.zeros((H, W), bool)
        px0, py0, px1, py1 = (int(v) for v in partner)
        blocked[max(py0 - margin, 0):max(py1 + margin, 0),
                max(px0 - margin, 0):max(px1 + margin, 0)] = True
    x0, y0, x1, y1 = (int(v) for v in box)
    out = [
        _edge_excess(x, x0, y0, y1, lo, hi, search, min_len, blocked),
        _edge_excess(x, x1, y0, y1, lo, hi, search, min_len, blocked),
        _edge_excess(x.T, y0, x0, x1, lo, hi, search, min_len,
                     None if blocked is None else blocked.T),
        _edge_excess(x.T, y1, x0, x1, lo, hi, search, min_len,
                     None if blocked is None else blocked.T),
    ]
    return [None if v is None else float(v) for v in out]


def _seam_side(ea: list[float | None], eb: list[float | None]) -> str:
    """``"a"`` / ``"b"``: the side with a strong border seam while the other has measurable,
    quiet edges only; ``""`` otherwise."""
    va = [v for v in ea if v is not None]
    vb = [v for v in eb if v is not None]
    if not va or not vb:
        return ""
    if max(vb) >= SEAM_STRONG and max(va) < SEAM_QUIET:
        return "b"
    if max(va) >= SEAM_STRONG and max(vb) < SEAM_QUIET:
        return "a"
    return ""


def _box_side(a: Box | None, b: Box | None, boxes: Sequence[Any], *, min_cover: float = 0.6,
              max_other: float = 0.2) -> str:
    """The side a paste-seam box covers (>= ``min_cover``) while covering little of the other."""
    for sb in boxes:
        sbox = tuple(getattr(sb, "box", sb))
        ca = 0.0 if a is None else overlap_share(tuple(a), sbox)
        cb = 0.0 if b is None else overlap_share(tuple(b), sbox)
        if max(ca, cb) >= min_cover and min(ca, cb) <= max_other:
            return "a" if ca > cb else "b"
    return ""


def _fmt_edges(e: list[float | None]) -> str:
    vals = [v for v in e if v is not None]
    if not vals:
        return "no measurable edge"
    return f"{len(vals)} measurable edge(s), strongest step {max(vals):.1f} x"


def decide_direction(img: np.ndarray, reg: Mapping[str, Any], *,
                     paste_boxes: Sequence[Any] = ()) -> dict[str, Any]:
    """The pasted side of one copy-move pair, or ``undetermined``.

    Args:
        img: float (H, W) stored values (lossless; on lossy inputs call nothing here).
        reg: a copy-move region (``bbox_a``, ``bbox_b``, optionally ``smoothing_log_ratio``).
        paste_boxes: seam boxes of :func:`medforensics.forgery.cues.seam.seam_cue` (objects with
            ``box`` or ``(x0, y0, x1, y1)`` tuples).

    Returns:
        ``{"target_side": "a" | "b" | "", "cue": names of the agreeing evidence joined by
        " + " (or ""), "evidence": text, "border_steps": {"a": [...], "b": [...]}}``.
    """
    a, b = reg.get("bbox_a"), reg.get("bbox_b")
    items: list[tuple[str, str, str]] = []  # (side, cue, text)
    steps: dict[str, list[float | None]] = {"a": [], "b": []}
    if a is not None and b is not None:
        ea = border_steps(img, a, partner=b)
        eb = border_steps(img, b, partner=a)
        steps = {"a": ea, "b": eb}
        side = _seam_side(ea, eb)
        if side:
            pasted, other = (eb, ea) if side == "b" else (ea, eb)
            items.append((side, "border seam",
                          f"hard step along the border of the pasted area ({_fmt_edges(pasted)} "
                          f"its neighbours'), none along its partner's ({_fmt_edges(other)})"))
    side = _box_side(a, b, paste_boxes)
    if side:
        items.append((side, "paste seam", "straight seams meeting at right angles outline the "
                                          "pasted area, not its partner"))
    lr = reg.get("smoothing_log_ratio")
    if lr is not None and abs(float(lr)) > SMOOTH_MARGIN:
        side = "b" if float(lr) < 0 else "a"
        items.append((side, "interpolation",
                      f"the pasted area's noise is {np.exp(-abs(float(lr))):.2f} x the energy of "
                      "its partner's at the same content (averaged by interpolation)"))
    sides = {s for s, _, _ in items}
    if len(sides) == 1:
        return {"target_side": items[0][0], "cue": " + ".join(c for _, c, _ in items),
                "evidence": "; ".join(t for _, _, t in items), "border_steps": steps}
    if len(sides) > 1:
        why = ("the evidence disagrees: " + "; ".join(f"{c} names area {s}" for s, c, _ in items))
    else:
        why = ("no evidence tells the two areas apart (no hard step along either border, no "
               "paste seam, no interpolated noise): either could be the paste")
    return {"target_side": "", "cue": "", "evidence": why, "border_steps": steps}


def apply_direction(copy_map: np.ndarray, reg: dict[str, Any], decision: Mapping[str, Any], *,
                    source_weight: float = 0.35, margin: int = 8) -> None:
    """Record ``decision`` in ``reg`` and down-weight the source area of ``copy_map`` (in place).

    ``reg`` gets ``target_side``, ``decided``, ``cue``, ``direction`` (``"a->b"`` when area
    ``b`` is the paste, ``"b->a"``, or :data:`UNDETERMINED`) and ``direction_evidence``. When
    decided, the source box grown by ``margin`` (the fringe of its correlation map), outside
    the pasted box, is multiplied by ``source_weight``; undecided pairs keep both areas at
    full level.
    """
    side = decision.get("target_side") or ""
    reg.update(target_side=side, decided=bool(side), cue=decision.get("cue") or "",
               direction={"b": "a->b", "a": "b->a"}.get(side, UNDETERMINED),
               direction_evidence=decision.get("evidence") or "",
               border_steps=decision.get("border_steps") or {})
    if not side or source_weight == 1.0:
        return
    src, dst = (reg.get("bbox_a"), reg.get("bbox_b")) if side == "b" else (
        reg.get("bbox_b"), reg.get("bbox_a"))
    if src is None:
        return
    H, W = copy_map.shape
    x0, y0 = max(int(src[0]) - margin, 0), max(int(src[1]) - margin, 0)
    x1, y1 = min(int(src[2]) + margin, W), min(int(src[3]) + margin, H)
    view = copy_map[y0:y1, x0:x1]
    keep = np.zeros(view.shape, bool)
    if dst is not None:
        dx0, dy0, dx1, dy1 = (int(v) for v in dst)
        keep[max(dy0 - y0, 0):max(dy1 - y0, 0), max(dx0 - x0, 0):max(dx1 - x0, 0)] = True
    view[~keep] *= np.float32(source_weight)


def pair_summary(reg: Mapping[str, Any]) -> dict[str, Any]:
    """One copy-move pair for the detector's JSON: both boxes, the transform, ``direction``,
    ``pasted_bbox`` / ``source_bbox`` (None when undetermined) and ``evidence``."""
    side = reg.get("target_side") or ""
    a, b = reg.get("bbox_a"), reg.get("bbox_b")
    pasted, source = (b, a) if side == "b" else (a, b) if side == "a" else (None, None)
    return {
        "bbox_a": None if a is None else [int(v) for v in a],
        "bbox_b": None if b is None else [int(v) for v in b],
        "transform": reg.get("transform", "identity"),
        "shift": None if reg.get("shift") is None else [int(v) for v in reg["shift"]],
        "method": reg.get("method", "blocks"),
        "direction": reg.get("direction") or ({"b": "a->b", "a": "b->a"}.get(side)
                                              or UNDETERMINED),
        "pasted_bbox": None if pasted is None else [int(v) for v in pasted],
        "source_bbox": None if source is None else [int(v) for v in source],
        "evidence": reg.get("direction_evidence") or None,
        "cue": reg.get("cue") or None,
    }
