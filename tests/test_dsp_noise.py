"""Tests of dsp.noise: block noise-level maps and the Poisson-Gaussian fit."""

from __future__ import annotations

import numpy as np
import pytest

from medforensics.dsp.noise import fit_poisson_gaussian, noise_level_map
from medforensics.errors import ConfigError, InvalidArrayError


def test_noise_level_map_shape_and_value() -> None:
    rng = np.random.default_rng(21)
    m = noise_level_map(rng.normal(500, 6.0, (200, 260)), block=32)
    assert m.shape == (200 // 32, 260 // 32) and m.dtype == np.float32
    assert np.median(m) == pytest.approx(6.0, rel=0.05)
    assert m.std() < 0.1 * 6.0


def test_noise_level_map_localises_a_noisier_patch() -> None:
    rng = np.random.default_rng(22)
    yy, xx = np.mgrid[:256, :256]
    img = 1000 + 2.0 * xx + 1.0 * yy + rng.normal(0, 5.0, (256, 256))  # ramp is ignored
    img[64:128, 128:192] += rng.normal(0, 10.0, (64, 64))  # pasted region, noisier
    m = noise_level_map(img, block=32)
    inside = m[2:4, 4:6]
    outside = np.delete(m.ravel(), [2 * 8 + 4, 2 * 8 + 5, 3 * 8 + 4, 3 * 8 + 5])
    assert inside.min() > 1.6 * outside.max()  # true ratio sqrt(125)/5 = 2.24
    assert np.median(outside) == pytest.approx(5.0, rel=0.08)


def test_noise_level_map_errors() -> None:
    with pytest.raises(InvalidArrayError):
        noise_level_map(np.zeros((16, 64)), block=32)
    with pytest.raises(ConfigError):
        noise_level_map(np.zeros((16, 16)), block=1)
    with pytest.raises(InvalidArrayError):
        noise_level_map(np.zeros((2, 16, 16)))


def test_poisson_gaussian_fit_recovers_line() -> None:
    rng = np.random.default_rng(23)
    yy, xx = np.mgrid[:384, :384].astype(float)
    scene = 200.0 + 10.0 * xx + 2.0 * yy  # 200 .. ~4800, smooth
    a, b = 0.8, 400.0
    img = scene + rng.normal(size=scene.shape) * np.sqrt(a * scene + b)
    fit = fit_poisson_gaussian(img, block=16)
    assert fit.n_blocks == 24 * 24
    assert fit.a == pytest.approx(a, rel=0.1)
    assert fit.b == pytest.approx(b, abs=150.0)
    assert fit.std_at(2000.0) == pytest.approx(np.sqrt(a * 2000 + b), rel=0.05)


def test_poisson_gaussian_mask_and_flat_image() -> None:
    rng = np.random.default_rng(24)
    yy, xx = np.mgrid[:128, :128].astype(float)
    scene = 500.0 + 20.0 * xx
    img = scene + rng.normal(size=scene.shape) * np.sqrt(scene)
    mask = np.ones(img.shape, bool)
    mask[:, :64] = False
    fit = fit_poisson_gaussian(img, block=16, mask=mask)
    assert fit.n_blocks == 8 * 4 and fit.bin_means.min() > 500 + 20 * 64
    with pytest.raises(InvalidArrayError):
        fit_poisson_gaussian(img, mask=mask[:, :10])
    with pytest.raises(InvalidArrayError):  # no intensity spread
        fit_poisson_gaussian(np.full((128, 128), 100.0) + rng.normal(0, 1, (128, 128)) * 0)
