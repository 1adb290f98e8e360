"""Noise-inconsistency cue: edges between intensities, thin structures, planted regions."""

from __future__ import annotations

import numpy as np

from medforensics.forgery.scoring import SCORE_WINDOW, image_score
from medforensics.forgery.cues.noise import noise_inconsistency_map


def _radiograph(seed: int, h: int = 320, w: int = 320) -> np.ndarray:
    """Smooth content with strongly signal-dependent noise (std = 0.25 * sqrt(value))."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    base = 3000 + 1500 * np.sin(yy / 45.0) * np.cos(xx / 60.0)
    return base + rng.normal(0, 1, (h, w)) * 0.25 * np.sqrt(base)


def test_edge_between_quiet_and_noisy_intensities_is_not_flagged() -> None:
    """A step from dark (quiet) to bright (noisy) tissue, off the block grid.

    A block straddling it has a mean between the two levels and a noise level (robust MAD)
    pulled towards the majority side: judged at its mean intensity only it looks too quiet;
    judged against its range of intensities it does not.
    """
    rng = np.random.default_rng(4)
    h, w = 320, 320
    yy, xx = np.mgrid[:h, :w]
    # top: dark field | bright field, step at x = 165 (off the 8-px grid);
    # bottom: a ramp through every level in between (so the expectation is known there)
    base = np.where(xx < 165, 300.0 + 0.5 * xx, 8300.0 + 0.5 * xx) + 0.2 * yy
    base[160:] = 300.0 + 25.0 * xx[160:] + 0.2 * yy[160:]
    img = base + rng.normal(0, 1, (h, w)) * 0.02 * base  # noise std 2 % of the level
    strict = noise_inconsistency_map(img, range_aware=False, min_extent=0)
    ranged = noise_inconsistency_map(img, range_aware=True, min_extent=0)
    band = (slice(16, 144), slice(150, 180))
    assert strict.map[band].max() > 0.5  # the old rule flags the edge
    assert ranged.map[band].max() < 0.5
    assert image_score(ranged.map, SCORE_WINDOW) < 0.5


def test_planted_quiet_region_still_found_and_thin_line_removed() -> None:
    img = _radiograph(7)
    clean = noise_inconsistency_map(img)
    assert image_score(clean.map, SCORE_WINDOW) < 0.5
    tam = img.copy()
    # a 72-px region from a quieter device (noise at 35 %)
    y0, x0, s = 120, 150, 72
    smooth = 3000 + 1500 * np.sin(np.mgrid[y0 : y0 + s, x0 : x0 + s][0] / 45.0) * np.cos(
        np.mgrid[y0 : y0 + s, x0 : x0 + s][1] / 60.0)
    tam[y0 : y0 + s, x0 : x0 + s] = smooth + 0.35 * (img[y0 : y0 + s, x0 : x0 + s] - smooth)
    # a thin quiet line (4 px wide, e.g. a processed skin edge): lines of up to ~4 px fade
    # under the 16-px opening; 6-8 px wide ones are only attenuated (to ~0.5-0.75 here)
    ly, lx = np.mgrid[45:49, 20:300]
    line = 3000 + 1500 * np.sin(ly / 45.0) * np.cos(lx / 60.0)
    tam[45:49, 20:300] = line + 0.2 * (img[45:49, 20:300] - line)
    ni = noise_inconsistency_map(tam)
    assert ni.map[y0 + 16 : y0 + s - 16, x0 + 16 : x0 + s - 16].mean() > 0.8
    assert ni.z[y0 + 16 : y0 + s - 16, x0 + 16 : x0 + s - 16].mean() < -3
    assert ni.map[37:57, 30:290].max() < 0.5  # the line fades under the opening
    raw = noise_inconsistency_map(tam, min_extent=0)
    assert raw.map[37:57, 30:290].max() > 0.55  # ... which is what removes it


def test_partly_clipped_region_scored_but_large_clipped_background_not() -> None:
    """A quiet region with ~10 % of its pixels clipped at the image minimum (small blobs) is
    found (scored on its other pixels); a large clipped background is not flagged."""
    img = _radiograph(11)
    img[:, :64] = 0.0  # collimated / background strip at the minimum (large clipped area)
    tam = img.copy()
    y0, x0, s = 150, 150, 80
    yy, xx = np.mgrid[y0 : y0 + s, x0 : x0 + s]
    smooth = 3000 + 1500 * np.sin(yy / 45.0) * np.cos(xx / 60.0)
    reg = smooth + 0.3 * (img[y0 : y0 + s, x0 : x0 + s] - smooth)
    for by in range(3, s - 5, 16):  # 5x5 blobs pushed to the end of the value range
        for bx in range(5, s - 5, 16):
            reg[by : by + 5, bx : bx + 5] = 0.0
    tam[y0 : y0 + s, x0 : x0 + s] = reg
    inner = (slice(y0 + 16, y0 + s - 16), slice(x0 + 16, x0 + s - 16))
    now = noise_inconsistency_map(tam)
    before = noise_inconsistency_map(tam, max_clipped=0.0)
    assert now.map[inner].mean() > 0.7
    assert before.map[inner].max() < 0.5  # every block there touches a clipped pixel
    clean = noise_inconsistency_map(img)
    assert clean.map[:, :96].max() < 0.5 and image_score(clean.map, SCORE_WINDOW) < 0.5


def test_weak_fingerprint_evidence_shapes_the_map_not_the_score() -> None:
    from medforensics.forgery.localize import localize

    img = _radiograph(13).astype(np.float32)
    y0, x0, s = 96, 96, 128
    img[y0 : y0 + s, x0 : x0 + s] += 10000.0  # the "other device" region, easy for the stub
    img[y0 : y0 + s : 4, x0 : x0 + s : 2] = img.max()  # 12.5 % clipped inside it

    def stub(patches: np.ndarray) -> np.ndarray:
        p1 = np.clip((patches > 9000).mean(axis=(1, 2)), 0.01, 0.99)
        return np.log(np.stack([1 - p1, p1], 1))

    res = localize(img, cues=["fingerprint"], patch_logprobs=stub,
                   cue_params={"fingerprint": {"patch": 64, "stride": 32}})
    strict, weak = res.cues["fingerprint"], res.cues["fingerprint_weak"]
    inner = (slice(y0 + 32, y0 + s - 32), slice(x0 + 32, x0 + s - 32))
    assert strict[inner].max() == 0.0  # its patches are too clipped for the strict cue
    assert 0.4 < weak[inner].min() <= 0.45
    assert res.map[inner].min() > 0.4  # the map shows it ...
    assert res.score < 0.05 and res.forged_area_percent == 0.0  # ... the verdict does not
    assert weak[:32, :32].max() < 0.05


def _skin_line_image(seed: int, *, quiet_patch: bool) -> tuple[np.ndarray, tuple[slice, slice]]:
    """A clipped background on the left, a quieter band along its edge (as peripheral
    equalisation leaves it: the intensity of the interior, the noise of thin tissue),
    optionally a quiet patch far inside. Returns the image and the band's slices."""
    rng = np.random.default_rng(seed)
    h, w, edge = 1152, 1024, 160
    yy, xx = np.mgrid[:h, :w]
    base = 3000 + 1500 * np.sin(yy / 70.0) * np.cos(xx / 90.0)
    noise = rng.normal(0, 1, (h, w)) * 0.25 * np.sqrt(base)
    # the noise fades in from 0.45 x at the skin line to 1 x at 96 px
    fade = np.clip(0.45 + 0.55 * (xx - edge) / 96.0, 0.45, 1.0)
    noise *= fade
    band = (slice(0, h), slice(edge + 8, edge + 64))
    if quiet_patch:
        noise[500:596, 700:796] *= 0.3
    img = base + noise
    img[:, :edge] = img.min() - 100.0  # clipped background (the image's minimum)
    return img, band


def test_quiet_band_along_the_background_is_compared_with_its_own_distance_stratum() -> None:
    img, band = _skin_line_image(11, quiet_patch=False)
    one = noise_inconsistency_map(img, edge_strata=())
    strata = noise_inconsistency_map(img)  # default: (128, 256) px from the background
    # against the interior, the band is too quiet along its whole length
    assert (one.map[band] >= 0.5).mean() > 0.5
    # within 128 px of the background it is the norm: at most a speck right at the edge
    assert (strata.map[band] >= 0.5).mean() < 0.02
    assert (strata.map >= 0.5).sum() < 0.02 * (one.map >= 0.5).sum()


def test_quiet_patch_inside_is_still_found_with_distance_strata() -> None:
    img, band = _skin_line_image(12, quiet_patch=True)
    ni = noise_inconsistency_map(img)
    assert ni.map[516:580, 716:780].mean() > 0.8
    assert (ni.map[band] >= 0.5).mean() < 0.02


def test_thin_distance_strata_are_merged() -> None:
    # a 320-px image has ~1600 scored blocks over its four grids: every stratum is below
    # min_stratum, so the map is that of a single expectation
    img = _radiograph(3)
    img[:, :40] = img.min() - 50.0
    a = noise_inconsistency_map(img, edge_strata=())
    b = noise_inconsistency_map(img, edge_strata=(64, 128))
    c = noise_inconsistency_map(img, edge_strata=(64, 128), min_stratum=100)
    np.testing.assert_array_equal(a.z, b.z)
    assert not np.array_equal(a.z, c.z)


def test_fingerprint_min_coverage_damps_thinly_covered_pixels() -> None:
    from medforensics.forgery.cues.fingerprint import fingerprint_llr_map

    img = _radiograph(17).astype(np.float32)
    H, W = img.shape
    corner = (slice(H - 64, H), slice(W - 64, W))  # covered by one patch only
    block = (slice(96, 224), slice(96, 224))  # deep inside: 16 patches per pixel
    img[corner] += 10000.0
    img[block] += 10000.0

    def stub(patches: np.ndarray) -> np.ndarray:
        p1 = np.clip((patches > 9000).mean(axis=(1, 2)), 0.001, 0.999)
        return np.log(np.stack([1 - p1, p1], 1))

    plain = fingerprint_llr_map(img, stub, patch=64, stride=16)
    damped = fingerprint_llr_map(img, stub, patch=64, stride=16, min_coverage=0.5)
    inner = (slice(128, 192), slice(128, 192))
    # the lone corner patch decides its pixels alone in the plain mean; with the floor it
    # counts as 1 of 8
    assert plain.map[H - 8 :, W - 8 :].min() > 0.9
    assert damped.map[H - 8 :, W - 8 :].max() < 0.15
    # a region seen by every covering patch keeps its level
    assert np.allclose(damped.map[inner], plain.map[inner]) and plain.map[inner].min() > 0.5
    assert np.all(damped.map <= plain.map + 1e-6)
