"""Hard-edged paste seams (the ``seam`` cue).

The noise, texture and fingerprint cues look *inside* a region; a block pasted with hard
edges also leaves its outline: straight, pixel-aligned discontinuities along its border that
meet at right angles (:mod:`medforensics.dsp.seams`). This cue finds such outlines and marks
the block they enclose:

* ``map`` inside a box = ``CORNER_LEVEL[corners]`` (0.55 for one corner seen, 0.8 for two,
  0.95 for three, 1.0 for all four); boxes whose best corner has a seam shorter than
  ``min_side`` are dropped;
* lossy inputs are skipped (JPEG's 8 x 8 block edges are straight, grid-aligned seams by
  construction; other lossy codecs' tiles and quantised transforms are not trusted either) -
  :func:`seam_cue` raises :class:`SeamSkipped` with the reason.

What it sees: rectangular pastes with hard (unfeathered) edges - splices from another image,
clones, rectangular fills - whatever the content, also when the noise level and shape match.
What it does not: feathered or non-rectangular outlines, pastes whose border runs through flat
or clipped areas (nothing to compare), edits in JPEG data. How often untouched images get a
box is in docs/forgery.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medforensics.dsp._checks import as_image
from medforensics.dsp.seams import SeamBox, boundary_excess, seam_boxes, straight_seams
from medforensics.errors import InvalidArrayError, MedForensicsError
from medforensics.forgery.cues.registry import (
    CueContext,
    CueOutput,
    register_cue,
    signature_defaults,
)

__all__ = ["CORNER_LEVEL", "SeamResult", "SeamSkipped", "seam_cue"]

#: map level of a box by the number of its corners that were seen
CORNER_LEVEL = {1: 0.55, 2: 0.8, 3: 0.95, 4: 1.0}


class SeamSkipped(MedForensicsError):
    """The seam cue does not apply to this input (the message says why)."""


@dataclass
class SeamResult:
    """Output of :func:`seam_cue`.

    Attributes:
        map: float32 (H, W) in [0, 1]; ``CORNER_LEVEL`` inside each box, 0 elsewhere.
        boxes: the boxes that made the map (most corners first).
        n_seams: number of straight seams found, ``(vertical, horizontal)``.
    """

    map: np.ndarray
    boxes: list[SeamBox] = field(default_factory=list)
    n_seams: tuple[int, int] = (0, 0)


def seam_cue(pixels: np.ndarray, *, lossy: bool = False, window: int = 16,
             threshold: float = 0.5, min_len: int = 24, min_side: int = 40,
             max_boxes: int = 8) -> SeamResult:
    """Map of blocks outlined by hard paste seams.

    Args:
        pixels: float (H, W) stored values, H, W >= 64.
        lossy: the image went through lossy (JPEG-type) compression: the cue does not apply.
        window: rows / columns averaged along a boundary (:func:`boundary_excess`).
        threshold: relative step excess of a seam position.
        min_len: shortest straight seam, in pixels.
        min_side: a box needs a corner whose two seams are both at least this long.
        max_boxes: at most this many boxes are marked (strongest first).

    Returns:
        :class:`SeamResult`.

    Raises:
        SeamSkipped: ``lossy`` is True.
        InvalidArrayError: not a finite 2-D array of at least 64 x 64.
    """
    if lossy:
        raise SeamSkipped("lossy compression: its artefacts (JPEG's 8 x 8 block edges, tile and "
                          "transform edges of other codecs) can look like paste seams")
    img = as_image(pixels, "pixels", min_size=64, dtype=np.float32)
    clip = (float(img.min()), float(img.max()))
    vert = straight_seams(boundary_excess(img, window=window, clip_values=clip), axis="v",
                          threshold=threshold, min_len=min_len)
    horiz = straight_seams(boundary_excess(img.T, window=window, clip_values=clip), axis="h",
                           threshold=threshold, min_len=min_len)
    boxes = [b for b in seam_boxes(vert, horiz, tol=window) if b.side >= min_side][:max_boxes]
    out = np.zeros(img.shape, np.float32)
    for b in boxes:
        x0, y0, x1, y1 = b.box
        view = out[max(0, y0):max(0, y1), max(0, x0):max(0, x1)]
        np.maximum(view, np.float32(CORNER_LEVEL[min(4, b.corners)]), out=view)
    return SeamResult(out, boxes, (len(vert), len(horiz)))


@register_cue("seam", rank=40, context=("lossy",),
              defaults=signature_defaults(seam_cue, exclude=("lossy",)))
def _seam_cue(img: np.ndarray, ctx: CueContext, params: Mapping[str, Any]) -> CueOutput:
    """The registered ``seam`` cue: :func:`seam_cue`; skipped (with the reason as a note) on
    lossy or too small inputs. Its ``result`` (the boxes) goes to the copy-move cue."""
    try:
        sr = seam_cue(img, **{"lossy": ctx.lossy, **params})
    except (SeamSkipped, InvalidArrayError) as exc:
        return CueOutput(notes=[f"seam cue skipped: {exc}"])
    return CueOutput(maps={"seam": sr.map},
                     details={"boxes": [{"bbox": list(b.box), "corners": b.corners,
                                         "side": b.side} for b in sr.boxes],
                              "n_seams": list(sr.n_seams)},
                     result=sr)
