"""Copies found by their content (dsp/featurematch.py): interpolated turns and scalings,
copies in JPEG images, and repeated anatomy that must not count as a copy."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from medforensics.dsp.featurematch import (
    Features,
    match_features,
    sift_features,
    similarity_content_map,
)
from medforensics.dsp.valuematch import SimilarityCopy, fit_similarities
from medforensics.errors import InvalidArrayError
from medforensics.forgery.cues.copymove import detect_copy_move
from medforensics.forgery.regions import overlap_share


def _scene(seed: int, shape: tuple[int, int] = (384, 448), noise: float = 15.0) -> np.ndarray:
    """12-bit-like stored values: textured content plus noise, integers."""
    rng = np.random.default_rng(seed)
    base = (ndimage.gaussian_filter(rng.normal(size=shape), 6) * 9000
            + ndimage.gaussian_filter(rng.normal(size=shape), 2) * 1500 + 2000)
    return np.rint(base + rng.normal(0, noise, shape)).astype(np.float64)


def _paste(img: np.ndarray, *, angle: float = 0.0, scale: float = 1.0,
           src: tuple[int, int] = (40, 40), dst: tuple[int, int] = (210, 260),
           side: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """A block around ``src`` turned / scaled with bilinear interpolation, pasted at ``dst``.
    Returns (image, bool mask of the pasted block)."""
    big = int(side * 1.6)
    patch = img[src[0]:src[0] + big, src[1]:src[1] + big]
    if scale != 1.0:
        patch = ndimage.zoom(patch, scale, order=1)
    if angle:
        patch = ndimage.rotate(patch, angle, reshape=False, order=1, mode="nearest")
    c0 = (patch.shape[0] - side) // 2
    out = img.copy()
    out[dst[0]:dst[0] + side, dst[1]:dst[1] + side] = np.rint(
        patch[c0:c0 + side, c0:c0 + side])
    mask = np.zeros(img.shape, bool)
    mask[dst[0]:dst[0] + side, dst[1]:dst[1] + side] = True
    return out, mask


def _content(res_regions: list[dict]) -> list[dict]:
    return [g for g in res_regions if g.get("method") == "content"]


@pytest.mark.parametrize("angle", [9.0, -27.0])
def test_bilinear_turned_copy_is_found_by_content_with_its_angle(angle: float) -> None:
    img, mask = _paste(_scene(1), angle=angle)
    res = detect_copy_move(img)
    found = _content(res.regions)
    assert found, res.regions
    g = found[0]
    assert g["transform"].startswith("rotate")
    assert abs(abs(float(g["transform"].split()[1])) - abs(angle)) < 1.0
    assert res.score > 0.5
    assert (res.map[mask] >= 0.5).mean() > 0.7  # the pasted block is marked


def test_bilinear_scaled_copy_is_found_with_its_scale() -> None:
    img, mask = _paste(_scene(2), scale=1.15, angle=4.0)
    found = _content(detect_copy_move(img).regions)
    assert found
    scale = float(found[0]["transform"].split("scale ")[1])
    assert min(abs(scale - 1.15), abs(scale - 1 / 1.15)) < 0.03


def test_translated_copy_in_a_jpeg_image_is_found() -> None:
    x = _scene(3)
    moved = x.copy()
    moved[220:332, 270:382] = x[30:142, 40:152]
    lo, hi = np.percentile(moved, [0.5, 99.5])
    u8 = np.clip((moved - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=90)
    jpeg = np.asarray(Image.open(buf), dtype=np.float64)
    res = detect_copy_move(jpeg, lossy=True)
    found = _content(res.regions)
    assert found and found[0]["transform"] == "identity"
    # one report per copy, whichever search found it first
    boxes = [tuple(g[k]) for g in res.regions for k in ("bbox_a", "bbox_b")]
    assert len(res.regions) == 1 or all(
        overlap_share(a, b) < 0.5 for i, a in enumerate(boxes) for b in boxes[i + 2:])
    assert (res.map[225:327, 275:377] >= 0.5).mean() > 0.7
    assert (res.map[35:137, 45:147] >= 0.5).mean() > 0.7
    # the same image without the copy: nothing
    u8o = np.clip((x - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8o).save(buf, format="JPEG", quality=90)
    clean = detect_copy_move(np.asarray(Image.open(buf), dtype=np.float64), lossy=True)
    assert not _content(clean.regions) and clean.score < 0.5


def test_repeated_structure_with_independent_noise_is_not_a_copy() -> None:
    # ribs: the same profile every 64 rows (content repeats exactly), noise independent
    rng = np.random.default_rng(4)
    h, w = 448, 384
    yy, xx = np.mgrid[:h, :w]
    profile = ndimage.gaussian_filter(rng.normal(size=(64, w)), (3, 6), mode="wrap") * 9000
    base = 3000 + profile[yy % 64, xx]
    img = np.rint(base + rng.normal(0, 60, (h, w)))
    u8 = np.clip((img - img.min()) / np.ptp(img) * 255, 0, 255).astype(np.uint8)
    f = sift_features(u8)
    models = fit_similarities(f, *match_features(f), tol=3.0, min_inliers=8,
                              block_transforms=True)
    assert models  # the features do match a period apart ...
    m = models[0]
    content, _ = similarity_content_map(img, m)
    fine, _ = similarity_content_map(img, m, sigma=1.0)
    region = content >= 0.8
    assert region.sum() > 1024  # ... and so does the content
    assert np.median(fine[region]) < 0.75  # but not the noise
    assert not _content(detect_copy_move(img, lossy=True).regions)


def test_untouched_scene_gives_no_content_copy() -> None:
    for seed in (5, 6):
        res = detect_copy_move(_scene(seed))
        assert not _content(res.regions) and res.score < 0.5


def test_sift_features_tiles_cover_the_image_once() -> None:
    u8 = np.clip(_scene(7, (700, 900)) / 40, 0, 255).astype(np.uint8)
    whole = sift_features(u8, tile=4096)
    tiled = sift_features(u8, tile=256)
    assert len(tiled.y) > 0.8 * len(whole.y)
    # SIFT gives one keypoint per dominant orientation, so a position may repeat; the tile
    # overlaps must not add repeats of their own
    def repeat_share(f: Features) -> float:
        pts = np.round(np.column_stack([f.y, f.x]), 1)
        return 1.0 - len(np.unique(pts, axis=0)) / len(pts)

    assert repeat_share(tiled) < repeat_share(whole) + 0.02
    with pytest.raises(InvalidArrayError):
        sift_features(u8.astype(np.float32))


def test_content_map_is_one_on_an_exact_shift_and_zero_near_the_fixed_point() -> None:
    x = _scene(8)
    moved = x.copy()
    moved[200:300, 250:350] = x[50:150, 60:160]
    dst_pts = np.array([[210, 260], [290, 340], [210, 340], [290, 260]])
    model = SimilarityCopy(a=1 + 0j, b=complex(190, 150), angle=0.0, scale=1.0,
                           src=dst_pts - [150, 190], dst=dst_pts)
    dst, src = similarity_content_map(moved, model)
    assert dst[215:285, 265:335].min() > 0.99
    assert src[65:135, 75:145].min() > 0.99
    assert dst[:150].max() == 0.0  # outside the examined box
    ident = SimilarityCopy(a=1 + 0j, b=0j, angle=0.0, scale=1.0, src=dst_pts, dst=dst_pts)
    d0, _ = similarity_content_map(moved, ident)
    assert d0.max() == 0.0  # every pixel is its own source: no evidence


def test_match_features_pairs_are_unique_and_far_apart() -> None:
    rng = np.random.default_rng(9)
    desc = rng.random((50, 128)).astype(np.float32)
    desc[25:] = desc[:25] + rng.normal(0, 1e-3, (25, 128)).astype(np.float32)
    y = rng.uniform(0, 500, 50)
    x = rng.uniform(0, 500, 50)
    y[25:] = y[:25] + 100
    i, j = match_features(Features(y, x, desc), min_dist=16)
    assert len(i) == 25 and np.all(i < j) and np.all(j - i == 25)


def test_detector_names_a_content_matched_turned_copy() -> None:
    from medforensics.cli.forgery import _region_line
    from medforensics.forgery.detector import ForgeryDetector

    img, mask = _paste(_scene(10), angle=-19.0)
    res = ForgeryDetector.from_run(None).detect(img.astype(np.float32), None)
    assert res.verdict == "tampered" and res.cues["copymove"] > 0.5
    assert ((res.prob_map >= 0.5) & mask).sum() > 0.7 * mask.sum()
    copies = [r for r in res.regions if r.get("copy_of")]
    assert copies
    cp = copies[0]["copy_of"]
    assert cp["method"] == "content" and cp["transform"].startswith("rotate")
    assert "matched by content" in _region_line(1, copies[0])


def test_interpolated_copy_is_named_by_its_quieter_noise() -> None:
    img, mask = _paste(_scene(11), angle=23.0)
    res = detect_copy_move(img)
    g = _content(res.regions)[0]
    assert g["decided"] and "interpolation" in g["cue"] and g["smoothing_log_ratio"] != 0
    pasted = g["bbox_b"] if g["target_side"] == "b" else g["bbox_a"]
    x0, y0, x1, y1 = pasted
    assert abs(x0 - 260) <= 8 and abs(y0 - 210) <= 8  # the pasted block, not its source
    # the source (the turned block's centre came from around (129, 129)) is down-weighted
    # below the map threshold; without the decision it is marked like the copy
    src = (slice(95, 165), slice(95, 165))
    assert (res.map[src] >= 0.5).mean() < 0.2
    assert (res.map[mask] >= 0.5).mean() > 0.7
    both = detect_copy_move(img, disambiguate=False)
    assert (both.map[src] >= 0.5).mean() > 0.7


def test_matches_do_not_depend_on_what_was_analysed_before() -> None:
    u8 = np.clip(_scene(12) / 40, 0, 255).astype(np.uint8)
    f = sift_features(u8)
    first = match_features(f)
    other = sift_features(np.ascontiguousarray(u8[::-1]))
    match_features(other)  # moves OpenCV's global random state
    again = match_features(f)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
