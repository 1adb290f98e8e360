"""Tests of the simulated multi-device archive (medforensics.synth.simulate)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from medforensics.data.labels import normalize_manufacturer
from medforensics.dsp.residuals import zero_mean_rows_cols
from medforensics.errors import ConfigError
from medforensics.io import read_image
from medforensics.synth.anatomy import (
    MAMMOGRAPHY_PARTS,
    RADIOGRAPHY_PARTS,
    VIEWS,
    draw_patient_traits,
    render_anatomy,
)
from medforensics.synth.detector import simulate_image, unit_pattern
from medforensics.synth.devices import (
    SOP_CLASSES,
    build_devices,
    format_device_table,
    select_units,
)
from medforensics.synth.simulate import DEVICES_FILE, load_devices, simulate_archive

SMALL = dict(manufacturers=2, models_per_manufacturer=2, units_per_model=2, patients=10,
             images_per_patient=(1, 2), size=(96, 128), seed=5)


def _pixel_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(np.ascontiguousarray(pydicom.dcmread(p).pixel_array).tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("sim") / "small"
    return out, simulate_archive(out, **SMALL)


# ------------------------------------------------------------------------ files, headers

def test_files_are_valid_dicom_with_specified_headers(small: tuple[Path, list[Path]]) -> None:
    root, paths = small
    doc = load_devices(root)
    units = {u["unit_id"]: u for u in doc["units"]}
    models = doc["models"]
    assert len(paths) == len(doc["files"]) > 10
    sop_uids = set()
    for p, f in zip(paths, doc["files"]):
        assert p == root / f["path"] and p.is_file()
        ds = pydicom.dcmread(p)
        unit = units[f["unit_id"]]
        model = models[f["model_id"]]
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SOPClassUID == SOP_CLASSES[model["modality"]] == \
            ds.file_meta.MediaStorageSOPClassUID
        assert ds.Modality == model["modality"]
        assert ds.ManufacturerModelName == model["name"]
        assert ds.Manufacturer == unit["manufacturer_header"]
        assert ds.get("DeviceSerialNumber", "") == unit["serial"]
        assert ds.StationName == unit["station"] and ds.InstitutionName == unit["institution"]
        assert ds.SoftwareVersions == unit["software"]
        assert ds.PatientID == f["patient_id"] == p.parts[-3]
        assert str(ds.PatientName) and ds.StudyInstanceUID == f["study_uid"]
        assert ds.BodyPartExamined in RADIOGRAPHY_PARTS
        assert ds.ViewPosition in VIEWS[ds.BodyPartExamined]
        assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 0
        assert ds.BitsStored == model["bits_stored"] and ds.HighBit == ds.BitsStored - 1
        assert ds.PhotometricInterpretation == model["photometric"]
        assert ds.SamplesPerPixel == 1
        if ds.Modality == "DX":
            assert ds.PresentationIntentType == "FOR PRESENTATION"
            assert ds.RescaleSlope == 1 and ds.RescaleIntercept == 0
        arr = ds.pixel_array
        assert arr.shape == (ds.Rows, ds.Columns) == (f["rows"], f["cols"])
        assert 96 <= ds.Rows <= 128 and 96 <= ds.Columns <= 128
        assert arr.dtype == np.uint16 and int(arr.max()) <= 2 ** ds.BitsStored - 1
        assert arr.std() > 0
        sop_uids.add(ds.SOPInstanceUID)
    assert len(sop_uids) == len(paths)
    # one model writes MONOCHROME1 and both modalities of the default mix occur
    assert {m["photometric"] for m in models.values()} == {"MONOCHROME1", "MONOCHROME2"}
    assert {m["modality"] for m in models.values()} == {"DX", "CR"}


def test_reader_contract_and_labels(small: tuple[Path, list[Path]]) -> None:
    """The project's reader accepts every file; header spellings normalise to one label."""
    root, paths = small
    doc = load_devices(root)
    units = {u["unit_id"]: u for u in doc["units"]}
    for p, f in zip(paths, doc["files"]):
        img = read_image(p)
        assert img.pixels.dtype == np.float32 and img.pixels.shape == (f["rows"], f["cols"])
        assert img.meta.model == doc["models"][f["model_id"]]["name"]
    for m in doc["manufacturers"].values():
        assert len({normalize_manufacturer(s) for s in m["spellings"]}) == 1
    labels = {u["unit_id"]: u["labels"] for u in doc["units"]}
    assert len({v["unit"] for v in labels.values()}) == len(labels)  # units distinguishable
    assert len({v["model"] for v in labels.values()}) == len(doc["models"])
    assert len({v["manufacturer"] for v in labels.values()}) == len(doc["manufacturers"])
    # a unit without a serial number is labelled by its station name
    for u in units.values():
        if not u["serial"]:
            assert u["labels"]["unit"].endswith(u["station"])


def test_deterministic_for_a_seed(tmp_path: Path, small: tuple[Path, list[Path]]) -> None:
    root, paths = small
    again = simulate_archive(tmp_path / "again", **SMALL)
    assert [p.relative_to(tmp_path / "again") for p in again] == \
        [p.relative_to(root) for p in paths]
    assert _pixel_digest(again) == _pixel_digest(paths)
    a = pydicom.dcmread(again[0])
    b = pydicom.dcmread(paths[0])
    assert (a.SOPInstanceUID, a.StudyInstanceUID) == (b.SOPInstanceUID, b.StudyInstanceUID)
    other = simulate_archive(tmp_path / "other", **{**SMALL, "seed": 6, "patients": 4})
    assert _pixel_digest(other) != _pixel_digest(paths[:len(other)])
    assert pydicom.dcmread(other[0]).SOPInstanceUID != b.SOPInstanceUID


def test_holdout_writes_the_same_files_for_the_remaining_devices(
        tmp_path: Path, small: tuple[Path, list[Path]]) -> None:
    root, paths = small
    held = simulate_archive(tmp_path / "held", **SMALL, exclude=["0.0.1", "1.1"])
    doc = load_devices(tmp_path / "held")
    written = {f["unit_id"] for f in doc["files"]}
    assert "0.0.1" not in written and not any(u.startswith("1.1.") for u in written)
    assert [u["unit_id"] for u in doc["units"] if not u["written"]] == \
        ["0.0.1", "1.1.0", "1.1.1"]
    full = {f["path"]: f for f in load_devices(root)["files"]}
    assert held and len(held) < len(paths)
    for p in held:
        rel = p.relative_to(tmp_path / "held").as_posix()
        assert rel in full
        assert p.read_bytes() == (root / rel).read_bytes()
    only = simulate_archive(tmp_path / "only", **SMALL, include=["0.0.1", "1.1"])
    assert len(only) + len(held) == len(paths)


def test_device_parameters_are_stable_when_adding_units_and_models() -> None:
    base = build_devices(manufacturers=2, models_per_manufacturer=2, units_per_model=2, seed=3)
    more = build_devices(manufacturers=3, models_per_manufacturer=3, units_per_model=3, seed=3)
    by_id = {u.unit_id: u for u in more}
    for u in base:
        assert by_id[u.unit_id] == u
    assert len(more) == 27
    ragged = build_devices(manufacturers=1, models_per_manufacturer=2, units_per_model=[1, 3])
    assert [u.unit_id for u in ragged] == ["0.0.0", "0.1.0", "0.1.1", "0.1.2"]
    # models of an archive differ in their fingerprint parameters; units differ in serials
    models = {u.model_id: u.model for u in more}
    assert len({(m.psf_sigma, m.unsharp_radius, m.grid_freq) for m in models.values()}) == 9
    assert len({u.serial or u.station for u in more}) == 27
    table = format_device_table(base)
    assert all(u.unit_id in table for u in base)


def test_select_units_and_config_errors(tmp_path: Path) -> None:
    units = build_devices(manufacturers=2, models_per_manufacturer=1, units_per_model=2)
    assert [u.unit_id for u in select_units(units, include=["1"])] == ["1.0.0", "1.0.1"]
    assert [u.unit_id for u in select_units(units, exclude=["0.0"])] == ["1.0.0", "1.0.1"]
    with pytest.raises(ConfigError, match="matches no unit"):
        select_units(units, exclude=["9.9"])
    with pytest.raises(ConfigError, match="transfer syntax"):
        simulate_archive(tmp_path / "x", transfer_syntax="lossy-jpeg", patients=1)
    with pytest.raises(ConfigError, match="size"):
        simulate_archive(tmp_path / "y", size=(10, 20), patients=1)
    with pytest.raises(ConfigError, match="modalities"):
        build_devices(modalities=("CT",))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        simulate_archive(tmp_path / "full", patients=1)
    with pytest.raises(ConfigError, match="no unit"):
        simulate_archive(tmp_path / "z", manufacturers=1, models_per_manufacturer=1,
                         units_per_model=1, patients=1, exclude=["0"])


# --------------------------------------------------------------------- transfer syntaxes

@pytest.mark.parametrize("ts", ["implicit", "rle", "j2k", "jpeg-ls"])
def test_transfer_syntaxes_are_lossless(tmp_path: Path, ts: str) -> None:
    kw = dict(manufacturers=1, models_per_manufacturer=2, units_per_model=1, patients=2,
              images_per_patient=1, size=(64, 80), seed=1, multi_device_fraction=0.0)
    ref = simulate_archive(tmp_path / "ref", **kw)
    try:
        got = simulate_archive(tmp_path / ts, transfer_syntax=ts, **kw)
    except ConfigError as exc:  # only when the encoder plugin is missing
        assert ts in ("jpeg-ls", "j2k") and "no encoder" in str(exc)
        return
    from medforensics.synth.simulate import TRANSFER_SYNTAXES

    for a, b in zip(ref, got):
        da, db = pydicom.dcmread(a), pydicom.dcmread(b)
        assert db.file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES[ts]
        assert db.SOPInstanceUID == da.SOPInstanceUID  # compress() must not renew the UID
        np.testing.assert_array_equal(db.pixel_array, da.pixel_array)
        np.testing.assert_array_equal(read_image(b).pixels, read_image(a).pixels)


# -------------------------------------------------------------------- mammography, CLI

def test_mammography_archive(tmp_path: Path) -> None:
    paths = simulate_archive(tmp_path / "mg", manufacturers=1, models_per_manufacturer=1,
                             units_per_model=3, patients=4, images_per_patient=4,
                             size=(96, 128), modalities=("MG",), seed=2,
                             multi_device_fraction=0.0)
    assert len(paths) == 16
    views = set()
    for p in paths:
        ds = pydicom.dcmread(p)
        assert ds.Modality == "MG" and ds.BodyPartExamined in MAMMOGRAPHY_PARTS
        assert ds.SOPClassUID == SOP_CLASSES["MG"]
        assert ds.PresentationIntentType == "FOR PRESENTATION" and ds.PatientSex == "F"
        views.add((ds.ImageLaterality, ds.ViewPosition))
        assert ds.ViewCodeSequence[0].CodeMeaning
    assert views == {("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO")}


def test_cli_simulate(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medforensics.cli import app

    out = tmp_path / "cli"
    res = CliRunner().invoke(app, [
        "simulate", str(out), "--manufacturers", "1", "--models-per-manufacturer", "2",
        "--units-per-model", "1", "--patients", "3", "--size", "64", "--seed", "4",
        "--images-per-patient", "1-2", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert DEVICES_FILE in res.output and "DICOM files" in res.output
    doc = json.loads((out / DEVICES_FILE).read_text())
    assert doc["parameters"]["seed"] == 4 and doc["parameters"]["size"] == 64
    for f in doc["files"]:
        ds = pydicom.dcmread(out / f["path"])
        assert (ds.Rows, ds.Columns) == (64, 64)
    bad = CliRunner().invoke(app, ["simulate", str(tmp_path / "bad"), "--transfer-syntax",
                                   "nope", "--no-progress"])
    assert bad.exit_code == 2 and "unknown transfer syntax" in bad.output


# ------------------------------------------------------------------------------ physics

def test_anatomy_is_device_independent_and_valid() -> None:
    rng = np.random.default_rng(0)
    tr = draw_patient_traits(rng)
    for part in RADIOGRAPHY_PARTS + MAMMOGRAPHY_PARTS:
        for view in set(VIEWS[part]):
            ph = render_anatomy(part, view, "" if part == "CHEST" else "L", (90, 70), rng, tr)
            assert ph.attenuation.shape == (90, 70) and ph.attenuation.dtype == np.float32
            assert np.all(np.isfinite(ph.attenuation)) and ph.attenuation.min() >= 0
            assert ph.attenuation.max() > 0.3  # something is there
            assert ph.field.any()
    with pytest.raises(ValueError):
        render_anatomy("KNEE", "AP", "L", (64, 64), rng, tr)


def test_fixed_pattern_is_tied_to_the_pixel_grid() -> None:
    units = build_devices(manufacturers=2, models_per_manufacturer=1, units_per_model=2, seed=7)
    u = units[0]
    a = unit_pattern(u, (300, 180))
    b = unit_pattern(u, (140, 420))
    np.testing.assert_array_equal(a.gain[:140, :180], b.gain[:140, :180])
    np.testing.assert_array_equal(a.col_offset[:180], b.col_offset[:180])
    assert 0.3 * u.prnu_std < float(a.gain.std()) < 3 * u.prnu_std

    # noise residuals of different images (content, size) correlate on the common top-left
    # region for the same unit, not across units
    def residual(unit, seed, shape):
        img, _ = simulate_image(unit, shape, seed=seed)
        x = img.astype(np.float64) / (2 ** unit.model.bits_stored - 1)
        if unit.model.photometric == "MONOCHROME1":
            x = 1.0 - x
        ok = ndimage.binary_erosion((x > 0.021) & (x < 0.979), iterations=2)[:160, :160]
        r = (x - ndimage.gaussian_filter(x, 1.0))[:160, :160]
        r = zero_mean_rows_cols(np.where(ok, r, 0.0))  # drop grid lines and row/col offsets
        return r, ok

    shapes = [(160, 200), (192, 160), (176, 176)]
    res = {v.unit_id: [residual(v, 10 * i + j, shapes[j]) for j in range(3)]
           for i, v in enumerate(units)}

    def corr(p, q):
        (ra, ma), (rb, mb) = p, q
        m = ma & mb
        a, b = ra[m] - ra[m].mean(), rb[m] - rb[m].mean()
        return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))

    same = [corr(v[i], v[j]) for v in res.values() for i in range(3) for j in range(i + 1, 3)]
    ids = list(res)
    cross = [corr(res[ids[i]][a], res[ids[j]][b]) for i in range(len(ids))
             for j in range(i + 1, len(ids)) for a in range(3) for b in range(3)]
    assert min(same) > 0.03
    assert np.mean(same) > 5 * max(abs(np.mean(cross)), 0.005)
    assert max(abs(c) for c in cross) < min(same)


# ---------------------------------------------------- the key check: content vs fingerprint

def _hist_features(x: np.ndarray, bits: int) -> np.ndarray:
    """32-bin histogram of value / (2**bits - 1) plus the image size."""
    h, _ = np.histogram(x / (2 ** bits - 1), bins=32, range=(0.0, 1.0))
    return np.r_[h / x.size, x.shape]


def _residual_features(x: np.ndarray, bits: int) -> np.ndarray:
    """Statistics of a high-pass noise residual in smooth, unclipped regions.

    Log std, log mean|r|/std (tail weight), normalised autocorrelation at lags 1-3 per axis
    and, per axis, the most
    prominent peak of the residual's line spectrum (prominence and frequency; grid lines).
    """
    x = x / (2 ** bits - 1)
    m = ndimage.binary_erosion((x > 0.021) & (x < 0.979), iterations=3)
    s = ndimage.gaussian_filter(x, 2.0)
    grad = np.hypot(ndimage.sobel(s, 0), ndimage.sobel(s, 1))
    if m.sum() > 100:
        m &= grad < np.percentile(grad[m], 40)
    r = x - ndimage.gaussian_filter(x, 1.5)
    rv = r[m] if m.sum() > 10 else r.ravel()
    f = [np.log(rv.std() + 1e-12), np.log(np.mean(np.abs(rv)) / (rv.std() + 1e-12))]
    rz = np.where(m, r, 0.0)
    for ax in (0, 1):
        n = rz.shape[ax]
        for lag in (1, 2, 3):  # over pixel pairs that are both in the mask
            a = np.take(rz, range(0, n - lag), axis=ax)
            b = np.take(rz, range(lag, n), axis=ax)
            mm = np.take(m, range(0, n - lag), axis=ax) & np.take(m, range(lag, n), axis=ax)
            a, b = a[mm], b[mm]
            f.append(np.sum(a * b) / (np.sqrt(np.sum(a * a) * np.sum(b * b)) + 1e-12))
        spec = np.mean(np.abs(np.fft.rfft(rz, axis=ax)) ** 2, axis=1 - ax)
        fr = np.fft.rfftfreq(n)
        prom = spec / (ndimage.median_filter(spec, 9, mode="nearest") + 1e-20)
        sel = fr > 0.05
        i = int(np.argmax(prom[sel]))
        f += [np.log(prom[sel][i]), fr[sel][i]]
    return np.array(f)


@pytest.mark.slow
def test_content_does_not_reveal_the_model_but_the_fingerprint_does(
        tmp_path: Path) -> None:
    """Histogram + size classifier ~ chance for the model; residual statistics >= 0.9."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = tmp_path / "cls"
    simulate_archive(root, manufacturers=2, models_per_manufacturer=2, units_per_model=2,
                     patients=40, images_per_patient=(1, 3), size=(256, 320), seed=0)
    doc = load_devices(root)
    hist, resid, y, groups = [], [], [], []
    for f in doc["files"]:
        img = read_image(root / f["path"])
        bits = img.meta.bits_stored
        hist.append(_hist_features(img.pixels, bits))
        resid.append(_residual_features(img.pixels, bits))
        y.append(f["model_id"])
        groups.append(f["patient_id"])
    y_arr, g_arr = np.array(y), np.array(groups)
    chance = 1.0 / len(set(y))
    cv = GroupKFold(n_splits=5)  # by patient

    def acc(features: list[np.ndarray], clf) -> float:
        return float(cross_val_score(clf, np.array(features), y_arr, groups=g_arr, cv=cv).mean())

    def classifiers():
        return [RandomForestClassifier(n_estimators=200, random_state=0),
                make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))]

    hist_acc = [acc(hist, c) for c in classifiers()]
    resid_acc = [acc(resid, c) for c in classifiers()]
    assert max(hist_acc) < chance + 0.2, (hist_acc, resid_acc)
    assert max(resid_acc) >= 0.9, (hist_acc, resid_acc)
