"""Settings and result records of the unit reference patterns (:mod:`medforensics.source.units`).

``FingerprintConfig`` is saved with the patterns; ``MatchScore``, ``ThresholdReport`` and
``IdentificationReport`` are what matching, threshold calibration and evaluation return.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import norm

from medforensics.dsp.prnu import PatternModel
from medforensics.errors import ConfigError

PCE_FLOOR = 60.0
"""Lowest PCE threshold of a unit match (also the default): real residuals out-tail the
simulator's null, so a threshold calibrated on simulated units may sit far lower."""


@dataclass
class FingerprintConfig:
    """Settings of :class:`UnitFingerprints` (saved with the patterns).

    Attributes:
        model: pattern model, ``"additive"`` (default; log-domain, processed radiographs)
            or ``"multiplicative"`` (linear raw images); see the module docstring.
        method, levels, wavelet: residual extraction (``dsp.residuals.noise_residual``).
        fft_filter: Fourier-domain Wiener filter on the patterns (periodic artefacts).
        score: ``"pce"`` (default) or ``"ncc"``: which score ``match``/``identify_unit`` use.
        max_shift: PCE peak search radius in pixels (0 = fixed grid, the default).
        neighborhood: PCE peak exclusion window.
        threshold: decision threshold on ``score``.
        window: side (px) of the square window of a query that is compared with the
            patterns (0 = the whole overlap of image and pattern). A window of ~1 Mpx keeps
            the PCE of a matching unit far above the threshold while the unit step costs a
            fraction of the image's decoding (docs/performance.md); the window is placed
            where the image has the fewest clipped pixels.
    """

    model: PatternModel = "additive"
    method: Literal["wavelet", "local_wiener"] = "wavelet"
    levels: int = 4
    wavelet: str = "db4"
    fft_filter: bool = True
    score: Literal["pce", "ncc"] = "pce"
    max_shift: int = 0
    neighborhood: int = 11
    threshold: float = PCE_FLOOR
    window: int = 1024

    def __post_init__(self) -> None:
        if self.model not in ("multiplicative", "additive"):
            raise ConfigError(f"unknown pattern model {self.model!r}")
        if self.score not in ("pce", "ncc"):
            raise ConfigError(f"unknown score {self.score!r}; use 'pce' or 'ncc'")
        if self.max_shift < 0:
            raise ConfigError("max_shift must be >= 0")
        if self.window != 0 and self.window < 64:
            raise ConfigError(f"window must be 0 (whole overlap) or >= 64 px, got {self.window}")



@dataclass(frozen=True)
class MatchScore:
    """Scores of one image against one unit's pattern.

    Attributes:
        unit: unit label.
        pce: Peak-to-Correlation Energy (search radius ``max_shift``).
        ncc: normalised correlation at the zero shift.
        shift: (dy, dx) of the PCE peak.
        overlap: (h, w) of the compared region.
        origin: (row, column) of the compared region's top-left pixel in the image.
    """

    unit: str
    pce: float
    ncc: float
    shift: tuple[int, int]
    overlap: tuple[int, int]
    origin: tuple[int, int] = (0, 0)



@dataclass(frozen=True)
class SkippedImage:
    """An image left out of :meth:`UnitFingerprints.fit` and why."""

    unit: str
    index: int
    reason: str



@dataclass
class ThresholdReport:
    """Outcome of :meth:`UnitFingerprints.calibrate_threshold` (scores in ``score`` units)."""

    score: str
    threshold: float
    target_fpr: float
    n_match: int
    n_nonmatch: int
    """comparisons of validation images with other units' patterns"""
    match_min: float
    match_median: float
    nonmatch_max: float
    nonmatch_quantile: float
    """``1 - target_fpr`` quantile of the per-image best non-match score"""
    analytic_floor: float
    null_inflation: float
    """variance of the signed non-match PCEs / 3 (1 = exactly chi-square(1)), >= 1"""
    tpr: float
    top1_accuracy: float



def threshold_report(score: str, match: Sequence[float], nonmatch: Sequence[float],
                     best_nonmatch: Sequence[float], n_pixels: int, *, target_fpr: float,
                     n_tests: int, top1_accuracy: float) -> ThresholdReport:
    """The unit decision threshold from validation scores (rule: ``UnitFingerprints.
    calibrate_threshold``): the larger of the ``1 - target_fpr`` quantile of the per-image
    best non-match scores and the analytic bound ``c * z^2`` (PCE; ``z / sqrt(n_pixels)`` for
    NCC) at ``target_fpr / n_tests``, never below :data:`PCE_FLOOR` for PCE.

    Args:
        score: ``"pce"`` or ``"ncc"``.
        match: scores of validation images against their own unit (at least one).
        nonmatch: their scores against every other unit.
        best_nonmatch: per image, the best of those.
        n_pixels: the smallest compared area (NCC bound).
        target_fpr: wanted rate of attributing an unseen unit's image to an enrolled one.
        n_tests: enrolled units x searched shifts (Bonferroni).
        top1_accuracy: share of validation images whose best unit is their own.
    """
    z = float(norm.isf(target_fpr / max(int(n_tests), 1)))
    inflation = 1.0
    if score == "pce" and len(nonmatch) >= 20:  # signed chi-square(1) has variance 3
        inflation = max(1.0, float(np.var(nonmatch)) / 3.0)
    floor = inflation * z * z if score == "pce" else z / math.sqrt(max(n_pixels, 1))
    nq = float(np.quantile(best_nonmatch, 1 - target_fpr)) if best_nonmatch else -math.inf
    thr = max(floor, nq, PCE_FLOOR if score == "pce" else -math.inf)
    m = np.asarray(match, dtype=np.float64)
    return ThresholdReport(
        score=score, threshold=thr, target_fpr=target_fpr, n_match=int(m.size),
        n_nonmatch=len(nonmatch), match_min=float(m.min()), match_median=float(np.median(m)),
        nonmatch_max=float(max(nonmatch)) if nonmatch else -math.inf, nonmatch_quantile=nq,
        analytic_floor=floor, null_inflation=inflation, tpr=float((m > thr).mean()),
        top1_accuracy=top1_accuracy)


@dataclass
class IdentificationReport:
    """Outcome of :meth:`UnitFingerprints.evaluate`.

    Attributes:
        n_images: enrolled-unit test images scored.
        top1_accuracy: best-scoring unit is the true one (closed set, no threshold).
        accuracy: decision is the true unit (score above threshold and correct).
        false_rejects: enrolled-unit images answered ``None``.
        wrong_unit: enrolled-unit images given another unit above the threshold.
        n_unseen: images of units that are not enrolled.
        unseen_rejected: fraction of those answered ``None``.
        threshold: the threshold used.
        seconds_per_image: mean wall time of one ``match`` (all candidate units).
        confusion: ``{true_unit: {decided_unit_or_"None": count}}``.
    """

    n_images: int
    top1_accuracy: float
    accuracy: float
    false_rejects: int
    wrong_unit: int
    n_unseen: int
    unseen_rejected: float
    threshold: float
    seconds_per_image: float
    confusion: dict[str, dict[str, int]]
