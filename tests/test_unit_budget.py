"""Bounded memory of the unit-pattern step: PyWavelets residual, tiles, budget per file.

Small generated images; the tile sizes are lowered with monkeypatch so that the tiled paths
run on them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

import medforensics.source.units as fpmod
from medforensics.dsp import wavelet
from medforensics.dsp.prnu import pce, tile_grid, window_origin
from medforensics.dsp.residuals import (
    DEFAULT_WINDOWS,
    _pad_for_levels,
    estimate_sigma,
    wavelet_noise,
    wiener_noise_part,
)
from medforensics.dsp.wavelet_fast import dwt2_fast, idwt2_fast, wavedec2_fast, waverec2_fast
from medforensics.errors import ConfigError, MemoryBudgetError
from medforensics.source.units import UnitFingerprints
from medforensics.source.unit_records import FingerprintConfig


def _scene(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    x = ndimage.gaussian_filter(rng.normal(size=shape), 8)
    return 800.0 + 2000.0 * (x - x.min()) / np.ptp(x)


def _shot(rng: np.random.Generator, k: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    s = _scene(rng, shape) * (1.0 + k[: shape[0], : shape[1]])
    return (s + rng.normal(size=shape) * np.sqrt(s)).astype(np.float32)


def _units(rng: np.random.Generator, shape: tuple[int, int], n_ref: int = 4
           ) -> tuple[UnitFingerprints, dict[str, np.ndarray]]:
    ks = {u: 0.01 * rng.normal(size=shape) for u in ("A #1", "A #2", "B #7")}
    fps = UnitFingerprints(FingerprintConfig(model="multiplicative"))
    fps.fit({u: [_shot(rng, k, shape) for _ in range(n_ref)] for u, k in ks.items()})
    return fps, ks


# ------------------------------------------------------------------ wavelet replacement
@pytest.mark.parametrize("name", ["haar", "db2", "db3", "db4", "db5", "db8"])
def test_pywavelets_transform_equals_the_numpy_one(name: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 128))
    a, d = wavelet.dwt2(x, name)
    fa, fd = dwt2_fast(x, name)
    assert np.allclose(fa, a, atol=1e-12)
    for got, want in zip(fd, d):
        assert np.allclose(got, want, atol=1e-12)
    assert np.allclose(idwt2_fast(fa, fd, name), x, atol=1e-12)
    A, D = wavelet.wavedec2(x, 3, name)
    FA, FD = wavedec2_fast(x.astype(np.float32), 3, name)
    assert FA.dtype == np.float32 and np.allclose(FA, A, atol=1e-4)
    for level, want in zip(FD, D):
        for got, w in zip(level, want):
            assert np.allclose(got, w, atol=1e-4)
    assert np.allclose(waverec2_fast(FA, FD, name), x, atol=1e-4)


def _numpy_wavelet_noise(img: np.ndarray, sigma: float, levels: int = 4) -> np.ndarray:
    """The residual as computed with the NumPy transform in float64 (the reference)."""
    padded, (r0, c0) = _pad_for_levels(img.astype(np.float64), levels, 8)
    approx, details = wavelet.wavedec2(padded, levels, "db4")
    new = [tuple(wiener_noise_part(b, sigma ** 2, DEFAULT_WINDOWS) for b in d)
           for d in details]
    res = wavelet.waverec2(np.zeros_like(approx), new, "db4")  # type: ignore[arg-type]
    return res[r0:r0 + img.shape[0], c0:c0 + img.shape[1]]


def test_residual_equals_the_numpy_wavelet_residual() -> None:
    rng = np.random.default_rng(1)
    img = _shot(rng, np.zeros((150, 230)), (150, 230))
    s = estimate_sigma(img)
    ref = _numpy_wavelet_noise(img, s)
    got = wavelet_noise(img, s)
    assert got.dtype == np.float32
    assert np.abs(got - ref).max() < 1e-4 * np.abs(ref).max()


def test_sigma_estimate_equals_the_haar_subband_one() -> None:
    rng = np.random.default_rng(2)
    img = _shot(rng, np.zeros((121, 90)), (121, 90))
    img[:30] = img.max()  # a clipped band: flat 2x2 blocks are left out
    x = img[:120, :90].astype(np.float64)
    _, (_, _, hh) = wavelet.dwt2(x, "haar")
    b = x.reshape(60, 2, 45, 2)
    flat = b.max(axis=(1, 3)) == b.min(axis=(1, 3))
    v = hh[~flat]
    want = 1.4826 * np.median(np.abs(v - np.median(v)))
    assert estimate_sigma(img) == pytest.approx(want, rel=1e-9)


# ------------------------------------------------------------------ tiles
def test_tiled_residual_matches_untiled_away_from_the_border() -> None:
    rng = np.random.default_rng(3)
    img = _shot(rng, np.zeros((400, 520)), (400, 520))
    s = estimate_sigma(img)
    whole = wavelet_noise(img, s)
    tiled = wavelet_noise(img, s, tile=128, margin=128)
    inner = (slice(64, -64), slice(64, -64))
    rms = float(whole[inner].std())
    assert float(np.sqrt(np.mean((tiled[inner] - whole[inner]) ** 2))) < 1e-3 * rms
    assert np.corrcoef(tiled.ravel(), whole.ravel())[0, 1] > 0.999


def test_tile_grid_covers_the_region_once() -> None:
    tiles = tile_grid((1000, 333), 256)
    cover = np.zeros((1000, 333), int)
    for rs, cs in tiles:
        assert rs.stop - rs.start <= 256 and cs.stop - cs.start <= 256
        cover[rs, cs] += 1
    assert (cover == 1).all()
    assert tile_grid((200, 100), 256) == [(slice(0, 200), slice(0, 100))]


def test_pce_energy_equals_the_masked_mean() -> None:
    rng = np.random.default_rng(4)
    cc = rng.normal(size=(64, 80))
    cc[3, 70] = 25.0
    res = pce(cc, 11)
    keep = np.ones(cc.shape, bool)
    keep[np.ix_(np.arange(-2, 9) % 64, np.arange(65, 76) % 80)] = False
    assert res.shift == (3, -10)
    assert res.pce == pytest.approx(25.0 ** 2 / np.mean(cc[keep] ** 2), rel=1e-9)


@pytest.fixture(scope="module")
def world() -> dict:
    rng = np.random.default_rng(5)
    shape = (256, 320)
    fps, ks = _units(rng, shape)
    queries = {u: _shot(rng, k, shape) for u, k in ks.items()}
    queries["unseen"] = _shot(rng, 0.01 * rng.normal(size=shape), shape)
    return {"fps": fps, "queries": queries}


def test_tiled_unit_step_matches_untiled(world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    fps: UnitFingerprints = world["fps"]
    whole = {q: {s.unit: s for s in fps.match_details(img)}
             for q, img in world["queries"].items()}
    monkeypatch.setattr(fpmod, "UNTILED_PIXELS", 64 * 64)
    monkeypatch.setattr(fpmod, "RESIDUAL_TILE", 96)
    monkeypatch.setattr(fpmod, "CORRELATION_TILE", 128)
    tiled = {q: {s.unit: s for s in fps.match_details(img)}
             for q, img in world["queries"].items()}
    for q in whole:
        for u, w in whole[q].items():
            t = tiled[q][u]
            if q == u:  # the matching unit: the same decision and nearly the same score
                assert w.pce > 60 and t.pce > 60
                assert t.pce == pytest.approx(w.pce, rel=0.1)
                assert t.ncc == pytest.approx(w.ncc, rel=0.05)
            else:  # no common pattern: both small
                assert abs(w.pce) < 30 and abs(t.pce) < 30
        assert max(tiled[q].values(), key=lambda s: s.pce).unit == \
            max(whole[q].values(), key=lambda s: s.pce).unit


def test_query_larger_than_the_patterns_is_scored_on_their_window(world: dict) -> None:
    fps: UnitFingerprints = world["fps"]
    img = world["queries"]["A #1"]
    big = np.pad(img, ((0, 300), (0, 200)), constant_values=float(np.median(img)))
    a = fps.match_details(img)
    b = fps.match_details(big)
    assert [s.unit for s in a] == [s.unit for s in b]
    for x, y in zip(a, b):
        assert y.pce == pytest.approx(x.pce, rel=1e-5) and y.overlap == x.overlap
    # the budget counts the window, not the whole image
    assert fps.window_bytes(big.shape) == fps.window_bytes(img.shape)


# ------------------------------------------------------------------ budget per file
def test_over_budget_is_a_specific_error(world: dict) -> None:
    fps: UnitFingerprints = world["fps"]
    img = world["queries"]["A #1"]
    need = fps.window_bytes(img.shape)
    fps.memory_budget = need - 1
    try:
        with pytest.raises(MemoryBudgetError) as err:
            fps.identify_unit(img)
        assert err.value.needed == need and err.value.reason == "over-memory-budget"
        fps.memory_budget = need
        assert fps.identify_unit(img)[0] == "A #1"
    finally:
        fps.memory_budget = fpmod.MEMORY_BUDGET


def test_running_out_of_memory_is_a_specific_error(world: dict,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fps: UnitFingerprints = world["fps"]

    def boom(*a: object, **k: object) -> None:
        raise MemoryError()

    monkeypatch.setattr(fps, "_score", boom)
    with pytest.raises(MemoryBudgetError):
        fps.match(world["queries"]["B #7"])


def _predictor(tmp_path: Path, fps: UnitFingerprints):  # type: ignore[no-untyped-def]
    from medforensics.models.io import save_model
    from medforensics.models.registry import create_model
    from medforensics.source.predictor import SourcePredictor

    torch.manual_seed(0)
    run = tmp_path / "run"
    save_model(run, create_model("patch", 2), {"classes": ["A", "B"], "label_column": "model"})
    pred = SourcePredictor.from_run(run, n_patches=4)
    pred.fingerprints = fps
    return pred


def test_batch_goes_on_after_an_oversize_file(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from medforensics.synth.simulate import simulate_archive
    from medforensics.io import read_image
    from medforensics.source.predictor import identify_files

    files = sorted(simulate_archive(tmp_path / "a", manufacturers=2, models_per_manufacturer=1,
                                    units_per_model=1, patients=2, images_per_patient=2,
                                    size=(160, 200), seed=0, multi_device_fraction=0.0))[:3]
    rng = np.random.default_rng(6)
    shape = read_image(files[0]).pixels.shape
    fps, _ = _units(rng, (max(shape), max(shape)), n_ref=2)
    fps.patterns = {"A #1": fps.patterns["A #1"], "B #7": fps.patterns["B #7"]}
    fps.counts = {u: fps.counts[u] for u in fps.patterns}
    pred = _predictor(tmp_path, fps)
    torch.set_num_threads(1)

    # over the budget: every file gets its own per-file error, none stops the batch
    fps.memory_budget = 1
    out = list(identify_files(pred, [*files, tmp_path / "missing.dcm"]))
    assert [v.verdict for v, _ in out] == ["unreadable"] * 4
    assert [v.reason for v, _ in out[:3]] == ["over-memory-budget"] * 3
    assert all("unit_error" in e for _, e in out[:3]) and out[3][0].reason == "file-access"

    # a file whose unit step runs out of memory: the next file still gets its verdict
    fps.memory_budget = fpmod.MEMORY_BUDGET
    real = UnitFingerprints._score
    calls = {"n": 0}

    def flaky(self: UnitFingerprints, q: object, unit: str):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError()
        return real(self, q, unit)

    monkeypatch.setattr(UnitFingerprints, "_score", flaky)
    out = list(identify_files(pred, files))
    assert out[0][0].verdict == "unreadable" and out[0][0].reason == "over-memory-budget"
    for v, extra in out[1:]:
        assert v.verdict != "unreadable" and "unit" in extra and "unit_score" in extra


# ------------------------------------------------------------------ compared window
def test_window_origin_avoids_clipped_pixels_and_prefers_the_middle() -> None:
    img = np.full((300, 300), 500.0, np.float32)
    # no clipping: the middle of the range the window can take
    assert window_origin(img, (100, 100), (300, 300), np.inf, -np.inf) == (100, 100)
    # the middle and the top-left are clipped (collimation): the window moves to the end
    img[:220, :220] = 4095.0
    assert window_origin(img, (100, 100), (300, 300), 4095.0, -np.inf) == (200, 200)
    # a side shorter than the window in the region every pattern covers: start at 0
    assert window_origin(img, (100, 100), (80, 300), 4095.0, -np.inf)[0] == 0


def test_windowed_score_equals_the_score_of_the_cropped_image_and_patterns(world: dict) -> None:
    fps: UnitFingerprints = world["fps"]
    img = world["queries"]["A #1"]
    win = UnitFingerprints(FingerprintConfig(model="multiplicative", window=128),
                           patterns=fps.patterns, counts=fps.counts, n_images=fps.n_images)
    scores = {s.unit: s for s in win.match_details(img)}
    r0, c0 = scores["A #1"].origin
    assert scores["A #1"].overlap == (128, 128)
    assert (r0, c0) == ((256 - 128) // 2, (320 - 128) // 2)  # nothing clipped: the middle
    crop = UnitFingerprints(
        FingerprintConfig(model="multiplicative", window=0),
        patterns={u: p[r0:r0 + 128, c0:c0 + 128] for u, p in fps.patterns.items()},
        counts={u: c[r0:r0 + 128, c0:c0 + 128] for u, c in fps.counts.items()},
        n_images=fps.n_images)
    ref = {s.unit: s for s in crop.match_details(img[r0:r0 + 128, c0:c0 + 128])}
    for u, s in scores.items():
        assert s.pce == pytest.approx(ref[u].pce, rel=1e-4, abs=1e-3)
    # the matching unit is still far above the floor on a quarter of the pixels; others not
    assert scores["A #1"].pce > 60 and max(abs(scores[u].pce) for u in ("A #2", "B #7")) < 30
    assert win.identify_unit(img)[0] == "A #1"


def test_the_window_bounds_the_memory_of_a_huge_query(world: dict) -> None:
    fps: UnitFingerprints = world["fps"]
    small = UnitFingerprints(FingerprintConfig(model="multiplicative", window=128),
                             patterns=fps.patterns, counts=fps.counts, n_images=fps.n_images)
    assert small.window_bytes((16384, 16384)) == small.window_bytes((128, 128))
    assert small.window_bytes((16384, 16384)) < fps.window_bytes((16384, 16384))


def test_window_below_64_px_is_refused() -> None:
    with pytest.raises(ConfigError, match="window"):
        FingerprintConfig(window=32)
