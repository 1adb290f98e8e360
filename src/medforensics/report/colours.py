"""The heat-map colours of forgery probability maps, and their colour scale.

One colour map for every picture that shows a forgery probability: the overlays of
:mod:`medforensics.report.images` (map files, the service's ``overlay_png_b64``, case reports)
and the scale drawn under the map in a case report. Red at low probability turning yellow at 1,
never white or grey, so that the overlay stands apart from bright anatomy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["heat_colours", "heat_scale"]


def heat_colours(prob: np.ndarray) -> np.ndarray:
    """Heat-map colours of probabilities: red at low probability, turning yellow at 1.

    Args:
        prob: float array of any shape, values in 0..1 (clipped; NaN counts as 0).

    Returns:
        float32 array ``prob.shape + (3,)`` of RGB in 0..1: ``(1, max(0, 2p - 1), 0)``.
    """
    p = np.clip(np.nan_to_num(np.asarray(prob, dtype=np.float32), nan=0.0), 0.0, 1.0)
    return np.stack(
        [np.ones_like(p), np.clip(2.0 * p - 1.0, 0.0, 1.0), np.zeros_like(p)], axis=-1
    ).astype(np.float32)


def heat_scale(width: int = 160, height: int = 10) -> np.ndarray:
    """The colour scale of :func:`heat_colours` from probability 0 (left) to 1 (right).

    Args:
        width: pixels along the probability axis.
        height: pixels across it.

    Returns:
        (height, width, 3) uint8 RGB image.
    """
    ramp = heat_colours(np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1)))
    return np.rint(ramp * 255.0).astype(np.uint8)
