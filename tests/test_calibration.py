"""Tests for medforensics.eval.calibration (temperature scaling, open-set threshold, ECE)."""

from __future__ import annotations

import numpy as np
import pytest

from medforensics.errors import ConfigError
from medforensics.eval.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    fit_unknown_threshold,
    max_probability,
    nll,
    open_set_rates,
    reliability_bins,
    softmax,
    unknown_rate,
)


def _synthetic(
    t0: float, n: int = 4000, c: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Logits z and labels drawn from softmax(z / t0): the true temperature is t0."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=3.0, size=(n, c))
    p = softmax(z / t0)
    u = rng.random(n)[:, None]
    y = (u > np.cumsum(p, axis=1)).sum(axis=1)
    return z, np.minimum(y, c - 1)


@pytest.mark.parametrize("t0", [0.5, 2.5])
def test_temperature_scaling_recovers_known_temperature(t0: float) -> None:
    z, y = _synthetic(t0, seed=int(t0 * 10))
    t = fit_temperature(z, y)
    assert t == pytest.approx(t0, rel=0.1)
    assert nll(z, y, t) <= nll(z, y, 1.0)
    # a grid check that the optimiser found the minimum
    grid = np.linspace(0.8 * t0, 1.2 * t0, 21)
    assert nll(z, y, t) <= min(nll(z, y, g) for g in grid) + 1e-6


def test_calibration_reduces_ece_and_keeps_argmax() -> None:
    z, y = _synthetic(2.5, seed=7)
    t = fit_temperature(z, y)
    raw = apply_temperature(z, 1.0)
    cal = apply_temperature(z, t)
    np.testing.assert_allclose(raw, softmax(z))
    np.testing.assert_allclose(cal.sum(axis=1), 1.0)
    assert np.array_equal(raw.argmax(1), cal.argmax(1))
    ece_raw = expected_calibration_error(raw, y)
    ece_cal = expected_calibration_error(cal, y)
    assert ece_raw > 0.1  # over-confident: logits are 2.5x too sharp
    assert ece_cal < 0.03
    one = apply_temperature(z[0], t)
    assert one.shape == (5,)
    np.testing.assert_allclose(one, cal[0])


def test_ece_hand_computed() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1])
    # 2 bins on [0, 1]: all confidences (0.9, 0.8, 0.7, 0.6) fall in (0.5, 1].
    # mean confidence 0.75, accuracy 3/4 -> ECE 0
    assert expected_calibration_error(probs, y, n_bins=2) == pytest.approx(0.0)
    # 10 bins: (0.8,0.9]: conf .9 acc 1 ; (0.7,0.8]: conf .8 acc 0 ; (0.6,0.7]: .7 acc 1 ;
    # (0.5,0.6]: .6 acc 1 -> ECE = (0.1 + 0.8 + 0.3 + 0.4) / 4
    assert expected_calibration_error(probs, y, n_bins=10) == pytest.approx(1.6 / 4)
    bins = reliability_bins(probs, y, n_bins=10)
    assert bins["count"].sum() == 4
    assert np.isnan(bins["accuracy"][0])


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError):
        apply_temperature([[1.0, 2.0]], 0.0)
    with pytest.raises(ConfigError):
        fit_temperature([[1.0, np.nan]], [0])
    with pytest.raises(ConfigError):
        fit_temperature([[1.0, 2.0]], [2])
    with pytest.raises(ConfigError):
        fit_unknown_threshold([], 0.05)
    with pytest.raises(ConfigError):
        fit_unknown_threshold([0.5, 0.6], 1.0)


def test_unknown_threshold_hits_target_rate() -> None:
    rng = np.random.default_rng(1)
    val = rng.beta(8, 1, size=1000)  # max-probability-like scores, no ties
    thr = fit_unknown_threshold(val, 0.05)
    assert unknown_rate(val, thr) == pytest.approx(0.05)
    assert fit_unknown_threshold(val, 0.10) > thr
    # held-out known scores from the same distribution: close to the target
    test = rng.beta(8, 1, size=20000)
    assert unknown_rate(test, thr) == pytest.approx(0.05, abs=0.02)
    # the threshold is the quantile of the known scores
    assert thr == pytest.approx(np.quantile(val, 0.05), abs=0.01)


def test_unknown_threshold_with_ties_never_exceeds_target() -> None:
    val = np.array([0.5] * 3 + [0.9] * 7 + [1.0] * 10)
    thr = fit_unknown_threshold(val, 0.25)  # k = 5 falls inside the 0.9 run
    assert thr == 0.9
    assert unknown_rate(val, thr) == pytest.approx(3 / 20)  # <= 0.25
    assert fit_unknown_threshold(val, 0.0) == 0.5
    assert unknown_rate(val, fit_unknown_threshold(val, 0.0)) == 0.0


def test_small_validation_set_rejects_nothing() -> None:
    val = [0.7, 0.8, 0.9]
    assert fit_unknown_threshold(val, 0.05) == 0.7
    assert unknown_rate(val, 0.7) == 0.0


def test_open_set_rates_and_max_probability() -> None:
    probs = np.array([[0.9, 0.1], [0.55, 0.45], [0.2, 0.8]])
    np.testing.assert_allclose(max_probability(probs), [0.9, 0.55, 0.8])
    r = open_set_rates([0.9, 0.8, 0.95, 0.6], [0.5, 0.7, 0.9], threshold=0.75)
    assert r["false_unknown_rate"] == pytest.approx(1 / 4)
    assert r["true_unknown_rate"] == pytest.approx(2 / 3)
    assert (r["n_known"], r["n_unknown"]) == (4, 3)
