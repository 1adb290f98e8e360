"""Strip-wise (memory-bounded) forgery cues: same maps as whole-image computation, bounded
working memory.

The strip height is shrunk so that a small image is cut into many strips; the whole-image
reference is the same code with one strip covering everything.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import medforensics.dsp.blockmatch as bm
import medforensics.dsp.noise as dn
from medforensics.dsp.residuals import highpass_residual
from medforensics.forgery.cues.copymove import detect_copy_move
from medforensics.forgery.cues.noise import noise_inconsistency_map


def _image(seed: int, h: int = 300, w: int = 260) -> np.ndarray:
    """12-bit Poisson-Gaussian-like radiograph with a copy-moved 56-px square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    base = 1500 + 900 * np.sin(yy / 37.0) * np.cos(xx / 53.0) + 2.0 * xx
    img = np.rint(base + rng.normal(0, 1, (h, w)) * np.sqrt(4.0 * base / 10 + 25)).clip(0, 4095)
    img[190:246, 150:206] = img[40:96, 30:86]
    img[:, :6] = 0  # a clipped border (excluded areas cross strip boundaries)
    return img.astype(np.float32)


@pytest.fixture
def small_strips(monkeypatch: pytest.MonkeyPatch):
    """Make every strip-wise pass use 40-row strips (and 1000-element chunks)."""

    def apply() -> None:
        monkeypatch.setattr(dn, "STRIP_ROWS", 40)
        monkeypatch.setattr(bm, "_STRIP", 40)
        monkeypatch.setattr(bm, "_CHUNK", 1000)
        import medforensics.forgery.cues.copymove as cm

        monkeypatch.setattr(cm, "STRIP_ROWS", 40)

    return apply


@pytest.mark.parametrize("kind", ["kb", "srm5", "d2h", "laplacian"])
def test_residual_strips_equal_whole_image(kind: str) -> None:
    rng = np.random.default_rng(3)
    for h in (3 if kind != "srm5" else 5, 41, 42, 43, 200):
        img = rng.integers(0, 4096, (h, 37)).astype(np.float32)
        whole = highpass_residual(img, kind, normalize=True)
        assert np.array_equal(dn.residual_strips(img, kind, normalize=True, rows=40), whole)
        assert np.array_equal(dn.residual_strips(img, kind, rows=1), highpass_residual(img, kind))


def test_strip_maps_equal_whole_image(small_strips) -> None:
    img = _image(5)
    cm_ref = detect_copy_move(img)
    ni_ref = noise_inconsistency_map(img)
    nl_ref = dn.noise_level_map(img, block=16)
    small_strips()
    cm = detect_copy_move(img)
    ni = noise_inconsistency_map(img)
    assert cm_ref.score > 0.5 and cm_ref.map[200:236, 160:196].mean() > 0.8  # it found it
    assert cm.shifts == cm_ref.shifts and cm.score == cm_ref.score
    np.testing.assert_allclose(cm.map, cm_ref.map, atol=1e-5)
    np.testing.assert_array_equal(dn.noise_level_map(img, block=16), nl_ref)
    np.testing.assert_array_equal(ni.map, ni_ref.map)
    np.testing.assert_array_equal(ni.z, ni_ref.z)


def test_block_matches_and_density_equal_whole_image(small_strips) -> None:
    img = _image(6)
    r = highpass_residual(img, "kb")
    ref = bm.match_blocks(r, block=8, min_shift=16)
    dens_ref = bm.match_density(img.shape, ref.b, 8)
    corr_ref = bm.shift_correlation(r, (150, 120), 7, region=(150, 290, 100, 250))
    small_strips()
    got = bm.match_blocks(r, block=8, min_shift=16)
    assert got.n_blocks == ref.n_blocks
    assert {tuple(p) for p in np.hstack([got.a, got.b])} == {tuple(p) for p in
                                                             np.hstack([ref.a, ref.b])}
    np.testing.assert_array_equal(bm.match_density(img.shape, ref.b, 8), dens_ref)
    np.testing.assert_allclose(bm.shift_correlation(r, (150, 120), 7,
                                                    region=(150, 290, 100, 250)),
                               corr_ref, atol=1e-6)
    # the density is the share of covering blocks whose corner is listed
    occ = np.zeros(img.shape)
    occ[ref.b[:, 0], ref.b[:, 1]] = 1
    y, x = 220, 180
    assert dens_ref[y, x] == pytest.approx(occ[y - 7 : y + 1, x - 7 : x + 1].sum() / 64)


def test_working_memory_of_the_cues_is_bounded(small_strips) -> None:
    """Peak numpy allocations of copy-move and noise cue stay a fixed multiple of the image.

    With strips small against the image, what remains are the whole-image arrays (residual,
    block keys and their sort order for copy-move; per-block grids for the noise cue). A pure
    noise image is the worst case (every block is a matching candidate). The strip-wise
    rewrite took one 4000 x 5000 detection from 2.79 to 1.19 GiB peak RSS.
    """
    small_strips()
    rng = np.random.default_rng(9)
    h, w = 768, 768
    img = np.rint(2000 + rng.normal(0, 20, (h, w))).astype(np.float32)
    img[400:500, 300:400] = img[100:200, 100:200]
    nbytes = img.nbytes
    for fn, bound in ((detect_copy_move, 10.5), (noise_inconsistency_map, 5.0)):
        tracemalloc.start()
        try:
            fn(img)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < bound * nbytes, (fn.__name__, peak / nbytes)
