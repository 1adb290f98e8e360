"""Noise-texture features (dsp/noisetexture.py) and the texture cue (forgery/texture.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, signal

from medforensics.dsp.noisetexture import (
    FEATURE_NAMES,
    anisotropy,
    block_texture_features,
    coarse_lattice_blocks,
    noise_texture_features,
    sign_to_pearson,
    texture_cell_sums,
    white_lag_correlation,
)
from medforensics.dsp.residuals import HIGHPASS_KERNELS, highpass_residual, robust_std
from medforensics.errors import ConfigError, InvalidArrayError
from medforensics.forgery.cues.texture import robust_mahalanobis, texture_inconsistency_map

LAGS = ((0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 0))


def _mean_features(img: np.ndarray) -> np.ndarray:
    f, _ = noise_texture_features(img)
    f = f.reshape(-1, f.shape[-1])
    ok = np.isfinite(f[:, :6]).all(axis=1)
    return f[ok].mean(axis=0)


def test_white_lag_correlation_of_kb_kernel() -> None:
    np.testing.assert_allclose(white_lag_correlation("kb"),
                               [-2 / 3, -2 / 3, 4 / 9, 4 / 9, 1 / 6, 1 / 6], atol=1e-12)
    with pytest.raises(ConfigError):
        white_lag_correlation("nope")


def test_sign_to_pearson_inverts_the_gaussian_relation() -> None:
    rho = np.array([-0.9, -0.3, 0.0, 0.5, 0.95])
    np.testing.assert_allclose(sign_to_pearson(2 / np.pi * np.arcsin(rho)), rho, atol=1e-12)


@pytest.mark.parametrize("sigma", [2.0, 5.0, 50.0, 500.0])
def test_white_noise_gives_zero_correlation_at_every_level(sigma: float) -> None:
    """Integer-rounded white noise: ~0 at every lag; rounding a noise of std 2 stored values
    biases the 1-px lags by a few hundredths (documented)."""
    rng = np.random.default_rng(1)
    img = np.round(20000 + sigma * rng.normal(size=(256, 256)))
    m = _mean_features(img)
    tol = 0.06 if sigma < 5 else 0.03
    assert np.all(np.abs(m[:6]) < tol), m
    assert abs(m[6] - 0.4) < 0.05  # lattice share of dense integer noise


def test_separable_smoothing_gives_the_predicted_correlation() -> None:
    """Noise smoothed along rows by g = [0.25, 0.5, 0.25]: its residual's correlation is the
    normalised autocorrelation of (kb * g), minus the white value."""
    g = np.array([[0.25, 0.5, 0.25]])
    rng = np.random.default_rng(2)
    img = ndimage.correlate(rng.normal(size=(320, 320)) * 100.0, g, mode="wrap")
    h = signal.convolve2d(HIGHPASS_KERNELS["kb"], g)
    e = float((h * h).sum())
    pad = np.pad(h, 3)
    pred = []
    for dy, dx in LAGS:
        sh = np.roll(np.roll(pad, -dy, axis=0), -dx, axis=1)
        pred.append(float((pad * sh).sum()) / e)
    pred = np.array(pred) - white_lag_correlation("kb")
    m = _mean_features(img)
    np.testing.assert_allclose(m[:6], pred, atol=0.03)
    assert pred[0] > 0.3 and abs(pred[1]) < 1e-9  # blur along rows only
    assert anisotropy(m[None])[0] > 0.3


def test_features_are_invariant_to_noise_amplitude() -> None:
    rng = np.random.default_rng(3)
    base = ndimage.gaussian_filter(rng.normal(size=(192, 192)), (0.0, 0.8)) * 50.0
    a, _ = noise_texture_features(base)
    b, _ = noise_texture_features(base * 7.3 + 1000.0)
    np.testing.assert_allclose(a[..., :6], b[..., :6], atol=1e-12)  # signs are unchanged
    assert np.isnan(a[..., 6]).all()  # not integer-valued: no lattice share


def test_lattice_share_sees_gain_steps() -> None:
    rng = np.random.default_rng(4)
    dense = np.round(3000 + 30 * rng.normal(size=(256, 256)))
    img = dense.copy()
    img[64:160, 64:160] = np.round(3000 + 3.0 * (dense[64:160, 64:160] - 3000))
    cells = texture_cell_sums(img)
    f_abs, _ = block_texture_features(cells)
    f_rel, _ = block_texture_features(cells, relative_lattice=True)
    inside = (slice(5, 7), slice(5, 7))  # blocks fully inside the gained square
    outside = (slice(11, 15), slice(11, 15))
    assert f_abs[inside + (6,)].max() < 0.15 and f_abs[outside + (6,)].mean() > 0.33
    # relative to the image's own histogram (dense there): strongly negative inside only
    assert f_rel[inside + (6,)].max() < -0.15 and np.abs(f_rel[outside + (6,)].mean()) < 0.08


def test_within_cell_pair_counts_match_a_direct_count() -> None:
    rng = np.random.default_rng(9)
    img = np.round(500 + 3 * rng.normal(size=(64, 64)))
    ign = np.zeros(img.shape, bool)
    ign[3:9, 5:30] = True
    cells = texture_cell_sums(img, ignore=ign)
    for cy, cx in ((0, 0), (0, 1), (2, 3)):
        v = img[cy * 16:(cy + 1) * 16, cx * 16:(cx + 1) * 16][
            ~ign[cy * 16:(cy + 1) * 16, cx * 16:(cx + 1) * 16]]
        d = np.abs(v[:, None] - v[None, :])
        off = ~np.eye(v.size, dtype=bool)
        assert cells.near12[cy, cx] == ((d >= 1) & (d <= 2)).sum()
        assert cells.near_all[cy, cx] == ((d <= 2) & off).sum()
        assert cells.near_pixels[cy, cx] == ((d <= 2) & off).any(axis=1).sum()
        assert cells.distinct[cy, cx] == np.unique(v).size


@pytest.mark.parametrize("gain", [3.0, 8.0, 13.3])
def test_coarse_lattice_sees_content_scaled_up_from_fewer_grey_levels(gain: float) -> None:
    """Wide integer noise (std 25: few adjacent pairs within +-2, the pair lattice share is
    weak) with a square whose values were scaled up by ``gain`` and rounded: the within-cell
    counts find it, and nothing else."""
    rng = np.random.default_rng(10)
    img = np.round(2000 + 25 * rng.normal(size=(256, 256)))
    low = np.round((img[64:160, 64:160] - 2000) / gain)  # a low-range source ...
    img[64:160, 64:160] = np.round(2000 + gain * low)    # ... matched back to this range
    z, ratio, npix, distinct = coarse_lattice_blocks(texture_cell_sums(img))
    inside = (slice(5, 7), slice(5, 7))
    outside = (slice(11, 15), slice(11, 15))
    assert ratio[inside].max() < 0.05 and z[inside].min() > 15
    assert ratio[outside].min() > 0.8 and z[outside].max() < 4
    assert distinct[inside].min() >= 16
    t = texture_inconsistency_map(img)
    assert t.score > 0.9 and t.map[80:144, 80:144].mean() > 0.9 and t.n_coarse >= 4
    assert t.map[:48].max() < 0.5 and t.map[:, 200:].max() < 0.5


def test_detector_names_a_coarse_lattice_region() -> None:
    from medforensics.forgery.detector import ForgeryDetector

    rng = np.random.default_rng(12)
    img = np.round(2000 + 25 * rng.normal(size=(256, 256)))
    det = ForgeryDetector.from_run(None)
    untouched = det.detect(img.astype(np.float32), None)
    # noise and nothing else: nothing found, and nothing there to edit - no clean bill
    assert untouched.verdict == "inconclusive" and "noise alone" in untouched.inconclusive_reason
    img[64:160, 64:160] = np.round(2000 + 8 * np.round((img[64:160, 64:160] - 2000) / 8))
    res = det.detect(img.astype(np.float32), None)
    assert res.verdict == "tampered" and res.regions[0]["cue"] == "texture"
    x0, y0, x1, y1 = res.regions[0]["bbox"]
    assert 56 <= x0 <= 72 and 56 <= y0 <= 72 and 152 <= x1 <= 168 and 152 <= y1 <= 168
    assert any("coarse lattice" in n for n in res.notes)
    assert res.regions[0].get("coarse_lattice") is True
    from medforensics.cli.forgery import _region_line

    assert "coarse lattice" in _region_line(1, res.regions[0])
    tex = texture_inconsistency_map(img)
    assert len(tex.coarse_boxes) == 1
    bx0, by0, bx1, by1 = tex.coarse_boxes[0]
    assert 48 <= bx0 <= 80 and 48 <= by0 <= 80 and 144 <= bx1 <= 176 and 144 <= by1 <= 176


def test_coarse_lattice_leaves_dense_flat_and_globally_coarse_images_alone() -> None:
    rng = np.random.default_rng(11)
    dense = np.round(2000 + 25 * rng.normal(size=(256, 256)))
    assert texture_inconsistency_map(dense).n_coarse == 0
    # a constant square (a burned-in graphic) is no lattice: too few distinct values
    flat = dense.copy()
    flat[64:160, 64:160] = 2100
    assert texture_inconsistency_map(flat).n_coarse == 0
    # the whole image on a step-4 lattice (a LUT): the histogram predicts it
    coarse = 4 * np.round(dense / 4)
    assert texture_inconsistency_map(coarse).n_coarse == 0
    with pytest.raises(ConfigError):
        coarse_lattice_blocks(texture_cell_sums(dense + 0.5))


def test_cell_sums_do_not_depend_on_the_strip_height() -> None:
    rng = np.random.default_rng(5)
    img = np.round(1000 + 10 * rng.normal(size=(200, 150)))
    ign = np.zeros(img.shape, bool)
    ign[50:60, 20:90] = True
    a = texture_cell_sums(img, ignore=ign, rows=512)
    b = texture_cell_sums(img, ignore=ign, rows=32)
    for k in ("prod", "pairs", "lat1", "lat012", "lat_expected", "near12", "near_all",
              "near12_expected", "near_pixels", "distinct"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


def test_bad_inputs() -> None:
    with pytest.raises(InvalidArrayError):
        texture_cell_sums(np.zeros((20, 20)))
    with pytest.raises(ConfigError):
        texture_cell_sums(np.zeros((64, 64)), lags=((0, -1),))
    with pytest.raises(ConfigError):
        noise_texture_features(np.zeros((64, 64)), block=24, step=16)
    with pytest.raises(InvalidArrayError):
        texture_inconsistency_map(np.zeros((32, 32)))
    with pytest.raises(ConfigError):
        texture_inconsistency_map(np.zeros((128, 128)), expected="nope")


def test_robust_mahalanobis_ignores_a_few_outliers() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2000, 4)) @ np.array([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 2, 0],
                                               [0, 0, 0, 0.3]])
    x[:60] += 6.0
    d2 = robust_mahalanobis(x)
    assert abs(np.median(d2[60:]) - 3.36) < 0.4  # chi-square(4) median
    assert np.median(d2[:60]) > 30
    with pytest.raises(InvalidArrayError):
        robust_mahalanobis(x[:3])


def _smooth_field(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return 3000 + 800 * np.sin(yy / 50.0) * np.cos(xx / 70.0)


def test_texture_cue_finds_a_region_with_other_noise_shape_at_the_same_level() -> None:
    """A 96-px square whose noise is blurred along rows (another scan direction) and gained back
    to the same high-pass noise level: the noise-level cue has nothing to see, the texture cue
    does."""
    from medforensics.forgery.scoring import SCORE_WINDOW, image_score
    from medforensics.forgery.cues.noise import noise_inconsistency_map

    rng = np.random.default_rng(7)
    h = w = 320
    base = _smooth_field(h, w)
    white = rng.normal(size=(h, w))
    clean = np.round(base + 20 * white)
    shaped = ndimage.gaussian_filter(rng.normal(size=(h, w)), (0.0, 1.0))
    # same noise level as the noise cue measures it (MAD of the normalised KB residual)
    shaped *= robust_std(highpass_residual(white, "kb")) / robust_std(
        highpass_residual(shaped, "kb"))
    tam = clean.copy()
    sl = (slice(112, 208), slice(96, 192))
    tam[sl] = np.round(base[sl] + 20 * shaped[sl])
    tc = texture_inconsistency_map(clean)
    tt = texture_inconsistency_map(tam)
    assert tc.score < 0.5 and tc.map.max() < 0.5
    inner = (slice(128, 192), slice(112, 176))
    assert tt.score > 0.9 and tt.map[inner].mean() > 0.9
    assert tt.map[:80].max() < 0.5 and tt.map[:, 240:].max() < 0.5
    assert set(tt.features) == set(FEATURE_NAMES)
    # the level is matched: the noise cue (default rules) does not call it
    assert image_score(noise_inconsistency_map(tam).map, SCORE_WINDOW) < 0.5


def test_blocks_touching_large_clipped_areas_are_not_scored() -> None:
    rng = np.random.default_rng(8)
    img = np.round(_smooth_field(256, 256) + 20 * rng.normal(size=(256, 256)))
    img[:, :100] = img.min() - 50  # background: one large clipped area
    res = texture_inconsistency_map(img)
    assert res.map[:, :100].max() == 0 and res.z[:, :96].max() == 0
    assert res.n_blocks > 32


def test_detector_with_and_without_the_texture_cue() -> None:
    from medforensics.forgery.detector import ForgeryDetector
    from medforensics.forgery.localize import DEFAULT_TEXTURE

    rng = np.random.default_rng(9)
    img = np.round(_smooth_field(192, 192) + 20 * rng.normal(size=(192, 192))).astype(np.float32)
    on = ForgeryDetector.from_run(None, texture=True)
    off = ForgeryDetector.from_run(None, texture=False)
    r_on, maps_on = on.detect_with_cues(img)
    r_off, maps_off = off.detect_with_cues(img)
    assert "texture" in maps_on and "texture" in r_on.cues and "texture" not in maps_off
    assert on.params["texture_cue"] is True and off.params["texture_cue"] is False
    assert ("texture" in ForgeryDetector.from_run(None).cue_names) == DEFAULT_TEXTURE
    assert r_on.score >= r_off.score - 1e-6  # max rule: a cue can only add


def test_cap_bands_caps_long_bands_and_keeps_compact_areas() -> None:
    from medforensics.forgery.cues.noise import cap_bands

    cue = np.zeros((400, 400), np.float32)
    yy, xx = np.mgrid[:400, :400]
    cue[((yy - 100) ** 2 + (xx - 100) ** 2) < 50 ** 2] = 0.9  # disc, ratio ~1
    r = np.hypot(yy - 400, xx - 400)
    cue[(r > 250) & (r < 280) & (xx > 150) & (yy > 150)] = 0.8  # curved band ~30 px thick
    out = cap_bands(cue, 8.0)
    assert out[100, 100] == pytest.approx(0.9)
    band = (r > 255) & (r < 275) & (xx > 160) & (yy > 160)
    assert out[band].max() <= 0.45 and out[band].min() > 0.4
    assert cap_bands(cue, 1000.0)[band].min() == pytest.approx(0.8)


def test_lossy_inputs_take_no_lattice_evidence() -> None:
    """A lossy codec's reconstruction makes its own value lattices: on lossy inputs localize
    runs the texture cue without the lattice features (an explicit cue_params entry still wins)."""
    from medforensics.forgery.localize import localize

    rng = np.random.default_rng(13)
    img = np.round(2000 + 25 * rng.normal(size=(256, 256)))
    img[64:160, 64:160] = np.round(2000 + 8 * np.round((img[64:160, 64:160] - 2000) / 8))
    kw = {"cues": ["texture"]}
    assert localize(img, lossy=False, **kw).details["texture"]["n_coarse"] >= 4
    lossy = localize(img, lossy=True, **kw)
    assert lossy.details["texture"]["n_coarse"] == 0
    assert "lattice" not in lossy.details["texture"]["features"]
    forced = localize(img, lossy=True, cue_params={"texture": {"coarse": True}}, **kw)
    assert forced.details["texture"]["n_coarse"] >= 4
