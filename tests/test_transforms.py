"""Paper preprocessing, patch-position sampling and inference tiles."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from medforensics.data.transforms import paper_preprocess, sample_patch_positions, tile_positions
from medforensics.errors import ConfigError, InvalidArrayError


def _noisy(h=300, w=400, seed=0, level=1000.0, sigma=20.0):
    rng = np.random.default_rng(seed)
    return rng.normal(level, sigma, (h, w)).astype(np.float32)


def test_paper_preprocess_range_shape_and_rescale():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 4096, (600, 500)).astype(np.float32)
    out = paper_preprocess(img)
    assert out.shape == (256, 256) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255
    assert np.array_equal(out, np.round(out))  # 8-bit levels
    # min-max: a linear gain/offset of the stored values gives the same result
    assert np.array_equal(paper_preprocess(img * 4 + 100), out)
    # at native size no resizing happens: pure min-max rounding
    ramp = np.tile(np.linspace(-50, 12000, 256, dtype=np.float32), (256, 1))
    exact = np.rint((ramp - ramp.min()) / (ramp.max() - ramp.min()) * 255)
    assert np.array_equal(paper_preprocess(ramp), exact.astype(np.float32))
    assert paper_preprocess(img, size=64).shape == (64, 64)
    assert not paper_preprocess(np.full((40, 30), 7.0)).any()  # constant -> zeros


def test_paper_preprocess_destroys_the_noise_fingerprint():
    """A fixed noise pattern (std 1 stored value) nearly vanishes after the paper steps."""
    rng = np.random.default_rng(1)
    pattern = rng.normal(0, 1, (1024, 1024))
    scene = np.tile(np.linspace(0, 4000, 1024), (1024, 1))
    a = paper_preprocess(scene + pattern)
    b = paper_preprocess(scene - pattern)
    assert np.abs(a - b).mean() < 0.1  # the +/- pattern is gone at 8-bit/256 px


def test_paper_preprocess_jpeg_and_errors():
    img = _noisy(200, 200)
    out = paper_preprocess(img, jpeg_quality=75)
    assert out.shape == (256, 256) and not np.array_equal(out, paper_preprocess(img))
    with pytest.raises(InvalidArrayError):
        paper_preprocess(np.zeros((4, 4, 3)))
    bad = img.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InvalidArrayError):
        paper_preprocess(bad)
    with pytest.raises(ConfigError):
        paper_preprocess(img, jpeg_quality=100)
    with pytest.raises(ConfigError):
        paper_preprocess(img, size=0)


def _overlap_area(p, patch, box):
    y, x = p
    y0, y1, x0, x1 = box
    return max(0, min(y + patch, y1) - max(y, y0)) * max(0, min(x + patch, x1) - max(x, x0))


def test_sample_patch_positions_skips_flat_saturated_and_collimated():
    img = _noisy()
    img[:, :60] = 0.0  # blanked collimator band on the left
    img[260:, :] = img.max() + 500  # clipped band at the bottom (image maximum)
    img[100:160, 200:280] = 1000.0  # flat (noise-free) block inside
    rng = np.random.default_rng(3)
    pos = sample_patch_positions(img, 32, 60, rng)
    assert len(pos) == 60 and len(set(pos)) == 60
    for y, x in pos:
        assert isinstance(y, int) and isinstance(x, int)
        assert 0 <= y <= 300 - 32 and 0 <= x <= 400 - 32
        assert x >= 58  # inside the collimation box
        assert y + 32 <= 262  # not in the clipped band (1-2 px residual edge)
        assert _overlap_area((y, x), 32, (102, 158, 202, 278)) <= 0.05 * 32 * 32  # <= 5% flat
    # with every filter off, the blank/clipped areas are sampled too
    free = sample_patch_positions(img, 32, 200, np.random.default_rng(3), skip_flat=False,
                                  skip_saturated=False, skip_collimated=False)
    assert min(x for _, x in free) < 58 and max(y for y, _ in free) > 262 - 32
    assert max(_overlap_area(p, 32, (102, 158, 202, 278)) for p in free) > 0.5 * 32 * 32


def test_sample_patch_positions_saturation_alone():
    img = _noisy(seed=4)
    img[:, 300:] = img.max()  # clipped right band
    pos = sample_patch_positions(img, 32, 40, 5, skip_flat=False, skip_collimated=False,
                                 max_saturated_fraction=0.01)
    assert len(pos) == 40 and all(x + 32 <= 301 for _, x in pos)
    # the default tolerates partly clipped windows (up to a quarter of their pixels)
    loose = sample_patch_positions(img, 32, 400, 5, skip_flat=False, skip_collimated=False)
    assert all(x + 32 <= 300 + 8 for _, x in loose)
    assert any(x + 32 > 301 for _, x in loose)


def test_sample_patch_positions_is_deterministic_and_reports_shortfall(caplog):
    img = _noisy(seed=6)
    a = sample_patch_positions(img, 64, 20, np.random.default_rng(9))
    b = sample_patch_positions(img, 64, 20, np.random.default_rng(9))
    assert a == b
    assert sample_patch_positions(img, 64, 0, 1) == []
    small = _noisy(40, 40)
    with caplog.at_level(logging.WARNING, logger="medforensics.data.transforms"):
        few = sample_patch_positions(small, 32, 200, 0)
    assert 0 < len(few) <= 81 and len(set(few)) == len(few)  # only 9x9 corners exist
    assert "only" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medforensics.data.transforms"):
        assert sample_patch_positions(np.full((100, 100), 5.0), 32, 10, 0) == []
    assert "no noise" in caplog.text


def test_sample_patch_positions_errors():
    with pytest.raises(InvalidArrayError):
        sample_patch_positions(_noisy(20, 20), 32, 5, 0)
    with pytest.raises(ConfigError):
        sample_patch_positions(_noisy(), 4, 5, 0)
    with pytest.raises(ConfigError):
        sample_patch_positions(_noisy(), 32, -1, 0)


def test_tile_positions_cover_every_pixel():
    tiles = tile_positions(100, 70, 32)
    assert tiles[0] == (0, 0) and tiles[-1] == (68, 38)
    covered = np.zeros((100, 70), bool)
    for y, x in tiles:
        covered[y:y + 32, x:x + 32] = True
    assert covered.all()
    assert len(tile_positions(64, 64, 32, 16)) == 9
    assert tile_positions(32, 32, 32) == [(0, 0)]
    with pytest.raises(InvalidArrayError):
        tile_positions(20, 70, 32)
    with pytest.raises(ConfigError):
        tile_positions(100, 100, 32, 0)


def test_window_stack_and_separable_residual_match_the_padded_reference():
    """The fast window gather equals cutting from a symmetric-padded image, and the
    separable residual / 5x5 box equal the 3x3 Ker-Boehme correlation and a uniform filter."""
    from scipy import ndimage

    from medforensics.data import transforms as T
    from medforensics.dsp.residuals import HIGHPASS_KERNELS

    img = _noisy(70, 90, seed=11)
    p = 16
    ys = np.array([0, 1, 2, 3, 30, 70 - p, 70 - p - 2, 40])
    xs = np.array([0, 5, 90 - p, 3, 40, 0, 90 - p, 90 - p - 3])
    stack = T._window_stack(img, ys, xs, p)
    padded = np.pad(img, T._PAD, mode="symmetric")
    side = p + 2 * T._PAD
    ref = np.stack([padded[y:y + side, x:x + side] for y, x in zip(ys, xs)])
    np.testing.assert_array_equal(stack, ref)

    kb = HIGHPASS_KERNELS["kb"]
    kb = kb / np.sqrt((kb ** 2).sum())
    r_ref = np.abs(ndimage.correlate(ref.astype(np.float64), kb[None]))[:, 1:-1, 1:-1]
    r = T._abs_residual(stack)
    np.testing.assert_allclose(r, r_ref, rtol=1e-4, atol=1e-3)
    box_ref = ndimage.uniform_filter(r_ref, size=(1, 5, 5))[:, 2:-2, 2:-2] * 25
    np.testing.assert_allclose(T._box5_sum(r), box_ref, rtol=1e-4, atol=1e-2)


def test_live_range_finds_uniform_borders_exactly():
    from medforensics.data import transforms as T

    img = _noisy(300, 200, seed=12)
    img[:37] = 100.0  # uniform band at the top (37 rows)
    img[:, 151:] = 7.0  # and at the right (49 columns)
    thr = 0.25 * np.median(T._line_noise(img[100:120]))
    assert T._live_range(img, 0, thr, chunk=16) == (37, 300)
    assert T._live_range(img, 1, thr, chunk=16) == (0, 151)
    assert T._live_range(np.full((50, 50), 3.0, np.float32), 0, 0.1) == (0, 0)
