"""Settings and result records of the unit reference patterns (:mod:`medforensics.source.units`).

``FingerprintConfig`` is saved with the patterns; ``MatchScore``, ``ThresholdReport`` and
``IdentificationReport`` are what matching, threshold calibration and evaluation return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
