"""Tests of medforensics.source.units (unit identification from reference patterns)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from medforensics.errors import ConfigError, InvalidArrayError, ModelFileError
from medforensics.source.units import UnitFingerprints
from medforensics.source.unit_records import FingerprintConfig

SIZE = 160
LINEAR = FingerprintConfig(model="multiplicative")
PRNU = 0.006  # weak gain non-uniformity: 0.6 % rms (PCE of matches ~100-300)


def _anatomy(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Smooth random 'anatomy' with a sharp disk, 12-bit-like range."""
    x = ndimage.gaussian_filter(rng.normal(size=shape), 10)
    x = (x - x.min()) / np.ptp(x)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = rng.uniform(0.3, 0.7, 2) * np.array(shape)
    disk = ((yy - cy) ** 2 + (xx - cx) ** 2) < (rng.uniform(0.1, 0.3) * min(shape)) ** 2
    return 600.0 + 2400.0 * x + 700.0 * disk


def _shot(rng: np.random.Generator, k: np.ndarray, shape: tuple[int, int] = (SIZE, SIZE),
          cols: np.ndarray | None = None) -> np.ndarray:
    """anatomy * (1 + K) + column offsets + Poisson-Gaussian noise, float32."""
    s = _anatomy(rng, shape) * (1.0 + k[: shape[0], : shape[1]])
    if cols is not None:
        s = s + cols[: shape[1]][None, :]
    return (s + rng.normal(size=shape) * np.sqrt(s + 25.0)).astype(np.float32)


@pytest.fixture(scope="module")
def world() -> dict:
    """4 units of 2 models; all units of a model share a column-offset pattern."""
    rng = np.random.default_rng(31)
    model_cols = {m: 30.0 * rng.normal(size=SIZE) for m in ("A", "B")}
    units = {f"{m} #{i}": (PRNU * rng.normal(size=(SIZE, SIZE)), model_cols[m])
             for m in ("A", "B") for i in (1, 2)}
    ref = {u: [_shot(rng, k, cols=c) for _ in range(6)] for u, (k, c) in units.items()}
    test = {u: [_shot(rng, k, cols=c) for _ in range(3)] for u, (k, c) in units.items()}
    unseen_k = PRNU * rng.normal(size=(SIZE, SIZE))
    unseen = [_shot(rng, unseen_k, cols=model_cols["A"]) for _ in range(3)]
    fp = UnitFingerprints(FingerprintConfig(model="multiplicative")).fit(ref)  # linear images
    return {"units": units, "ref": ref, "test": test, "unseen": unseen, "fp": fp, "rng": rng}


def test_identifies_enrolled_units_and_rejects_unseen(world: dict) -> None:
    fp: UnitFingerprints = world["fp"]
    assert fp.units == ["A #1", "A #2", "B #1", "B #2"] and fp.n_images["A #1"] == 6
    for unit, images in world["test"].items():
        for img in images:
            got, score = fp.identify_unit(img)
            assert got == unit and score > 60.0
            ranked = fp.match(img)
            assert ranked[0][0] == unit and ranked[1][1] < 20.0  # others near chance
    # same model (shared column pattern, removed by zero-meaning) but a different unit
    for img in world["unseen"]:
        got, score = fp.identify_unit(img)
        assert got is None and score < 20.0


def test_candidates_restrict_by_unit_or_model(world: dict) -> None:
    fp: UnitFingerprints = world["fp"]
    img = world["test"]["B #2"][0]
    assert [u for u, _ in fp.match(img, candidates=["B"])] == ["B #2", "B #1"]
    assert fp.identify_unit(img, candidates=["A"])[0] is None  # wrong model predicted
    assert fp.identify_unit(img, candidates=["A #1", "B #2"])[0] == "B #2"
    with pytest.raises(ConfigError):
        fp.match(img, candidates=["C"])
    with pytest.raises(ConfigError):
        fp.score_unit(img, "nope")


def test_ncc_score_and_details(world: dict) -> None:
    fp: UnitFingerprints = world["fp"]
    img = world["test"]["A #2"][1]
    details = fp.match_details(img)
    assert details[0].unit == "A #2" and details[0].shift == (0, 0)
    assert details[0].overlap == (SIZE, SIZE)
    assert details[0].ncc > 5 * max(abs(d.ncc) for d in details[1:])
    ncc_fp = UnitFingerprints(FingerprintConfig(model="multiplicative", score="ncc"),
                              fp.patterns, fp.counts)
    assert ncc_fp.match(img)[0][0] == "A #2"
    assert ncc_fp.match(img)[0][1] == pytest.approx(details[0].ncc)


def test_different_sizes_in_fit_and_query(world: dict) -> None:
    rng = np.random.default_rng(32)
    k, c = world["units"]["B #1"]
    k2, c2 = world["units"]["A #1"]
    sizes = [(SIZE, SIZE), (120, SIZE), (SIZE, 100), (96, 96), (SIZE, SIZE), (140, 150)]
    fp = UnitFingerprints(LINEAR).fit({"B #1": [_shot(rng, k, s, c) for s in sizes],
                                 "A #1": [_shot(rng, k2, cols=c2) for _ in range(6)]})
    assert fp.patterns["B #1"].shape == (SIZE, SIZE)
    assert fp.counts["B #1"][10, 10] == 6 and fp.counts["B #1"][SIZE - 1, SIZE - 1] == 2
    small = _shot(rng, k, (100, 120), c)
    got, score = fp.identify_unit(small)
    assert got == "B #1" and score > 60
    assert fp.match_details(small)[0].overlap == (100, 120)
    tiny = _shot(rng, k, (20, 20), c)  # below MIN_OVERLAP: scored 0, never accepted
    assert fp.identify_unit(tiny) == (None, 0.0)


def test_bad_images_are_skipped_and_reported() -> None:
    rng = np.random.default_rng(33)
    k = PRNU * rng.normal(size=(96, 96))
    good = [_shot(rng, k, (96, 96)) for _ in range(3)]
    nan = good[0].copy()
    nan[5, 5] = np.nan
    fp = UnitFingerprints(LINEAR).fit({"u #1": good + [np.zeros((4, 96, 96)), nan],
                                 "u #2": [np.zeros(7)]})
    assert fp.units == ["u #1"] and fp.n_images["u #1"] == 3
    reasons = {(s.unit, s.index) for s in fp.skipped}
    assert reasons == {("u #1", 3), ("u #1", 4), ("u #2", 0), ("u #2", -1)}
    with pytest.raises(InvalidArrayError):
        UnitFingerprints().fit({"x": [np.zeros((3, 3))]})
    with pytest.raises(ConfigError):
        UnitFingerprints().identify_unit(good[0])
    with pytest.raises(ConfigError):
        FingerprintConfig(model="log")  # type: ignore[arg-type]


def test_save_load_roundtrip_and_errors(world: dict, tmp_path: Path) -> None:
    fp: UnitFingerprints = world["fp"]
    d = fp.save(tmp_path / "fp")
    assert sorted(p.name for p in d.iterdir()) == ["fingerprints.json", "fingerprints.safetensors"]
    back = UnitFingerprints.load(d)
    assert back.units == fp.units and back.config == fp.config
    for u in fp.units:
        assert back.patterns[u].dtype == np.float32
        assert np.array_equal(back.patterns[u], fp.patterns[u])
        assert np.array_equal(back.counts[u], fp.counts[u])
    img = world["test"]["A #1"][2]
    assert back.match(img) == fp.match(img)
    with pytest.raises(ModelFileError):
        UnitFingerprints.load(tmp_path / "missing")
    meta = json.loads((d / "fingerprints.json").read_text())
    meta["version"] = 99
    (d / "fingerprints.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError):
        UnitFingerprints.load(d)
    meta["version"] = 1
    (d / "fingerprints.json").write_text(json.dumps(meta))
    (d / "fingerprints.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelFileError):
        UnitFingerprints.load(d)
    with pytest.raises(ConfigError):
        UnitFingerprints().save(tmp_path / "empty")


def test_calibrate_threshold(world: dict, tmp_path: Path) -> None:
    old: UnitFingerprints = world["fp"]
    fp = UnitFingerprints(FingerprintConfig(model="multiplicative"), dict(old.patterns),
                          dict(old.counts), dict(old.n_images))
    rep = fp.calibrate_threshold(world["test"], target_fpr=1e-3)
    assert rep.n_match == 12 and rep.n_nonmatch == 36 and rep.top1_accuracy == 1.0
    assert rep.null_inflation >= 1.0
    # z for 1e-3 / 4 units, times the measured inflation of the null
    assert rep.analytic_floor == pytest.approx(rep.null_inflation * 3.4808**2, rel=1e-3)
    assert rep.threshold >= max(rep.analytic_floor, rep.nonmatch_max - 1e-9) * 0.999
    assert rep.tpr == 1.0 and rep.match_min > rep.threshold
    assert fp.config.threshold == rep.threshold
    back = UnitFingerprints.load(fp.save(tmp_path / "cal"))
    assert back.calibration == rep and back.config.threshold == rep.threshold
    with pytest.raises(ConfigError):
        fp.calibrate_threshold({"Z #9": world["unseen"]})


def test_pce_threshold_never_below_the_floor(world: dict, tmp_path: Path) -> None:
    """The null of the simulated units is lighter-tailed than real residuals: whatever the
    validation images say, a unit is named only at PCE >= PCE_FLOOR, also for runs saved with
    a lower threshold."""
    from medforensics.source.unit_records import PCE_FLOOR

    old: UnitFingerprints = world["fp"]
    fp = UnitFingerprints(FingerprintConfig(model="multiplicative"), dict(old.patterns),
                          dict(old.counts), dict(old.n_images))
    rep = fp.calibrate_threshold(world["test"], target_fpr=0.5)  # a lax target
    assert rep.analytic_floor < PCE_FLOOR and rep.nonmatch_max < PCE_FLOOR
    assert rep.threshold == PCE_FLOOR == fp.config.threshold
    fp.config.threshold = 14.2  # as a run calibrated before the floor stored it
    back = UnitFingerprints.load(fp.save(tmp_path / "low"))
    assert back.config.threshold == PCE_FLOOR
    for unseen in world["unseen"]:
        assert back.identify_unit(unseen)[0] is None


def test_additive_model_on_log_images() -> None:
    rng = np.random.default_rng(34)
    ks = {f"L #{i}": 0.01 * rng.normal(size=(128, 128)) for i in range(3)}

    def log_img(k: np.ndarray) -> np.ndarray:
        lin = _shot(rng, k, (128, 128)).astype(np.float64)
        return (4000.0 - 400.0 * np.log(np.maximum(lin, 1.0))).astype(np.float32)

    assert FingerprintConfig().model == "additive"  # the default
    fp = UnitFingerprints()
    fp.fit({u: [log_img(k) for _ in range(6)] for u, k in ks.items()})
    for u, k in ks.items():
        assert fp.identify_unit(log_img(k))[0] == u


def test_evaluate_report(world: dict) -> None:
    fp: UnitFingerprints = world["fp"]
    test = dict(world["test"])
    test["Z #9"] = world["unseen"][:1]  # a non-enrolled unit counts as unseen
    rep = fp.evaluate(test, world["unseen"][1:])
    assert rep.n_images == 12 and rep.n_unseen == 3
    assert rep.top1_accuracy == 1.0 and rep.accuracy == 1.0 and rep.unseen_rejected == 1.0
    assert rep.confusion["A #1"] == {"A #1": 3} and rep.confusion["(unseen)"] == {"None": 2}
    assert rep.seconds_per_image > 0
    strict = fp.evaluate(world["test"], threshold=1e9)
    assert strict.accuracy == 0.0 and strict.false_rejects == 12 and strict.top1_accuracy == 1.0


def test_tiny_simulated_archive(tmp_path: Path) -> None:
    """End to end on DICOM files from the detector simulator, read under the pixel contract:
    2 manufacturers x 1 model x 3 units; unit index 2 of each model is never enrolled."""
    from medforensics.synth.simulate import load_devices, simulate_archive
    from medforensics.io import read_image

    out = tmp_path / "archive"
    simulate_archive(out, manufacturers=2, models_per_manufacturer=1, units_per_model=3,
                     patients=36, images_per_patient=2, size=(160, 208), seed=3,
                     multi_device_fraction=0.0)
    doc = load_devices(out)
    by_unit: dict[str, list[tuple[str, np.ndarray]]] = {}
    for f in doc["files"]:
        px = read_image(out / f["path"]).pixels
        by_unit.setdefault(f["unit_id"], []).append((f["patient_id"], px))
    ref: dict[str, list[np.ndarray]] = {}
    test: dict[str, list[np.ndarray]] = {}
    unseen: list[np.ndarray] = []
    for unit, items in by_unit.items():
        if unit.endswith(".2"):
            unseen += [px for _, px in items]
            continue
        patients = list(dict.fromkeys(p for p, _ in items))
        ref_pat = set(patients[:4])  # 4 patients x 2 images = 8 references, patient-disjoint
        ref[unit] = [px for p, px in items if p in ref_pat]
        test[unit] = [px for p, px in items if p not in ref_pat]
    assert all(len(v) == 8 for v in ref.values()) and all(len(v) >= 2 for v in test.values())
    assert len({px.shape for v in ref.values() for px in v}) > 1  # sizes differ
    fp = UnitFingerprints().fit(ref)
    rep = fp.evaluate(test, unseen)
    assert rep.n_images >= 8 and rep.n_unseen >= 8
    assert rep.accuracy >= 0.95
    assert rep.unseen_rejected == 1.0
    assert fp.identify_unit(unseen[0])[0] is None
    # measured (seed 3): matching PCE >= ~300, best unseen PCE <= ~15


def test_null_pce_stays_chi_square_like_with_clipped_regions() -> None:
    """Unrelated images with large clipped regions (collimator, saturated disks) must stay
    near the chi-square(1)-like null: the query's mask must not be imposed on the pattern
    side (that gave std ~4.5-5 and maxima ~15 here), and clipped pixels must not leak."""
    rng = np.random.default_rng(35)
    size = 128
    yy, xx = np.mgrid[:size, :size]

    def collimated(k: np.ndarray) -> np.ndarray:
        img = _shot(rng, k, (size, size)).astype(np.float64)
        r0, c0 = rng.integers(8, 40, 2)
        r1, c1 = size - rng.integers(8, 40, 2)
        field = np.zeros((size, size), bool)
        field[r0:r1, c0:c1] = True
        for _ in range(3):
            cy, cx, rad = rng.uniform(0, size, 2).tolist() + [rng.uniform(6, 16)]
            field &= (yy - cy) ** 2 + (xx - cx) ** 2 > rad**2
        return np.where(field, img, 4095.0).astype(np.float32)

    units = {f"C #{i}": 2 * PRNU * rng.normal(size=(size, size)) for i in range(4)}
    for config in (FingerprintConfig(model="multiplicative"), FingerprintConfig()):
        fp = UnitFingerprints(config).fit({u: [collimated(k) for _ in range(6)]
                                           for u, k in units.items()})
        null = [s.pce for _ in range(12)
                for s in fp.match_details(collimated(2 * PRNU * rng.normal(size=(size, size))))]
        # chi-square(1) with random sign: std ~1.7, max of 48 draws ~10
        assert np.std(null) < 2.6 and max(null) < 12, (config.model, np.std(null), max(null))
        for u, k in units.items():
            best, score = fp.match(collimated(k))[0]
            assert best == u and score > 3 * max(null), (config.model, u, score)


def test_fit_with_masks() -> None:
    rng = np.random.default_rng(36)
    k = PRNU * rng.normal(size=(96, 96))
    imgs = [_shot(rng, k, (96, 96)) for _ in range(3)]
    m = np.ones((96, 96), bool)
    m[:, :48] = False  # left half declared unusable in every reference image
    fp = UnitFingerprints(LINEAR).fit({"u #1": imgs}, masks_by_unit={"u #1": [m, m, None]})
    assert fp.counts["u #1"][5, 5] == 1 and fp.counts["u #1"][5, 60] == 3
    fp2 = UnitFingerprints(LINEAR).fit({"u #1": imgs}, masks_by_unit={"u #1": [m]})
    assert fp2.n_images["u #1"] == 1 and [s.index for s in fp2.skipped] == [1, 2]
    with pytest.raises(InvalidArrayError):  # every mask has the wrong shape: nothing enrolled
        UnitFingerprints(LINEAR).fit({"u #1": imgs}, masks_by_unit={"u #1": [m[:10]] * 3})
