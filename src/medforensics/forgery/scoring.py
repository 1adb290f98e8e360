"""From a forgery probability map to the two numbers a verdict quotes.

``image_score`` is the image's forgery score: the largest mean of the map over a small square
window, so that one bright pixel does not make an image "tampered" but a compact flagged area
does. ``forged_area_percent`` is the share of the image above the map threshold.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: side of the mean filter of the image score (see module docs)
SCORE_WINDOW = 17


def image_score(prob_map: np.ndarray, size: int = 9) -> float:
    """Max of the ``size x size`` mean-filtered map (float in [0, 1])."""
    m = np.asarray(prob_map, dtype=np.float32)
    if m.size == 0:
        return 0.0
    return float(ndimage.uniform_filter(m, size=min(size, *m.shape)).max())


def forged_area_percent(prob_map: np.ndarray, threshold: float = 0.5) -> float:
    """``100 * mean(map >= threshold)``: share of pixels above the threshold, in percent."""
    m = np.asarray(prob_map)
    if m.size == 0:
        return 0.0
    return float(100.0 * np.count_nonzero(m >= threshold) / m.size)
