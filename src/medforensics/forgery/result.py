"""The forgery verdict's result records: :class:`ForgeryResult` (one image) and
:class:`FileResult` (one file of a batch), and their JSON form.

``ForgeryResult.to_dict()`` is what ``medforensics forgery detect --json`` prints, what the
service returns and what the case report stores: every field except the map (NaN -> None), plus
the map's ``rows``/``cols``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medforensics.forgery.schema import forgery_record
from medforensics.source.schema import error_record

__all__ = ["ForgeryResult", "FileResult", "json_tree"]


def _finite(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


@dataclass
class ForgeryResult:
    """Output of :meth:`ForgeryDetector.detect`.

    Attributes:
        score: image-level forgery score in [0, 1] (higher = more likely tampered).
        verdict: ``"tampered"``, ``"inconclusive"`` or ``"authentic"`` (see module docs).
        inconclusive_reason: why the verdict is ``inconclusive`` (None otherwise).
        covered_fraction: share of the image (0..1) that carries measurable noise
            (:func:`medforensics.forgery.coverage.covered_fraction`).
        forged_area_percent: share of pixels with ``prob_map >= map_threshold``, in percent
            (0..100).
        ela_score: mean ELA at JPEG q90 in % of 8-bit full scale (the paper's "percentage of
            forgery"; not a share of pixels; 12-16-bit data through an 8-bit window, see
            notes); None where ELA was not run (see module docs).
        threshold: the score threshold of the verdict.
        inconclusive_from: lower edge of the inconclusive score band (= threshold when
            the band is disabled).
        map_threshold: threshold on the map for the forged area.
        method: ``"cues"``, ``"cues-learned"`` or ``"ela-cnn"``.
        prob_map: float32 (H, W) per-pixel forgery probability in [0, 1] at native resolution.
        cues: per-cue image scores in [0, 1] (``copymove``, ``noise``, ``ela``,
            ``fingerprint``, ``ela_cnn``, ... whichever ran).
        notes: what was skipped or how something was computed (ELA 8-bit window, ...).
        regions: the flagged areas, largest first
            (:func:`medforensics.forgery.regions.describe_regions`: ``bbox``, ``area_px``,
            ``area_percent``, ``mean_prob``, ``max_prob``, ``cue``, ``cue_means`` and, for a
            copy-move, ``copy_of`` with the partner area, its transform and this area's
            ``role``: ``pasted copy``, ``source`` or ``undetermined``).
        copy_moves: every copy-move pair found
            (:func:`medforensics.forgery.direction.pair_summary`): both boxes, ``direction``
            (``"a->b"``, ``"b->a"`` or ``"undetermined"`` - the pasted area is named only
            with evidence), ``pasted_bbox`` / ``source_bbox`` (None when undetermined) and
            ``evidence`` (why, in words).
        run_integrity: ``"verified"``, ``"modified"`` or ``"unverified"``: the least
            trustworthy of the forgery run and the source run behind the result
            (:mod:`medforensics.models.runfiles`); None when no run file is involved (the
            training-free detector without a source model).
    """

    score: float
    verdict: str
    forged_area_percent: float
    ela_score: float | None
    threshold: float
    inconclusive_from: float
    map_threshold: float
    method: str
    prob_map: np.ndarray = field(repr=False)
    cues: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    regions: list[dict[str, Any]] = field(default_factory=list)
    run_integrity: str | None = None
    copy_moves: list[dict[str, Any]] = field(default_factory=list)
    inconclusive_reason: str | None = None
    covered_fraction: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of every field except ``prob_map`` (NaN -> None), plus the
        map's ``rows``/``cols``."""
        return {
            "score": _finite(float(self.score)),
            "verdict": self.verdict,
            "inconclusive_reason": self.inconclusive_reason,
            "covered_fraction": _finite(float(self.covered_fraction)),
            "forged_area_percent": _finite(float(self.forged_area_percent)),
            "ela_score": None if self.ela_score is None else _finite(float(self.ela_score)),
            "threshold": float(self.threshold),
            "inconclusive_from": float(self.inconclusive_from),
            "map_threshold": float(self.map_threshold),
            "method": self.method,
            "cues": {k: _finite(float(v)) for k, v in self.cues.items()},
            "notes": list(self.notes),
            "regions": [json_tree(r) for r in self.regions],
            "copy_moves": [json_tree(c) for c in self.copy_moves],
            "rows": int(self.prob_map.shape[0]),
            "cols": int(self.prob_map.shape[1]),
            "run_integrity": self.run_integrity,
        }


def json_tree(v: Any) -> Any:
    """``v`` with mappings as dicts, tuples as lists and NumPy / non-finite scalars made
    JSON-safe (used for :attr:`ForgeryResult.regions` here and in the case report)."""
    if isinstance(v, Mapping):
        return {str(k): json_tree(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_tree(x) for x in v]
    return _finite(v)


@dataclass
class FileResult:
    """One file of :func:`detect_files`: a result, or the reason it could not be analysed.

    ``meta`` is the image's ``ImageMeta`` when it was decoded (its UIDs go into the JSON).
    """

    path: str
    result: ForgeryResult | None = None
    error: str | None = None
    reason: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    meta: Any = field(default=None, repr=False)
    frame: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The result's JSON line (:mod:`medforensics.forgery.schema`: ``status`` is ``done``
        or ``error``, with the image's path, frame and DICOM UIDs)."""
        if self.result is None:
            return error_record(self.path, self.reason or "unreadable", self.error or "",
                                self.meta, frame=self.frame)
        return forgery_record(self.result, self.path, self.meta, frame=self.frame,
                              files=self.files)
