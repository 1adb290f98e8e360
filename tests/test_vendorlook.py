"""Tests of the vendor-look archive (medforensics.synth.vendorlook, simulate --vendor-look)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medforensics.data.transforms import paper_preprocess
from medforensics.io import read_image
from medforensics.synth.detector import model_look, simulate_image
from medforensics.synth.devices import build_devices
from medforensics.synth.simulate import DEVICES_FILE, load_devices, simulate_archive
from medforensics.synth.vendorlook import (
    LUT_FAMILIES,
    ImageLook,
    draw_image_look,
    enhance,
    lut,
    make_look,
    overlay,
)

SMALL = dict(manufacturers=2, models_per_manufacturer=2, units_per_model=1, patients=10,
             images_per_patient=(1, 2), size=(96, 160), seed=3)


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(np.ascontiguousarray(pydicom.dcmread(p).pixel_array).tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def looked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("look") / "a"
    return out, simulate_archive(out, vendor_look=True, **SMALL)


def _plain_look(**kw: object) -> ImageLook:
    """An image look that does nothing, with ``kw`` overriding fields."""
    base = ImageLook(model_id="0.0", lut="gamma", lut_slope=1.0, lut_center=0.5,
                     range_pct=(1.0, 99.0), black=0.0, white=1.0, edge_radius=1.0,
                     edge_amount=0.0, eq_radius=0.05, eq_amount=0.0, nr_sigma=1.0,
                     nr_amount=0.0, shutter="none", frame_width=0.02, marker="",
                     marker_corner="tl", marker_size=0.1, marker_boxed=False,
                     marker_offset=(0.02, 0.02), text_lines=0, text_chars=8,
                     text_corner="br", text_level=0.9, text_seed=1)
    return replace(base, **kw)


# ------------------------------------------------------------------ archive and record

def test_look_archive_is_deterministic_and_records_each_models_look(
        tmp_path: Path, looked: tuple[Path, list[Path]]) -> None:
    root, paths = looked
    doc = load_devices(root)
    assert doc["parameters"]["vendor_look"] is True
    units = build_devices(manufacturers=2, models_per_manufacturer=2, units_per_model=1, seed=3)
    expected = {u.model_id: json.loads(json.dumps(asdict(model_look(u.model, 3))))
                for u in units}
    assert doc["looks"] == expected
    again = simulate_archive(tmp_path / "again", vendor_look=True, **SMALL)
    assert _digest(again) == _digest(paths)
    assert load_devices(tmp_path / "again")["files"] == doc["files"]
    # excluding a device writes the same files for the others (looks depend on indices only)
    held = simulate_archive(tmp_path / "held", vendor_look=True, exclude=["1.1"], **SMALL)
    for p in held:
        rel = p.relative_to(tmp_path / "held")
        assert p.read_bytes() == (root / rel).read_bytes()
    # the default archive is not touched by the option
    plain = load_devices(simulate_archive(tmp_path / "plain", **SMALL)[0].parents[2])
    assert "looks" not in plain and "vendor_look" not in plain["parameters"]
    assert all("look" not in f for f in plain["files"])


def test_every_image_carries_its_models_look(looked: tuple[Path, list[Path]]) -> None:
    root, paths = looked
    doc = load_devices(root)
    lo, hi = SMALL["size"]
    burned = 0
    for p, f in zip(paths, doc["files"]):
        model = doc["looks"][f["model_id"]]
        il = f["look"]
        assert il["model_id"] == f["model_id"] and il["lut"] == model["lut"]
        assert il["shutter"] in (model["shutter"], "none")
        # image size: one of the model's formats, either orientation
        formats = set()
        for pos, aspect in model["matrices"]:
            long = min(max(int(round(lo + (hi - lo) * pos)) // 2 * 2, lo), hi)
            short = min(max(int(round(max(lo, long * aspect))) // 2 * 2, lo), hi)
            formats.add((long, short))
        assert tuple(sorted((f["rows"], f["cols"]), reverse=True)) in formats
        ds = pydicom.dcmread(p)
        is_burned = bool(il["marker"]) or il["text_lines"] > 0
        burned += is_burned
        assert ds.get("BurnedInAnnotation", "NO") == ("YES" if is_burned else "NO")
    assert 0 < burned < len(paths)


def test_each_models_look_changes_its_images_and_is_deterministic() -> None:
    units = build_devices(manufacturers=3, models_per_manufacturer=2, units_per_model=1,
                          seed=2)
    for u in units:
        plain, _ = simulate_image(u, (96, 128), seed=4)
        a, ph = simulate_image(u, (96, 128), seed=4, vendor_look=True)
        b, _ = simulate_image(u, (96, 128), seed=4, vendor_look=True)
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.uint16 and a.shape == (96, 128)
        assert a.max() <= (1 << u.model.bits_stored) - 1
        assert np.mean(a != plain) > 0.5, u.unit_id  # the look touches most pixels


def test_house_style_per_manufacturer_and_settings_per_model() -> None:
    looks = {(m, k): make_look(0, m, k, "DX", 0.143) for m in range(4) for k in range(3)}
    # the first four manufacturers have four different tone-curve families and shutters
    assert {looks[m, 0].lut for m in range(4)} == set(LUT_FAMILIES)
    assert len({looks[m, 0].shutter for m in range(4)}) == 4
    for m in range(4):
        ks = [looks[m, k] for k in range(3)]
        assert len({(lk.lut, lk.shutter, lk.marker_corner, lk.text_corner) for lk in ks}) == 1
        assert len({(lk.lut_slope, lk.edge_amount, lk.nr_amount) for lk in ks}) == 3
        assert all(lk.marker_corner != lk.text_corner for lk in ks)
    assert make_look(0, 1, 1, "DX", 0.143) == looks[1, 1]
    assert make_look(1, 1, 1, "DX", 0.143) != looks[1, 1]
    # per-image draws vary around the model's look
    rng = np.random.default_rng(0)
    draws = [draw_image_look(looks[0, 0], rng, "HAND", "L") for _ in range(50)]
    assert len({round(d.lut_center, 6) for d in draws}) == 50
    assert {d.marker for d in draws} <= {"L", ""} and any(d.marker for d in draws)


# ------------------------------------------------------------------- pure functions

@pytest.mark.parametrize("family", LUT_FAMILIES)
def test_lut_is_monotone_on_the_unit_interval(family: str) -> None:
    u = np.linspace(0.0, 1.0, 201, dtype=np.float32)
    for slope, center in [(0.7, 0.45), (1.5, 0.55), (8.0, 0.5)]:
        y = lut(u, family, slope, center)
        assert y.dtype == np.float32 and y.shape == u.shape
        assert y.min() >= 0.0 and y.max() <= 1.0
        assert np.all(np.diff(y) >= -1e-6)
        assert y[-1] - y[0] > 0.5
    with pytest.raises(ValueError):
        lut(u, "cubic", 1.0, 0.5)


def test_enhance_tone_and_overlay() -> None:
    rng = np.random.default_rng(1)
    u = (0.5 + 0.05 * rng.standard_normal((64, 80))).astype(np.float32)
    np.testing.assert_array_equal(enhance(u, _plain_look()), u)
    smoothed = enhance(u, _plain_look(nr_amount=0.8))
    sharpened = enhance(u, _plain_look(edge_amount=1.0))
    assert smoothed.dtype == np.float32 and smoothed.std() < 0.8 * u.std()
    assert sharpened.std() > 1.2 * u.std()
    field = np.zeros((64, 80), bool)
    field[10:50, 15:70] = True
    y = np.full((64, 80), 0.5, np.float32)
    out = overlay(y, field, _plain_look(shutter="black"))
    assert np.all(out[~field] == 0.0) and np.all(out[field] == 0.5)
    assert np.all(overlay(y, field, _plain_look(shutter="white"))[~field] == 1.0)
    framed = overlay(y, field, _plain_look(shutter="frame"))
    assert framed[0, 40] == 0.0 and framed[32, 40] == 0.5
    marked = overlay(y, np.ones_like(field), _plain_look(marker="R", marker_corner="br"))
    ys, xs = np.nonzero(marked == 1.0)
    assert ys.size > 10 and ys.min() > 32 and xs.min() > 40  # bottom-right corner
    texted = overlay(y, np.ones_like(field), _plain_look(text_lines=2, text_corner="tl"))
    ys, xs = np.nonzero(texted == np.float32(0.9))
    assert ys.size > 10 and ys.max() < 32 and xs.max() < 60
    np.testing.assert_array_equal(y, 0.5)  # inputs are not modified


# --------------------------------------------------------------------------- CLI

def test_cli_simulate_vendor_look(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medforensics.cli import app

    out = tmp_path / "cli"
    res = CliRunner().invoke(app, [
        "simulate", str(out), "--manufacturers", "2", "--models-per-manufacturer", "1",
        "--units-per-model", "1", "--patients", "3", "--size", "64-96", "--seed", "4",
        "--vendor-look", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "vendor looks" in res.output
    doc = json.loads((out / DEVICES_FILE).read_text())
    assert doc["parameters"]["vendor_look"] is True and set(doc["looks"]) == {"0.0", "1.0"}


# ------------------------------------------- the key check: what a histogram can see

def _hist_accuracy(root: Path) -> tuple[float, float]:
    """Patient-grouped 5-fold accuracy of logistic regression on 32-bin grey-level histograms
    of the 8-bit 256x256 images the paper presets see, and the chance level."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    doc = load_devices(root)
    x, y, groups = [], [], []
    for f in doc["files"]:
        u8 = paper_preprocess(read_image(root / f["path"]).pixels)
        h, _ = np.histogram(u8, bins=32, range=(0, 256))
        x.append(h / u8.size)
        y.append(f["model_id"])
        groups.append(f["patient_id"])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    acc = cross_val_score(clf, np.array(x), np.array(y), groups=np.array(groups),
                          cv=GroupKFold(n_splits=5)).mean()
    return float(acc), 1.0 / len(set(y))


@pytest.mark.slow
def test_histogram_classifier_sees_the_vendor_look_but_not_the_default_archive(
        tmp_path: Path) -> None:
    kw = dict(manufacturers=3, models_per_manufacturer=2, units_per_model=1, patients=60,
              images_per_patient=(1, 2), size=(128, 192), seed=1)
    simulate_archive(tmp_path / "plain", **kw)
    simulate_archive(tmp_path / "look", vendor_look=True, **kw)
    plain, chance = _hist_accuracy(tmp_path / "plain")
    look, _ = _hist_accuracy(tmp_path / "look")
    assert plain < chance + 0.15, (plain, look, chance)
    assert look > chance + 0.3, (plain, look, chance)
