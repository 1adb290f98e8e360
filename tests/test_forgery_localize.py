"""Cue combination, image score / area arithmetic, noise and fingerprint inconsistency maps."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from medforensics.errors import ConfigError, InvalidArrayError
from medforensics.forgery.localize import combine_cues, default_cues, localize
from medforensics.forgery.scoring import forged_area_percent, image_score
from medforensics.forgery.cues.fingerprint import fingerprint_map
from medforensics.forgery.cues.noise import noise_inconsistency_map
from medforensics.synth.tamper import tamper_array

N = 320


def _radiograph(seed: int, sigma: float = 25.0, n: int = N) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    base = 1500 + 900 * np.sin(xx / 37 + seed) * np.cos(yy / 51)
    noisy = base + rng.normal(0, 1, (n, n)) * np.sqrt(base) * sigma / np.sqrt(1500)
    return np.clip(noisy, 0, 4095).astype(np.uint16)


def test_combination_and_area_arithmetic() -> None:
    a = np.zeros((10, 10), np.float32)
    b = np.zeros((10, 10), np.float32)
    a[0, :4] = 0.8
    b[0, 2:6] = 0.6
    m = combine_cues({"a": a, "b": b})
    assert m[0].tolist()[:7] == pytest.approx([0.8, 0.8, 0.8, 0.8, 0.6, 0.6, 0.0])
    assert forged_area_percent(m, 0.5) == pytest.approx(6.0)  # 6 of 100 pixels
    assert forged_area_percent(m, 0.7) == pytest.approx(4.0)
    w = combine_cues({"a": a, "b": b}, {"a": 0.5})
    assert w[0, 0] == pytest.approx(0.4) and w[0, 4] == pytest.approx(0.6)
    # image score: max of the 9x9 mean; a single hot pixel hardly counts
    one = np.zeros((30, 30), np.float32)
    one[15, 15] = 1.0
    assert image_score(one) == pytest.approx(1 / 81)
    blob = np.zeros((30, 30), np.float32)
    blob[5:20, 5:20] = 0.7
    assert image_score(blob) == pytest.approx(0.7)
    with pytest.raises(ConfigError):
        combine_cues({})
    with pytest.raises(ConfigError):
        combine_cues({"a": a, "b": np.zeros((3, 3))})


def test_localize_copy_move_on_lossless() -> None:
    img = _radiograph(1)
    t = tamper_array(img, "copy-move", np.random.default_rng(2), sizes=(64, 96), feather=2.0)
    res = localize(t.pixels.astype(np.float32))
    assert any("ELA skipped" in n for n in res.notes) and "ela" not in res.cues
    assert res.score > 0.8 and res.cue_scores["copymove"] > 0.8
    area = 100.0 * t.mask.sum() / t.mask.size
    assert 0.5 * area < res.forged_area_percent < 2.5 * area  # target (+ maybe source)
    assert res.forged_area_percent == pytest.approx(forged_area_percent(res.map, 0.5))
    clean = localize(img.astype(np.float32))
    assert clean.score < 0.5 and clean.forged_area_percent < 0.1
    with pytest.raises(ConfigError):
        localize(img.astype(np.float32), cues=["magic"])


def test_noise_inconsistency_finds_quiet_splice_and_blur() -> None:
    img = _radiograph(3)
    quiet = _radiograph(4, sigma=6.0)
    clean = noise_inconsistency_map(img)
    assert clean.fit is not None and clean.fit[0] > 0
    assert (clean.map > 0.5).mean() < 0.005
    for kind in ("splice-device", "local-edit"):
        for s in range(4):
            t = tamper_array(img, kind, np.random.default_rng(s), donor=quiet, sizes=(64, 128))
            if kind == "local-edit" and t.detail["mode"] != "blur":
                continue
            ni = noise_inconsistency_map(t.pixels)
            assert ni.map[t.mask].mean() > 0.5, (kind, s)
            far = ~ndimage.binary_dilation(t.mask, iterations=16)  # 16-px block resolution
            assert (ni.map[far] > 0.5).mean() < 0.005
            assert np.median(ni.z[t.mask]) < -3
    with pytest.raises(InvalidArrayError):
        noise_inconsistency_map(np.zeros((20, 20)))


def test_fingerprint_map_with_stub_model() -> None:
    img = _radiograph(5).astype(np.float32)
    img[96:224, 64:192] += 10000.0  # the "other device" region, easy for the stub

    def stub(patches: np.ndarray) -> np.ndarray:
        frac = (patches > 5000).mean(axis=(1, 2))
        p1 = np.clip(frac, 0.01, 0.99)
        return np.log(np.stack([1 - p1, p1], 1))

    fm = fingerprint_map(img, stub, patch=64, stride=32)
    assert fm.image_class == 0
    assert fm.patch_logprobs.shape[2] == 2
    assert fm.map[128:192, 96:160].min() > 0.9
    assert fm.map[:32, :].max() < 0.05
    with pytest.raises(InvalidArrayError):
        fingerprint_map(img, lambda p: np.zeros((1, 2)), patch=64)
    res = localize(img, cues=["fingerprint"], patch_logprobs=stub,
                   cue_params={"fingerprint": {"patch": 64, "stride": 32}})
    assert res.cue_scores["fingerprint"] > 0.9


def test_ela_cue_used_for_lossy_input() -> None:
    img8 = (_radiograph(6) // 16).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img8, mode="L").save(buf, format="JPEG", quality=90)
    buf.seek(0)
    jpg = np.asarray(Image.open(buf)).copy()
    jpg[100:180, 120:200] = img8[100:180, 120:200]  # uncompressed paste
    res = localize(jpg.astype(np.float32), lossy=True, bits_stored=8, cues=["ela"])
    assert "ela" in res.cues and any("stored 8-bit values" in n for n in res.notes)
    inside = res.map[110:170, 130:190].mean()
    assert inside > 0.5 and res.map[:80].mean() < 0.2


def test_evaluate_tamper_manifest_end_to_end(tmp_path) -> None:
    from PIL import Image as PILImage

    from medforensics.forgery.evaluate import evaluate_tamper_manifest
    from medforensics.synth.tamper import generate

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        PILImage.fromarray(_radiograph(10 + i, n=256)).save(src / f"img{i}.png")
    rep = generate(src, tmp_path / "out", kinds=["copy-move"], seed=4, sizes=(64, 96),
                   feather=2.0)
    assert not rep.failures
    ev = evaluate_tamper_manifest(rep.manifest_path)
    assert ev["n_tampered"] == 3 and ev["n_original"] == 3 and not ev["failures"]
    assert ev["image_auc"] == 1.0 and ev["image_auc_by_kind"]["copy-move"] == 1.0
    assert ev["pixel"]["f1_best"] > 0.6 and ev["pixel"]["n_images"] == 3
    assert ev["fp_area_original"] < 0.5
    assert set(ev["pixel_by_cue"]) == set(default_cues(ela=False))


def test_noise_cue_extra_block_sizes_take_the_maximum() -> None:
    """``cue_params={"noise": {"extra_blocks": (32,)}}`` adds the noise cue at 32-px blocks: the map is the
    maximum of both scales, and a quieter square is found at least as strongly."""
    img = _radiograph(8).astype(np.float64)
    rng = np.random.default_rng(8)
    smooth = ndimage.uniform_filter(img, 5)
    img[100:196, 120:216] = np.rint(smooth[100:196, 120:216]
                                    + rng.normal(0, 8, (96, 96)))  # a third of the noise
    base = localize(img, cues=["noise"])
    two = localize(img, cues=["noise"], cue_params={"noise": {"extra_blocks": (32,)}})
    only32 = noise_inconsistency_map(img, block=32, min_extent=32).map
    assert np.allclose(two.cues["noise"], np.maximum(base.cues["noise"], only32))
    assert two.cue_scores["noise"] >= base.cue_scores["noise"] > 0.5
    assert any("32-px blocks" in n for n in two.notes)
