"""Noise whiteness (dsp/whiteness.py) and the whiteness cue (forgery/cues/whiteness.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medforensics.dsp.whiteness import block_whiteness
from medforensics.errors import ConfigError, InvalidArrayError
from medforensics.forgery.cues import get_cue, list_cues
from medforensics.forgery.cues.whiteness import whiteness_inconsistency_map, whitening_z
from medforensics.forgery.localize import localize


def _correlated(shape: tuple[int, int], seed: int, *, sigma: float = 40.0,
                blur: float = 0.8) -> np.ndarray:
    """Integer image: a gentle ramp plus Gaussian-blurred (correlated) noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    base = 2000.0 + 3.0 * xx + 2.0 * yy
    noise = ndimage.gaussian_filter(rng.normal(0.0, sigma, shape), blur)
    return np.rint(base + noise)


def test_block_whiteness_is_zero_for_white_and_positive_for_blurred_noise() -> None:
    rng = np.random.default_rng(0)
    white = np.rint(1000 + rng.normal(0, 20, (256, 256)))
    bw = block_whiteness(white)
    assert bw.offset.shape == (256 // 16 - 1, 256 // 16 - 1)
    assert abs(float(np.nanmedian(bw.offset))) < 0.03
    assert float(np.nanmedian(block_whiteness(_correlated((256, 256), 1)).offset)) > 0.2


def test_block_whiteness_checks_its_arguments() -> None:
    with pytest.raises(ConfigError):
        block_whiteness(np.zeros((64, 64)), cells_per_block=0)
    with pytest.raises(ConfigError):
        block_whiteness(np.zeros((64, 64)), cells_per_block=5)
    with pytest.raises(InvalidArrayError):
        block_whiteness(np.zeros((8, 8, 2)))


def test_whitening_z_is_one_sided_and_capped_at_white() -> None:
    ref = np.full(200, 0.2)
    w = 0.2 + 0.02 * np.random.default_rng(3).standard_normal(200)
    w[:3] = [0.0, -0.3, 0.5]  # white, beyond white, more correlated
    z = whitening_z(w, ref, scale_floor=0.02)
    assert z[0] == pytest.approx(z[1])  # capped at white
    assert z[0] > 5 and z[2] < 0
    assert np.all(whitening_z(w, np.zeros(200)) == 0)  # a white image: nothing is whiter


def test_white_block_inside_correlated_noise_is_flagged() -> None:
    img = _correlated((384, 384), 5)
    rng = np.random.default_rng(6)
    y, x, s = 128, 160, 96
    # a smooth fill (the block's mean plane) plus white noise of the image's noise level
    yy, xx = np.mgrid[y : y + s, x : x + s]
    img[y : y + s, x : x + s] = np.rint(2000.0 + 3.0 * xx + 2.0 * yy
                                        + rng.normal(0, 40.0 * 0.35, (s, s)))
    wi = whiteness_inconsistency_map(img)
    inside = wi.map[y + 16 : y + s - 16, x + 16 : x + s - 16]
    outside = np.ones(img.shape, bool)
    outside[y - 32 : y + s + 32, x - 32 : x + s + 32] = False
    assert float(inside.mean()) > 0.9
    assert float(wi.map[outside].max()) < 0.5
    assert wi.reference > 0.1


def test_untouched_correlated_and_white_images_are_not_flagged() -> None:
    for seed in range(3):
        wi = whiteness_inconsistency_map(_correlated((320, 384), 10 + seed))
        assert float(wi.map.max()) < 0.5, seed
    rng = np.random.default_rng(20)
    white = np.rint(3000 + rng.normal(0, 30, (320, 320)))
    wi = whiteness_inconsistency_map(white)
    assert float(wi.map.max()) < 0.01  # the image's own noise is white: nothing is whiter


def test_whiteness_cue_is_registered_and_off_by_default_on_lossy_inputs() -> None:
    from medforensics.forgery.detector import ForgeryDetector
    from medforensics.forgery.localize import DEFAULT_WHITENESS

    assert "whiteness" in list_cues()
    spec = get_cue("whiteness")
    assert spec.defaults["z_thr"] > 0
    assert ("whiteness" in ForgeryDetector.from_run(None).cue_names) == DEFAULT_WHITENESS
    assert "whiteness" not in ForgeryDetector.from_run(None, whiteness=False).cue_names
    img = _correlated((256, 256), 30).astype(np.float32)
    res = localize(img, cues=["whiteness"])
    assert "whiteness" in res.cues and res.cues["whiteness"].shape == img.shape
    res = localize(img, lossy=True, lossy_codec="jpeg")
    assert "whiteness" not in res.cues
