"""Tests of dsp.wavelet and dsp.residuals (noise residual extraction and clean-up)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from medforensics.dsp.residuals import (
    HIGHPASS_KERNELS,
    estimate_sigma,
    highpass_residual,
    noise_residual,
    robust_std,
    wiener_fft,
    zero_mean_rows_cols,
)
from medforensics.dsp.wavelet import daubechies_filters, dwt2, idwt2, wavedec2, waverec2
from medforensics.errors import ConfigError, InvalidArrayError


def _scene(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Smooth 12-bit-range content with a sharp disk edge."""
    x = ndimage.gaussian_filter(rng.normal(size=shape), 10)
    x = (x - x.min()) / np.ptp(x)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    disk = ((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2) < (min(shape) / 4) ** 2
    return 800.0 + 2500.0 * x + 600.0 * disk


# ---------------------------------------------------------------- wavelet
@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 8])
def test_daubechies_filters_are_orthonormal_with_vanishing_moments(n: int) -> None:
    h, g = daubechies_filters(n)
    assert len(h) == 2 * n
    assert h.sum() == pytest.approx(np.sqrt(2.0), abs=1e-10)
    for shift in range(0, len(h), 2):  # <h, h shifted by 2k> = delta_k
        expected = 1.0 if shift == 0 else 0.0
        assert np.dot(h[: len(h) - shift], h[shift:]) == pytest.approx(expected, abs=1e-9)
    k = np.arange(len(g), dtype=float)
    for m in range(n):  # high-pass kills polynomials of degree < n
        assert abs((g * k**m).sum()) < 1e-6 * max(1.0, (np.abs(g) * k**m).sum())


def test_named_wavelets_and_unknown() -> None:
    assert len(daubechies_filters("haar")[0]) == 2
    assert len(daubechies_filters("db4")[0]) == 8
    with pytest.raises(ConfigError):
        daubechies_filters("sym5")


@settings(max_examples=25, deadline=None)
@given(hb=st.integers(1, 6), wb=st.integers(1, 6), levels=st.integers(1, 3),
       wavelet=st.sampled_from(["haar", "db2", "db4"]), seed=st.integers(0, 2**16))
def test_wavedec_perfect_reconstruction_and_energy(hb: int, wb: int, levels: int,
                                                   wavelet: str, seed: int) -> None:
    step = 2**levels
    x = np.random.default_rng(seed).normal(size=(hb * step, wb * step))
    approx, details = wavedec2(x, levels, wavelet)
    assert len(details) == levels
    assert np.allclose(waverec2(approx, details, wavelet), x, atol=1e-9)
    energy = (approx**2).sum() + sum((b**2).sum() for d in details for b in d)
    assert energy == pytest.approx((x**2).sum(), rel=1e-9)


def test_dwt2_rejects_odd_and_wavedec_rejects_indivisible() -> None:
    with pytest.raises(InvalidArrayError):
        dwt2(np.zeros((5, 4)))
    with pytest.raises(InvalidArrayError):
        wavedec2(np.zeros((12, 16)), 3)
    a, d = dwt2(np.ones((8, 8)), "db2")
    assert np.allclose(d[2], 0) and np.allclose(idwt2(a, d, "db2"), 1.0)


# ---------------------------------------------------------------- residuals
def test_estimate_sigma_white_and_with_scene() -> None:
    rng = np.random.default_rng(1)
    n = rng.normal(0, 12.0, (256, 256))
    assert estimate_sigma(n) == pytest.approx(12.0, rel=0.05)
    assert estimate_sigma(_scene(rng, (256, 256)) + n) == pytest.approx(12.0, rel=0.10)
    assert robust_std(np.array([])) == 0.0
    clipped = _scene(rng, (256, 256)) + n
    clipped[:, :180] = 4095.0  # 70 % clipped (collimator / saturation)
    assert estimate_sigma(clipped) == pytest.approx(12.0, rel=0.10)
    assert estimate_sigma(np.full((8, 8), 3.0)) == 0.0


def test_noise_residual_on_mostly_clipped_image() -> None:
    rng = np.random.default_rng(9)
    noise = rng.normal(0, 10.0, (128, 128))
    img = _scene(rng, (128, 128)) + noise
    img[:, :90] = 4095.0
    w = noise_residual(img, zero_mean=False)
    assert np.corrcoef(w[:, 96:].ravel(), noise[:, 96:].ravel())[0, 1] > 0.85


# measured (seed 2): wavelet 0.927 / scene 0.006; local_wiener 0.671 / scene 0.061
@pytest.mark.parametrize("method,min_corr,max_leak", [("wavelet", 0.9, 0.02),
                                                      ("local_wiener", 0.6, 0.1)])
def test_noise_residual_recovers_noise_not_scene(method: str, min_corr: float,
                                                 max_leak: float) -> None:
    rng = np.random.default_rng(2)
    scene = _scene(rng, (192, 160))
    noise = rng.normal(0, 15.0, scene.shape)
    w = noise_residual(scene + noise, method=method)  # type: ignore[arg-type]
    assert w.shape == scene.shape and w.dtype == np.float32
    assert np.corrcoef(w.ravel(), noise.ravel())[0, 1] > min_corr
    # scene leakage: the residual is (almost) uncorrelated with the scene
    assert abs(np.corrcoef(w.ravel(), scene.ravel())[0, 1]) < max_leak


def test_noise_residual_keeps_edges_out() -> None:
    rng = np.random.default_rng(3)
    img = np.full((128, 128), 1000.0)
    img[:, 64:] = 3000.0  # a strong step, 130 sigma high
    w = noise_residual(img + rng.normal(0, 15.0, img.shape))
    assert np.abs(w).max() < 8 * 15.0
    # a sharp edge of a noise-free image leaves only a small residual
    assert np.abs(noise_residual(img, sigma=15.0)).max() < 0.05 * 2000.0


def test_noise_residual_small_and_odd_sizes() -> None:
    rng = np.random.default_rng(4)
    for shape in [(2, 2), (7, 33), (65, 3)]:
        w = noise_residual(rng.normal(100, 5, shape))
        assert w.shape == shape and np.all(np.isfinite(w))
    flat = noise_residual(np.full((32, 32), 7.0))
    assert np.allclose(flat, 0.0)


def test_noise_residual_bad_input() -> None:
    with pytest.raises(InvalidArrayError):
        noise_residual(np.zeros((4, 4, 3)))
    bad = np.ones((16, 16))
    bad[3, 3] = np.nan
    with pytest.raises(InvalidArrayError):
        noise_residual(bad)
    with pytest.raises(InvalidArrayError):
        noise_residual(np.ones((1, 16)))
    with pytest.raises(ConfigError):
        noise_residual(np.ones((16, 16)), method="bm3d")  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(h=st.integers(2, 40), w=st.integers(2, 40), seed=st.integers(0, 2**16))
def test_zero_mean_rows_cols_property(h: int, w: int, seed: int) -> None:
    x = np.random.default_rng(seed).normal(3.0, 2.0, (h, w))
    z = zero_mean_rows_cols(x)
    assert np.allclose(z.sum(axis=0), 0, atol=1e-3) and np.allclose(z.sum(axis=1), 0, atol=1e-3)
    assert np.allclose(zero_mean_rows_cols(z), z, atol=1e-5)  # idempotent


def test_zero_mean_removes_row_and_column_offsets() -> None:
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 1, (128, 128))
    lines = rng.normal(0, 3, (1, 128)) + rng.normal(0, 3, (128, 1))
    z = zero_mean_rows_cols(noise + lines)
    assert abs(np.corrcoef(z.ravel(), lines.ravel())[0, 1]) < 0.05
    assert np.corrcoef(z.ravel(), noise.ravel())[0, 1] > 0.98


def test_wiener_fft_removes_periodic_lines_keeps_noise() -> None:
    rng = np.random.default_rng(6)
    noise = rng.normal(0, 1, (128, 128))
    xx = np.arange(128)[None, :]
    lines = 2.0 * np.cos(2 * np.pi * 16 * xx / 128)  # grid-like vertical lines
    out = wiener_fft(noise + lines)
    spec_in = np.abs(np.fft.fft2(noise + lines))[0, 16]
    spec_out = np.abs(np.fft.fft2(out))[0, 16]
    assert spec_out < spec_in / 20
    assert np.corrcoef(out.ravel(), noise.ravel())[0, 1] > 0.95
    assert np.allclose(wiener_fft(np.zeros((8, 8))), 0)


def test_noise_residual_fft_filter_option() -> None:
    rng = np.random.default_rng(7)
    img = 1000 + rng.normal(0, 5, (64, 64)) + 20 * np.cos(2 * np.pi * 8 * np.arange(64) / 64)
    plain = noise_residual(img, zero_mean=False)
    filt = noise_residual(img, fft_filter=True)
    assert np.abs(np.fft.fft2(filt))[0, 8] < np.abs(np.fft.fft2(plain))[0, 8] / 5


# ---------------------------------------------------------------- high-pass
@pytest.mark.parametrize("kind", sorted(HIGHPASS_KERNELS))
def test_highpass_kills_constants_and_ramps(kind: str) -> None:
    yy, xx = np.mgrid[:40, :48].astype(float)
    ramp = 100.0 + 3.0 * xx - 2.0 * yy
    r = highpass_residual(ramp, kind)
    assert np.abs(r[3:-3, 3:-3]).max() < 1e-3  # interior; boundary is mirrored
    noise = np.random.default_rng(8).normal(0, 4.0, (256, 256))
    assert highpass_residual(noise, kind, normalize=True).std() == pytest.approx(4.0, rel=0.06)


def test_highpass_unknown_kind_and_second_order_values() -> None:
    with pytest.raises(ConfigError):
        highpass_residual(np.ones((8, 8)), "sobel")
    x = np.zeros((5, 5))
    x[2, 2] = 1.0
    r = highpass_residual(x, "d2h")
    assert r[2, 1] == 1.0 and r[2, 2] == -2.0 and r[2, 3] == 1.0 and r[1, 2] == 0.0


def test_masked_zero_mean_removes_column_pattern_inside_field() -> None:
    rng = np.random.default_rng(10)
    noise = rng.normal(0, 1, (128, 128))
    grid = 3.0 * np.cos(2 * np.pi * 0.3 * np.arange(128))[None, :]
    field = np.zeros((128, 128), bool)
    field[20:100, 10:120] = True
    field[40:70, 30:60] = False  # a clipped blob inside the field
    w = np.where(field, noise + grid, 0.0)
    plain = zero_mean_rows_cols(w)
    masked = zero_mean_rows_cols(w, field)
    g = np.broadcast_to(grid, w.shape)[field]
    assert abs(np.corrcoef(plain[field], g)[0, 1]) > 0.3  # unmasked means leave the lines
    assert abs(np.corrcoef(masked[field], g)[0, 1]) < 0.05
    assert np.all(masked[~field] == 0)
    assert np.allclose(masked.sum(axis=1), 0, atol=1e-3)
    with pytest.raises(InvalidArrayError):
        zero_mean_rows_cols(w, field[:5])
    r = noise_residual(1000 + 10 * rng.normal(size=(64, 64)), mask=field[:64, :64],
                       zero_mean=False)
    assert np.all(r[~field[:64, :64]] == 0) and abs(r[field[:64, :64]].mean()) < 1e-3
