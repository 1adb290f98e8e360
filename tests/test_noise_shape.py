"""The image's noise shape (residual lag correlations) and the open-set block built on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from fixtures_service import service_archive  # noqa: F401
from medforensics.dsp.noisetexture import TEXTURE_LAGS, image_noise_shape


@pytest.fixture(scope="module")
def shape_run(service_archive, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    """The service fixture's run, calibrated again with the noise-shape block (opt-in)."""
    import shutil

    from medforensics.source.calibrate import calibrate_run

    run = tmp_path_factory.mktemp("shape") / "run"
    shutil.copytree(service_archive.run, run)
    calibrate_run(run, service_archive.rows, n_patches=8, noise_shape=True)
    return run


def _noise(seed: int, shape: tuple[int, int] = (256, 256), sd: float = 20.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, sd, shape)


def test_white_noise_has_a_flat_shape() -> None:
    shape = image_noise_shape(np.round(2000 + _noise(0)))
    assert shape.shape == (len(TEXTURE_LAGS),)
    assert np.all(np.abs(shape) < 0.05)


def test_blur_along_rows_shows_in_the_horizontal_lags_only() -> None:
    blurred = ndimage.uniform_filter1d(_noise(1), 3, axis=1)
    shape = image_noise_shape(np.round(2000 + blurred))
    h1, v1 = shape[TEXTURE_LAGS.index((0, 1))], shape[TEXTURE_LAGS.index((1, 0))]
    assert h1 > 0.1
    assert abs(v1) < 0.05


def test_clipped_background_does_not_change_the_shape() -> None:
    img = np.round(2000 + ndimage.uniform_filter1d(_noise(2, (256, 512)), 3, axis=0))
    framed = img.copy()
    framed[:, :256] = 0  # collimated half at the minimum value
    full, half = image_noise_shape(img[:, 256:]), image_noise_shape(framed)
    assert np.allclose(full, half, atol=0.02)


@pytest.mark.parametrize("img", [np.zeros((300, 300)), np.full((300, 300), 4095.0),
                                 _noise(3, (40, 400))], ids=["flat", "saturated", "tiny"])
def test_nothing_to_measure_gives_nan(img: np.ndarray) -> None:
    assert np.all(np.isnan(image_noise_shape(img)))


def test_calibrated_run_judges_the_noise_shape(shape_run, service_archive) -> None:  # noqa: F811
    """A calibrated run's open-set model has a noise-shape block, and an image whose noise
    was re-shaped (blurred along the rows, levels kept) moves away from every known device."""
    from medforensics.io import read_image
    from medforensics.source.predictor import SourcePredictor

    cal = json.loads((shape_run / "calibration.json").read_text())
    assert cal["openset_blocks"] == ["network features", "noise shape"]
    pred = SourcePredictor.from_run(shape_run)
    assert pred.noise_shape and pred.openset.blocks[1] == len(TEXTURE_LAGS)
    path = next(r["path"] for r in service_archive.rows if r.get("split") == "test")
    px = read_image(path).pixels
    reshaped = px.mean() + ndimage.uniform_filter1d(px - px.mean(), 3, axis=1) * np.sqrt(3)
    lp, emb = pred.embeddings(px)
    assert emb.shape[1] == pred.openset.dim
    d_known = pred.predict(px).feature_distance
    d_reshaped = pred.predict(np.round(reshaped).astype(np.float32)).feature_distance
    assert d_reshaped > 3 * d_known


def test_a_refused_name_says_which_block_refused_it(shape_run, service_archive) -> None:  # noqa: F811
    """The verdict and its JSON quote each block's own distance, so an analyst sees whether
    the network's features or the noise shape put the image outside the known devices."""
    from medforensics.io import read_image
    from medforensics.source.predictor import SourcePredictor, identify_image
    from medforensics.source.schema import identify_record

    pred = SourcePredictor.from_run(shape_run)
    pred.fingerprints, pred.require_unit_match = None, False
    pred.feature_threshold = 1e-3  # every image beyond it: the refusal message is what is tested
    path = next(r["path"] for r in service_archive.rows if r.get("split") == "test")
    img = read_image(path)
    v, extra = identify_image(pred, img.pixels, img.meta, path)
    parts = extra["distance_parts"]
    assert set(parts) == {"network features", "noise shape"}
    assert max(parts.values()) == pytest.approx(v.feature_distance, rel=0.5)
    assert v.verdict == "UNKNOWN" and "noise shape" in v.message
    assert identify_record(v, extra)["distance_parts"] == pytest.approx(parts)


def test_report_row_shows_the_distance_parts() -> None:
    from medforensics.report.html import _device_rows

    dev = {"verdict": "UNKNOWN", "message": "m", "feature_distance": 7.9,
           "feature_threshold": 3.0,
           "distance_parts": {"network features": 1.1, "noise shape": 7.9}}
    row = dict(_device_rows(dev))["Open-set feature distance"]
    assert "network features 1.10" in row and "noise shape 7.90" in row
    del dev["distance_parts"]
    assert "noise shape" not in dict(_device_rows(dev))["Open-set feature distance"]


def test_windows_of_an_image_give_its_shape() -> None:
    """The model's input patches measure what the whole image does (the fast path)."""
    img = np.round(2000 + ndimage.uniform_filter1d(_noise(4, (512, 512)), 3, axis=1))
    rng = np.random.default_rng(0)
    corners = rng.integers(0, 512 - 64, size=(48, 2))
    windows = np.stack([img[y:y + 64, x:x + 64] for y, x in corners])
    whole = image_noise_shape(img)
    assert np.allclose(image_noise_shape(windows, clip_values=(img.min(), img.max())), whole,
                       atol=0.03)
    assert np.all(np.isnan(image_noise_shape(windows[:1])))  # 9 blocks: too few


def test_small_patches_measure_the_whole_image() -> None:
    """32-px patches cannot hold a 32-px block grid: the noise shape comes from the whole
    image."""
    import dataclasses

    from medforensics.source.patches import InputSpec, input_noise_shape, model_input

    img = np.round(2000 + ndimage.uniform_filter1d(_noise(5, (200, 240)), 3, axis=1))
    spec = InputSpec(preset="patch", patch=32, n_patches=16, noise_shape=True)
    inputs, _ = model_input(img.astype(np.float32), spec)
    assert np.allclose(input_noise_shape(img, inputs, spec), image_noise_shape(img))
    assert input_noise_shape(img, inputs, dataclasses.replace(spec, noise_shape=False)) is None


def test_a_class_without_a_measurable_shape_turns_the_block_off(monkeypatch) -> None:
    """Calibration does not fail, and does not judge by a block that cannot describe every
    known device: the open-set model falls back to the network's features."""
    from types import SimpleNamespace

    import medforensics.source.calibrate as cal

    rng = np.random.default_rng(6)
    k = len(TEXTURE_LAGS)

    def embed(pred, items):
        embs = []
        for _, y in items:
            e = np.hstack([rng.normal(y * 4.0, 1.0, (8, 10)), np.full((8, k), 0.1 * y)])
            if y == 1:
                e[:, -k:] = np.nan  # class 1: nothing to measure
            embs.append(e)
        return [None] * len(items), embs, [y for _, y in items]

    monkeypatch.setattr(cal, "_embed_rows", embed)
    pred = SimpleNamespace(noise_shape=True, classes=["A", "B"])
    openset, n = cal._fit_openset(pred, [({}, i % 2) for i in range(12)], 30)
    assert pred.noise_shape is False and openset.blocks == () and openset.dim == 10 and n == 12


def test_the_noise_shape_is_opt_in(service_archive) -> None:  # noqa: F811
    """A run calibrated with the defaults judges the network's features only."""
    cal = json.loads((service_archive.run / "calibration.json").read_text())
    assert cal["openset_blocks"] == ["network features"]
