"""Exact-value keypoints (dsp/valuematch.py) and resampled copy-moves in the copy-move cue."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medforensics.dsp.valuematch import (
    fit_similarities,
    match_keys,
    similarity_equal_map,
    value_keypoints,
)
from medforensics.forgery.cues.copymove import detect_copy_move


def _scene(seed: int, shape: tuple[int, int] = (360, 420)) -> np.ndarray:
    """12-bit-like stored values: smooth content plus Poisson-Gaussian-ish noise, integers."""
    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.normal(size=shape), 10) * 6000 + 2000
    return np.rint(base + rng.normal(0, 15, shape)).astype(np.float32)


def _paste_turned(img: np.ndarray, angle: float, *, scale: float = 1.0, order: int = 0,
                  src: tuple[int, int] = (40, 40), dst: tuple[int, int] = (200, 250),
                  side: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Cut a block around ``src``, turn / scale it (``order`` 0 = nearest neighbour), paste
    its centre ``side`` x ``side`` at ``dst``. Returns (image, bool mask of changed pixels)."""
    big = int(side * 1.6)
    patch = img[src[0]:src[0] + big, src[1]:src[1] + big]
    if scale != 1.0:
        patch = ndimage.zoom(patch, scale, order=order)
    rot = ndimage.rotate(patch, angle, reshape=False, order=order, mode="nearest")
    c0 = (rot.shape[0] - side) // 2
    out = img.copy()
    out[dst[0]:dst[0] + side, dst[1]:dst[1] + side] = rot[c0:c0 + side, c0:c0 + side]
    return out, out != img


def test_keypoints_are_the_same_in_strips_and_whole() -> None:
    x = _scene(1)
    a = value_keypoints(x)
    b = value_keypoints(x, strip_rows=41)
    ia, ib = np.lexsort((a.x, a.y)), np.lexsort((b.x, b.y))
    assert len(a.y) > 1000
    np.testing.assert_array_equal(a.y[ia], b.y[ib])
    np.testing.assert_array_equal(a.keys[ia], b.keys[ib])
    # strict extrema: no keypoint has an equal neighbour, and every key's value is the pixel
    assert np.all(a.keys[:, 1] == a.keys[:, 0] * x[a.y, a.x])


@pytest.mark.parametrize("angle", [7.0, -23.0, 41.0])
def test_nearest_neighbour_turned_copy_is_found_with_its_angle(angle: float) -> None:
    img, changed = _paste_turned(_scene(2), angle)
    res = detect_copy_move(img)
    turned = [g for g in res.regions if g["transform"].startswith("rotate")]
    assert turned, res.regions
    g = turned[0]
    found = float(g["transform"].split()[1])
    assert abs(abs(found) - abs(angle)) < 1.0
    assert res.score > 0.5
    # the map covers the pasted block (both copy and source are marked)
    assert (res.map[changed] >= 0.5).mean() > 0.7
    ys, xs = np.nonzero(changed)
    boxes = [g["bbox_a"], g["bbox_b"]]
    assert any(abs(b[0] - xs.min()) <= 6 and abs(b[1] - ys.min()) <= 6 for b in boxes)


def test_nearest_neighbour_scaled_copy_is_found_with_its_scale() -> None:
    img, changed = _paste_turned(_scene(3), 12.0, scale=1.2)
    kp = value_keypoints(img)
    i, j = match_keys(kp)
    models = fit_similarities(kp, i, j)
    assert models
    s = models[0].scale
    assert min(abs(s - 1.2), abs(s - 1 / 1.2)) < 0.02
    dst, src = similarity_equal_map(img, models[0])
    both = np.maximum(dst, src) >= 0.5
    assert (both & changed).sum() > 0.6 * changed.sum()


def test_untouched_translated_and_interpolated_give_no_resampled_copy() -> None:
    x = _scene(4)
    kp = value_keypoints(x)
    assert fit_similarities(kp, *match_keys(kp)) == []
    moved = x.copy()
    moved[200:296, 250:346] = x[40:136, 40:136]  # a translation: block matching's job
    res = detect_copy_move(moved)
    assert [g["transform"] for g in res.regions] == ["identity"]
    # interpolated values are not exact copies (the content search finds them: its tests
    # are in test_featurematch.py)
    bilinear, _ = _paste_turned(x, 17.0, order=1)
    res = detect_copy_move(bilinear, features=False)
    assert not [g for g in res.regions if g["transform"].startswith("rotate")]
    assert not [g for g in detect_copy_move(bilinear).regions if g["method"] == "values"]
    # lossy inputs: not searched by exact values (JPEG changes every value)
    nn, _ = _paste_turned(x, 17.0)
    assert not [g for g in detect_copy_move(nn, lossy=True).regions
                if g["method"] == "values"]
