"""Tests of dsp.prnu: pattern estimation, NCC, FFT cross-correlation, PCE."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from medforensics.dsp.prnu import (
    PatternAccumulator,
    crosscorr_2d,
    estimate_reference_pattern,
    ncc,
    pce,
    postprocess_pattern,
    saturation_mask,
)
from medforensics.errors import ConfigError, InvalidArrayError


def _smooth(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    x = ndimage.gaussian_filter(rng.normal(size=shape), 8)
    return 1000.0 + 2000.0 * (x - x.min()) / np.ptp(x)


def _shot(rng: np.random.Generator, k: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    s = _smooth(rng, shape) * (1.0 + k[: shape[0], : shape[1]])
    return s + rng.normal(size=shape) * np.sqrt(s + 25.0)


# ---------------------------------------------------------------- cross-correlation / PCE
@settings(max_examples=40, deadline=None)
@given(dy=st.integers(-31, 32), dx=st.integers(-47, 48), seed=st.integers(0, 2**16))
def test_pce_recovers_circular_shift_exactly(dy: int, dx: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(64, 96))
    b = np.roll(a, (dy, dx), axis=(0, 1)) + 2.0 * rng.normal(size=a.shape)
    res = pce(crosscorr_2d(b, a))
    assert res.shift == (dy, dx)
    assert res.pce > 100


@settings(max_examples=20, deadline=None)
@given(r=st.integers(0, 40), c=st.integers(0, 40), seed=st.integers(0, 2**16))
def test_crop_offset_recovered_with_zero_padding(r: int, c: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = rng.normal(size=(128, 128))
    crop = k[r : r + 80, c : c + 72] + rng.normal(size=(80, 72))
    cc = crosscorr_2d(crop, k)
    assert cc.shape == (128, 128)
    assert pce(cc).shift == (-r, -c)


def test_pce_independent_noise_is_small_and_matching_is_large() -> None:
    rng = np.random.default_rng(11)
    full, zero = [], []
    for _ in range(40):
        cc = crosscorr_2d(rng.normal(size=(128, 128)), rng.normal(size=(128, 128)))
        full.append(pce(cc).pce)
        zero.append(pce(cc, max_shift=0).pce)
    # measured: full-search max ~23.6 over 200 pairs (~2 ln(128^2) = 19.4); zero shift
    # is chi-square(1)-like, max ~5.6 over 200 pairs
    assert max(full) < 30 and np.median(full) > 5
    assert max(zero) < 12
    k = rng.normal(size=(128, 128))
    match = pce(crosscorr_2d(k + 5 * rng.normal(size=k.shape), k), max_shift=0)
    assert match.pce > 300 and match.shift == (0, 0)


def test_pce_max_shift_restricts_search() -> None:
    rng = np.random.default_rng(12)
    a = rng.normal(size=(64, 64))
    cc = crosscorr_2d(np.roll(a, (10, 3), axis=(0, 1)), a)
    assert pce(cc).shift == (10, 3)
    assert pce(cc, max_shift=12).shift == (10, 3)
    near = pce(cc, max_shift=2)
    assert max(abs(near.shift[0]), abs(near.shift[1])) <= 2 and near.pce < 30
    neg = pce(-cc, max_shift=12)
    assert neg.shift != (10, 3)  # the peak is the maximum, not the largest magnitude
    with pytest.raises(InvalidArrayError):
        pce(cc, neighborhood=64)


def test_ncc_properties() -> None:
    rng = np.random.default_rng(13)
    a, b = rng.normal(size=(32, 40)), rng.normal(size=(32, 40))
    assert ncc(a, a) == pytest.approx(1.0)
    assert ncc(a, -a) == pytest.approx(-1.0)
    assert ncc(3 * a + 7, a) == pytest.approx(1.0)
    assert abs(ncc(a, b)) < 0.1
    assert ncc(a, np.ones_like(a)) == 0.0
    with pytest.raises(InvalidArrayError):
        ncc(a, b[:, :39])


# ---------------------------------------------------------------- saturation
def test_saturation_mask() -> None:
    img = np.arange(100, dtype=float).reshape(10, 10)
    assert saturation_mask(img).all()  # one brightest pixel is not clipping
    img[2:4, 2:4] = 200.0
    m = saturation_mask(img)
    assert not m[2:4, 2:4].any() and not m[1, 1] and not m[4, 4]  # dilated by 1
    assert m[6:, 6:].all()
    assert (~saturation_mask(img, level=90.0, dilate=0)).sum() == 10 + 4  # 90..99 + plateau
    assert saturation_mask(img, dilate=0)[1, 1]
    img[7:, :] = -5.0  # bottom plateau (e.g. direct exposure clipped in a log image)
    low = saturation_mask(img, dilate=0)
    assert not low[7:].any() and low[5, 5]
    assert saturation_mask(img, dilate=0, clip_low=False)[7:].all()
    assert not saturation_mask(img, dilate=0, low_level=10.0)[1, 0]


# ---------------------------------------------------------------- estimation
def test_multiplicative_estimate_converges_to_true_pattern() -> None:
    rng = np.random.default_rng(14)
    k = 0.01 * rng.normal(size=(128, 128))
    corr = []
    for n in (2, 16):
        est, count = estimate_reference_pattern([_shot(rng, k, k.shape) for _ in range(n)])
        assert est.dtype == np.float32 and count.max() == n
        corr.append(ncc(est, k))
        # oracle (noise-free denoiser): per-image SNR = (0.01 * ~2000)^2 / ~2000
        snr = n * 0.2
        assert corr[-1] > np.sqrt(snr / (1 + snr)) - 0.05  # measured gap ~0.02
    assert corr[1] > 0.8 and corr[1] > corr[0]


def test_accumulator_sizes_counts_origin_and_saturation() -> None:
    rng = np.random.default_rng(15)
    k = 0.01 * rng.normal(size=(96, 128))
    acc = PatternAccumulator()
    acc.add(_shot(rng, k, (96, 128)))
    acc.add(_shot(rng, k, (64, 128)))
    acc.add(_shot(rng, k, (96, 64)))
    img = _shot(rng, k, (96, 128))
    img[:16, :16] = img.max() + 1  # clipped corner
    acc.add(img)
    est, count = acc.pattern()
    assert est.shape == (96, 128) and acc.n_images == 4
    assert count[70, 100] == 2 and count[70, 10] == 3 and count[10, 100] == 3
    assert count[30, 30] == 4 and count[5, 5] == 3  # saturated pixels left out
    placed = PatternAccumulator()
    placed.add(_shot(rng, k, (32, 32)), origin=(10, 20))
    e2, c2 = placed.pattern()
    assert e2.shape == (42, 52) and c2[:10].sum() == 0 and c2[10:, 20:].min() == 1
    assert np.all(e2[c2 == 0] == 0)
    with pytest.raises(InvalidArrayError):
        placed.add(np.ones((8, 8)), origin=(-1, 0))
    with pytest.raises(InvalidArrayError):
        placed.add(np.ones((8, 8)), residual=np.ones((8, 9)))


def test_additive_model_for_log_domain_images() -> None:
    rng = np.random.default_rng(16)
    k = 0.01 * rng.normal(size=(128, 128))
    imgs = [4000.0 - 500.0 * np.log(np.maximum(_shot(rng, k, k.shape), 1.0)) for _ in range(8)]
    add, _ = estimate_reference_pattern(imgs, model="additive")
    assert ncc(add, k) < -0.7  # -log(gain): the pattern comes out with negative sign
    with pytest.raises(ConfigError):
        PatternAccumulator(model="quadratic")  # type: ignore[arg-type]
    with pytest.raises(InvalidArrayError):
        estimate_reference_pattern([])


def test_postprocess_pattern_removes_lines() -> None:
    rng = np.random.default_rng(17)
    k = rng.normal(size=(64, 64))
    lines = 3 * rng.normal(size=(1, 64))
    out = postprocess_pattern(k + lines)
    assert np.allclose(out.sum(axis=0), 0, atol=1e-3)
    assert ncc(out, k) > 0.95
