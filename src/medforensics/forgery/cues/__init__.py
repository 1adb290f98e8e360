"""The forgery cues, each registered with its defaults (:mod:`medforensics.forgery.cues.registry`).

Importing this package registers every cue: ``copymove`` (residual block matching, exact-value
keypoints, SIFT content), ``noise`` (local noise level), ``texture`` (noise shape),
``whiteness`` (noise whiter than the image's own), ``seam`` (hard-edged paste outlines),
``ela`` (error level analysis, lossy inputs) and ``fingerprint`` (a source patch model slid
over the image). :func:`list_cues` names them in the default order,
:func:`get_cue` gives one's function and defaults.
"""

from __future__ import annotations

from medforensics.forgery.cues import copymove, ela, fingerprint, noise, seam, texture, whiteness
from medforensics.forgery.cues.registry import (
    CueContext,
    CueOutput,
    CueSpec,
    check_cue_params,
    get_cue,
    list_cues,
    map_names,
    register_cue,
    resolve_params,
)

__all__ = [
    "CueContext",
    "CueOutput",
    "CueSpec",
    "check_cue_params",
    "get_cue",
    "list_cues",
    "map_names",
    "register_cue",
    "resolve_params",
    "copymove",
    "ela",
    "fingerprint",
    "noise",
    "seam",
    "texture",
    "whiteness",
]
