"""Marks for the flagged areas on a forgery overlay, and a legend that explains them.

The heat map says how suspect each pixel is; a reader of the report also needs to find the
areas the report lists and see which copy went where. :func:`annotate_regions` draws on the
display copy (an RGB overlay from :func:`medforensics.report.images.overlay_rgb`):

* every flagged area (``ForgeryResult.regions``) as a box numbered like the report's list of
  flagged areas, with the cue that flagged it;
* every copy-move pair: an arrow from the source to the pasted copy when the direction is
  known (source box dashed), or both boxes dashed with a dashed line marked "?" between them
  when it is not;

and appends a legend strip below the image, so the legend never covers anatomy. Coordinates
in ``regions`` are stored-pixel coordinates ``(x0, y0, x1, y1)``, ends exclusive; ``scale``
maps them onto the display copy. Marks are for people to look at, never for analysis.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from medforensics.errors import InvalidArrayError

__all__ = ["AREA_COLOUR", "COPY_COLOUR", "UNDETERMINED_COLOUR", "CopyPair", "annotate_regions",
           "copy_pairs", "legend_entries", "region_label"]

Box = tuple[int, int, int, int]
RGB = tuple[int, int, int]

#: flagged area box (cyan: apart from the red-to-yellow heat map and from grey anatomy)
AREA_COLOUR: RGB = (0, 210, 255)
#: copy-move with a known direction: source box and arrow to the pasted copy
COPY_COLOUR: RGB = (40, 255, 110)
#: copy-move whose pasted side is not known
UNDETERMINED_COLOUR: RGB = (255, 70, 255)
_LABEL_BACKGROUND: RGB = (0, 0, 0)
_LEGEND_BACKGROUND: RGB = (24, 24, 24)
_LEGEND_TEXT: RGB = (235, 235, 235)


@dataclass(frozen=True)
class CopyPair:
    """One copy-move pair to draw: ``source`` and ``pasted`` boxes when the direction is known,
    else two boxes ``a`` and ``b`` either of which could be the paste."""

    a: Box
    b: Box
    determined: bool

    @property
    def source(self) -> Box:
        """The copied-from box (``a``) of a pair with a known direction."""
        return self.a

    @property
    def pasted(self) -> Box:
        """The pasted box (``b``) of a pair with a known direction."""
        return self.b


def _box(value: Any) -> Box | None:
    if value is None:
        return None
    try:
        x0, y0, x1, y1 = (int(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def region_label(index: int, region: Mapping[str, Any]) -> str:
    """The tag drawn beside a flagged area: its number in the report's list and its cue.

    Args:
        index: 1-based position of the area in ``regions`` (the report numbers them alike).
        region: one entry of ``ForgeryResult.regions``.
    """
    cue = region.get("cue")
    return f"{index} {cue}" if cue else str(index)


def copy_pairs(regions: Sequence[Mapping[str, Any]],
               copy_moves: Sequence[Mapping[str, Any]] = ()) -> list[CopyPair]:
    """Every copy-move pair, once, from the detector's pairs and the areas' ``copy_of`` entries.

    ``copy_moves`` (``ForgeryResult.copy_moves``) name ``pasted_bbox`` / ``source_bbox`` when
    the direction is known and ``bbox_a`` / ``bbox_b`` always; a region's ``copy_of`` names its
    ``partner_bbox`` and this area's ``role`` (``"pasted copy"``, ``"source"`` or
    ``"undetermined"``). Results passed through JSON may carry either, so both are read.

    Returns:
        Pairs in first-seen order; a pair seen twice (from both sides) is kept once.
    """
    out: list[CopyPair] = []
    seen: set[frozenset[Box]] = set()

    def add(a: Box | None, b: Box | None, determined: bool) -> None:
        if a is None or b is None or a == b:
            return
        key = frozenset((a, b))
        if key in seen:
            return
        seen.add(key)
        out.append(CopyPair(a, b, determined))

    for c in copy_moves:
        pasted, source = _box(c.get("pasted_bbox")), _box(c.get("source_bbox"))
        if pasted is not None and source is not None:
            add(source, pasted, True)
        else:
            add(_box(c.get("bbox_a")), _box(c.get("bbox_b")), False)
    for r in regions:
        cp = r.get("copy_of")
        if not isinstance(cp, Mapping):
            continue
        mine, partner = _box(r.get("bbox")), _box(cp.get("partner_bbox"))
        role = cp.get("role")
        if role == "pasted copy":
            add(partner, mine, True)
        elif role == "source":
            add(mine, partner, True)
        else:
            add(mine, partner, False)
    return out


def legend_entries(regions: Sequence[Mapping[str, Any]], pairs: Sequence[CopyPair], *,
                   heat: bool = True) -> list[str]:
    """The legend's lines, one per kind of mark present (the heat scale first, when shown)."""
    lines = ["forgery probability 0 to 1 (more opaque when higher)"] if heat else []
    if regions:
        lines.append("flagged area: number in the list of flagged areas, cue")
    else:
        lines.append("no flagged area")
    if any(p.determined for p in pairs):
        lines.append("copy-move: arrow from the source (dashed) to the pasted copy")
    if any(not p.determined for p in pairs):
        lines.append("copy-move, direction undetermined: either area could be the paste")
    return lines


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _scaled(box: Box, scale: float, w: int, h: int) -> Box:
    x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
    x0, x1 = min(max(x0, 0), w - 1), min(max(x1 - 1, 0), w - 1)
    y0, y1 = min(max(y0, 0), h - 1), min(max(y1 - 1, 0), h - 1)
    return (x0, y0, max(x0, x1), max(y0, y1))


def _centre(box: Box) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)


def _dashed_line(draw: ImageDraw.ImageDraw, p: tuple[float, float], q: tuple[float, float],
                 colour: RGB, width: int, dash: int) -> None:
    length = float(np.hypot(q[0] - p[0], q[1] - p[1]))
    if length == 0:
        return
    n = max(1, int(length // dash))
    for i in range(0, n, 2):
        t0, t1 = i / n, min(1.0, (i + 1) / n)
        draw.line([(p[0] + (q[0] - p[0]) * t0, p[1] + (q[1] - p[1]) * t0),
                   (p[0] + (q[0] - p[0]) * t1, p[1] + (q[1] - p[1]) * t1)],
                  fill=colour, width=width)


def _dashed_box(draw: ImageDraw.ImageDraw, box: Box, colour: RGB, width: int,
                dash: int) -> None:
    x0, y0, x1, y1 = box
    for p, q in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)),
                 ((x0, y1), (x0, y0))):
        _dashed_line(draw, p, q, colour, width, dash)


def _arrow(draw: ImageDraw.ImageDraw, p: tuple[float, float], q: tuple[float, float],
           colour: RGB, width: int) -> None:
    draw.line([p, q], fill=colour, width=width)
    d = np.array([q[0] - p[0], q[1] - p[1]], dtype=np.float64)
    length = float(np.hypot(*d))
    if length == 0:
        return
    d /= length
    head = min(length * 0.5, 6.0 * width + 6.0)
    n = np.array([-d[1], d[0]])
    base = np.array(q) - d * head
    pts = [tuple(q), tuple(base + n * head * 0.5), tuple(base - n * head * 0.5)]
    draw.polygon([(float(x), float(y)) for x, y in pts], fill=colour)


def _tag(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, colour: RGB,
         font: Any, w: int, h: int) -> None:
    """Text on a dark plate, kept inside the image."""
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    tw, th = x1 - x0 + 4, y1 - y0 + 4
    x = min(max(xy[0], 0), max(w - tw, 0))
    y = min(max(xy[1], 0), max(h - th, 0))
    draw.rectangle([x, y, x + tw - 1, y + th - 1], fill=_LABEL_BACKGROUND)
    draw.text((x + 2 - x0, y + 2 - y0), text, fill=colour, font=font)


def _legend(width: int, lines: Sequence[str], font: Any, size: int, line_width: int,
            heat: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray:
    row = size + 8
    strip = Image.new("RGB", (width, row * len(lines) + 6), _LEGEND_BACKGROUND)
    draw = ImageDraw.Draw(strip)
    sym = max(24, 3 * size)
    for i, text in enumerate(lines):
        y = 3 + i * row
        mid = y + row // 2
        x = 6
        if text.startswith("forgery probability"):
            if heat is not None:  # the heat scale, 0 at the left, 1 at the right
                colours = np.asarray(heat(np.linspace(0.0, 1.0, sym)), dtype=np.float64)
                for k, c in enumerate(colours):
                    draw.line([(x + k, y + 3), (x + k, y + row - 4)],
                              fill=tuple(int(round(255 * v)) for v in c[:3]))
        elif text.startswith("flagged"):
            draw.rectangle([x, y + 3, x + sym, y + row - 4], outline=AREA_COLOUR,
                           width=line_width)
        elif text.startswith("copy-move:"):
            _dashed_box(draw, (x, y + 3, x + sym // 3, y + row - 4), COPY_COLOUR,
                        line_width, max(3, line_width * 2))
            _arrow(draw, (x + sym // 3, mid), (x + sym, mid), COPY_COLOUR, line_width)
        elif text.startswith("copy-move,"):
            _dashed_line(draw, (x, mid), (x + sym, mid), UNDETERMINED_COLOUR, line_width,
                         max(3, line_width * 2))
        draw.text((x + sym + 8, mid), text, fill=_LEGEND_TEXT, font=font, anchor="lm")
    return np.asarray(strip)


def annotate_regions(
    rgb: np.ndarray,
    regions: Sequence[Mapping[str, Any]],
    scale: float,
    *,
    copy_moves: Sequence[Mapping[str, Any]] = (),
    legend: bool = True,
    heat: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Draw the flagged areas and copy-move pairs on a display image, with a legend below.

    Args:
        rgb: (h, w, 3) uint8 display image, e.g. the forgery overlay.
        regions: ``ForgeryResult.regions`` (or their JSON form): ``bbox`` in stored pixels,
            ``cue``, optional ``copy_of``. Numbered from 1 in this order, like the report.
        scale: display pixels per stored pixel (``w / stored width``).
        copy_moves: ``ForgeryResult.copy_moves``; pairs also named by a region's ``copy_of``
            are drawn once.
        legend: append the legend strip below the image.
        heat: the colour function of the heat map under the marks
            (:func:`medforensics.report.images.heat_colours`: probabilities (n,) to RGB
            (n, 3) in 0..1); the legend then starts with its colour scale.

    Returns:
        A new (h + legend height, w, 3) uint8 image; the top (h, w) part is ``rgb`` with the
        marks drawn on it.

    Raises:
        InvalidArrayError: ``rgb`` is not an (h, w, 3) image, or ``scale`` is not positive.
    """
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        raise InvalidArrayError(f"expected an (h, w, 3) RGB image, got shape {img.shape}")
    if not (np.isfinite(scale) and scale > 0):
        raise InvalidArrayError(f"scale must be a positive number, got {scale}")
    h, w = img.shape[:2]
    canvas = Image.fromarray(img.astype(np.uint8, copy=False), "RGB")
    draw = ImageDraw.Draw(canvas)
    line_width = max(2, round(min(h, w) / 256))
    size = int(np.clip(w / 48, 9, 14))
    font = _font(size)
    dash = max(4, 3 * line_width)
    pairs = copy_pairs(regions, copy_moves)
    for pair in pairs:
        a, b = _scaled(pair.a, scale, w, h), _scaled(pair.b, scale, w, h)
        if pair.determined:
            _dashed_box(draw, a, COPY_COLOUR, line_width, dash)
            _arrow(draw, _centre(a), _centre(b), COPY_COLOUR, line_width)
        else:
            _dashed_box(draw, a, UNDETERMINED_COLOUR, line_width, dash)
            _dashed_box(draw, b, UNDETERMINED_COLOUR, line_width, dash)
            ca, cb = _centre(a), _centre(b)
            _dashed_line(draw, ca, cb, UNDETERMINED_COLOUR, line_width, dash)
            mid = (int((ca[0] + cb[0]) / 2), int((ca[1] + cb[1]) / 2))
            _tag(draw, mid, "?", UNDETERMINED_COLOUR, font, w, h)
    for i, r in enumerate(regions, 1):
        box = _box(r.get("bbox"))
        if box is None:
            continue
        x0, y0, x1, y1 = _scaled(box, scale, w, h)
        draw.rectangle([x0, y0, x1, y1], outline=AREA_COLOUR, width=line_width)
        _tag(draw, (x0, y0 - size - 6 if y0 >= size + 6 else y1 + 2), region_label(i, r),
             AREA_COLOUR, font, w, h)
    out = np.asarray(canvas)
    if not legend:
        return out.copy()
    return np.concatenate(
        [out, _legend(w, legend_entries(regions, pairs, heat=heat is not None), font, size,
                      line_width, heat)], axis=0)
