"""Probability calibration and open-set rejection (pure NumPy/SciPy, no I/O).

* **Temperature scaling** (one scalar ``T`` shared by all classes): calibrated probabilities
  are ``softmax(logits / T)``. ``T`` is fitted on *validation* logits by minimising the mean
  negative log-likelihood with a bounded scalar optimiser over ``log T``. ``T > 1`` softens
  over-confident networks; the arg-max (and hence accuracy) is unchanged.
* **Open-set rejection**: a closed-set classifier always names one of its trained devices.
  To say "UNKNOWN" instead, the calibrated maximum probability (or any other score where
  higher = more confident, passed in by the caller) is compared with a threshold fitted on
  scores of *known-device* validation images: :func:`fit_unknown_threshold` returns the
  empirical quantile such that at most ``target_false_unknown`` (e.g. 5 %) of those known
  images score below it, i.e. would be wrongly called UNKNOWN. The rule is
  ``UNKNOWN  <=>  score < threshold``. How well this rejects genuinely unseen devices is
  not guaranteed and must be measured separately (:func:`open_set_rates`).
* **Expected calibration error** (top-label ECE, equal-width bins) for reporting.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from medforensics.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "apply_temperature",
    "expected_calibration_error",
    "fit_temperature",
    "fit_unknown_threshold",
    "max_probability",
    "nll",
    "open_set_rates",
    "reliability_bins",
    "softmax",
    "unknown_rate",
]

#: Default search interval of the temperature.
T_BOUNDS: tuple[float, float] = (0.05, 20.0)


def _check_logits(logits: Any) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim not in (1, 2) or z.shape[-1] < 2:
        raise ConfigError(f"logits must be (C,) or (N, C) with C >= 2, got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ConfigError("logits contain NaN or infinite values")
    return z


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not math.isfinite(t) or t <= 0:
        raise ConfigError(f"temperature must be a positive finite number, got {temperature!r}")
    return t


def softmax(logits: Any, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax.

    Args:
        logits: float array of any shape; ``axis`` holds the classes.
        axis: class axis.

    Returns:
        float64 array of the same shape, values in [0, 1], summing to 1 along ``axis``.
    """
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """Calibrated probabilities ``softmax(logits / T)``.

    Args:
        logits: (C,) or (N, C) float logits (raw network outputs, any real range).
        temperature: T > 0 from :func:`fit_temperature` (1.0 = uncalibrated softmax).

    Returns:
        float64 probabilities of the same shape, rows summing to 1.
    """
    z = _check_logits(logits)
    return softmax(z / _check_temperature(temperature), axis=-1)


def nll(logits: Any, y_true: Any, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (natural log) of ``softmax(logits / T)``.

    Args:
        logits: (N, C) float logits.
        y_true: (N,) int class indices in ``0..C-1``.
        temperature: T > 0.

    Returns:
        Mean NLL in nats (>= 0).
    """
    z, y = _check_fit_inputs(logits, y_true)
    t = _check_temperature(temperature)
    return float(-log_softmax(z / t, axis=1)[np.arange(y.size), y].mean())


def _check_fit_inputs(logits: Any, y_true: Any) -> tuple[np.ndarray, np.ndarray]:
    z = _check_logits(logits)
    if z.ndim != 2:
        raise ConfigError(f"logits must be (N, C), got shape {z.shape}")
    y = np.asarray(y_true)
    if y.ndim != 1 or y.size != z.shape[0]:
        raise ConfigError(f"y_true must be (N,) = ({z.shape[0]},), got shape {y.shape}")
    if y.size == 0:
        raise ConfigError("no validation samples to fit on")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= z.shape[1]:
        raise ConfigError(f"y_true must hold integer class indices in 0..{z.shape[1] - 1}")
    return z, y.astype(np.int64)


def fit_temperature(
    logits: Any,
    y_true: Any,
    *,
    bounds: tuple[float, float] = T_BOUNDS,
    prior_sd: float | None = None,
) -> float:
    """Fit the temperature T minimising validation NLL of ``softmax(logits / T)``.

    Uses SciPy's bounded Brent search (``minimize_scalar(method="bounded")``) over
    ``log T`` in ``log(bounds)``. Fit on validation data, never on the test set.

    When every validation image is classified correctly the NLL keeps falling as T -> 0
    and the plain fit ends at the lower bound, which only makes future probabilities
    over-confident. ``prior_sd`` adds a Gaussian prior on ``log T`` centred on 0 (T = 1)
    with that standard deviation (a maximum a-posteriori fit): the term
    ``(log T)^2 / (2 prior_sd^2 N)`` is added to the mean NLL, so a few dozen separable
    images can no longer push T to a bound, while many informative images still move it.

    Args:
        logits: (N, C) float validation logits (before softmax).
        y_true: (N,) int true class indices.
        bounds: (low, high) search interval of T, both > 0.
        prior_sd: standard deviation of the prior on ``log T`` (``None``: no prior).

    Returns:
        The fitted temperature (float in ``bounds``). A value at an end of the interval is
        logged as a warning (e.g. perfectly separated validation data drive T towards 0).
    """
    z, y = _check_fit_inputs(logits, y_true)
    lo, hi = (_check_temperature(b) for b in bounds)
    if not lo < hi:
        raise ConfigError(f"bounds must satisfy low < high, got {bounds}")
    rows = np.arange(y.size)

    penalty = 0.0 if prior_sd is None else 1.0 / (2.0 * float(prior_sd) ** 2 * y.size)

    def objective(log_t: float) -> float:
        nll_t = float(-log_softmax(z / math.exp(log_t), axis=1)[rows, y].mean())
        return nll_t + penalty * log_t * log_t

    res = minimize_scalar(
        objective,
        bounds=(math.log(lo), math.log(hi)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    t = float(math.exp(res.x))
    if min(t - lo, hi - t) < 1e-3 * t:
        logger.warning("fitted temperature %.4g is at the edge of the search range %s", t, bounds)
    logger.info(
        "temperature scaling: T=%.4f, NLL %.4f -> %.4f (n=%d)",
        t,
        objective(0.0),
        float(res.fun),
        y.size,
    )
    return t


def max_probability(probs: Any) -> np.ndarray:
    """Maximum class probability per row, the default open-set score.

    Args:
        probs: (C,) or (N, C) calibrated probabilities.

    Returns:
        (N,) float64 (or a 0-d array for one row), values in [1/C, 1].
    """
    return np.asarray(probs, dtype=np.float64).max(axis=-1)


def _check_scores(scores: Any, name: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ConfigError(f"{name} is empty")
    if not np.all(np.isfinite(s)):
        raise ConfigError(f"{name} contains NaN or infinite values")
    return s


def fit_unknown_threshold(val_scores: Any, target_false_unknown: float = 0.05) -> float:
    """Threshold below which a prediction is called UNKNOWN.

    ``val_scores`` are confidence scores (higher = more confident; by default the calibrated
    max-probability from :func:`max_probability`, but any such score may be passed, e.g. a
    PCE or a margin) of validation images of *known, trained* devices. The threshold is the
    empirical quantile of these scores: with the scores sorted ascending ``s[0] <= ... <=
    s[N-1]`` and ``k = floor(target_false_unknown * N)``, the threshold is ``s[k]``, so that
    at most ``k`` known images (fraction <= target) satisfy ``score < threshold`` and would
    be called UNKNOWN. Ties can only lower that fraction. ``k = 0`` (too few validation
    scores for the target) returns the minimum, so no validation image is rejected; a
    warning is logged since the rate cannot then be checked.

    Args:
        val_scores: (N,) float scores of known-device validation images.
        target_false_unknown: wanted fraction of known images called UNKNOWN, in [0, 1).

    Returns:
        The threshold; rule: ``UNKNOWN <=> score < threshold``.
    """
    target = float(target_false_unknown)
    if not 0.0 <= target < 1.0:
        raise ConfigError(f"target_false_unknown must be in [0, 1), got {target_false_unknown}")
    s = np.sort(_check_scores(val_scores, "val_scores"))
    k = int(math.floor(target * s.size + 1e-9))
    if k == 0 and target > 0:
        logger.warning(
            "only %d validation scores: cannot resolve a false-unknown rate of %.3g; "
            "threshold set to the minimum score (nothing rejected on validation)",
            s.size,
            target,
        )
    return float(s[k])


def unknown_rate(scores: Any, threshold: float) -> float:
    """Fraction of scores called UNKNOWN (``score < threshold``).

    Args:
        scores: (N,) float scores.
        threshold: from :func:`fit_unknown_threshold`.

    Returns:
        Fraction in [0, 1].
    """
    s = _check_scores(scores, "scores")
    return float(np.mean(s < threshold))


def open_set_rates(known_scores: Any, unknown_scores: Any, threshold: float) -> dict[str, float]:
    """Open-set operating point on held-out data.

    Args:
        known_scores: (N,) scores of images from trained devices.
        unknown_scores: (M,) scores of images from devices the model never saw.
        threshold: rejection threshold (``UNKNOWN <=> score < threshold``).

    Returns:
        ``{"threshold", "false_unknown_rate", "true_unknown_rate", "n_known", "n_unknown"}``;
        ``false_unknown_rate`` = known images rejected, ``true_unknown_rate`` = unseen-device
        images rejected (higher is better).
    """
    k = _check_scores(known_scores, "known_scores")
    u = _check_scores(unknown_scores, "unknown_scores")
    return {
        "threshold": float(threshold),
        "false_unknown_rate": float(np.mean(k < threshold)),
        "true_unknown_rate": float(np.mean(u < threshold)),
        "n_known": int(k.size),
        "n_unknown": int(u.size),
    }


def reliability_bins(probs: Any, y_true: Any, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Top-label reliability diagram data with equal-width confidence bins.

    Args:
        probs: (N, C) probabilities, rows summing to 1.
        y_true: (N,) int true class indices.
        n_bins: number of bins on [0, 1]; bin ``b`` holds confidences in
            ``(b/n_bins, (b+1)/n_bins]`` (the first bin also includes 0).

    Returns:
        Dict of (n_bins,) arrays: ``edges`` ((n_bins + 1,) float), ``count`` (int64),
        ``confidence`` (mean max-probability, NaN if empty), ``accuracy`` (NaN if empty).
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    if p.ndim != 2 or y.ndim != 1 or p.shape[0] != y.size or y.size == 0:
        raise ConfigError(f"need probs (N, C) and y_true (N,), got {p.shape} and {y.shape}")
    if int(n_bins) < 1:
        raise ConfigError(f"n_bins must be >= 1, got {n_bins}")
    n_bins = int(n_bins)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    sum_conf = np.bincount(b, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(b, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, sum_conf / np.maximum(count, 1), np.nan)
        mean_acc = np.where(count > 0, sum_acc / np.maximum(count, 1), np.nan)
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": mean_acc}


def expected_calibration_error(probs: Any, y_true: Any, n_bins: int = 15) -> float:
    """Top-label expected calibration error.

    ``ECE = sum_b (n_b / N) * |accuracy_b - confidence_b|`` over equal-width bins of the
    max-probability (see :func:`reliability_bins`).

    Args:
        probs: (N, C) probabilities, rows summing to 1.
        y_true: (N,) int true class indices.
        n_bins: number of bins.

    Returns:
        ECE in [0, 1] (0 = perfectly calibrated on this data).
    """
    bins = reliability_bins(probs, y_true, n_bins)
    count = bins["count"]
    used = count > 0
    gap = np.abs(bins["accuracy"][used] - bins["confidence"][used])
    return float(np.sum(count[used] * gap) / count.sum())
