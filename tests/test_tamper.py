"""Tests for the tampering generator (forgery.tamper)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from scipy import ndimage
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

from medforensics.io import read_image
from medforensics.errors import ConfigError, TamperError
from medforensics.synth.tamper import KINDS, generate, tamper_array, tamper_file

N = 256


def _xray(rng: np.random.Generator, n: int = N, sigma: float = 25.0,
          level: float = 1500.0) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n]
    ph1, ph2 = rng.uniform(0, 6), rng.uniform(0, 6)
    base = level + 0.6 * level * np.sin(xx / 37 + ph1) * np.cos(yy / 51 + ph2)
    sig = np.sqrt(np.clip(base, 1, None)) * sigma / np.sqrt(level)
    return np.clip(base + rng.normal(0, 1, (n, n)) * sig, 0, 4095)


def _write_dicom(path: Path, pixels: np.ndarray, *, serial: str = "1", model: str = "X1",
                 photometric: str = "MONOCHROME2") -> None:
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    uid = generate_uid(entropy_srcs=[str(path)])
    fm.MediaStorageSOPInstanceUID = uid
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = fm
    ds.SOPClassUID = fm.MediaStorageSOPClassUID
    ds.SOPInstanceUID = uid
    ds.Modality = "DX"
    ds.Manufacturer = "ACME"
    ds.ManufacturerModelName = model
    ds.DeviceSerialNumber = serial
    ds.PatientID = "P-" + path.stem
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[str(path), "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(path), "series"])
    ds.set_pixel_data(pixels.astype(np.uint16), photometric, 12, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("kind", KINDS)
def test_array_mask_is_exactly_the_changed_pixels(kind: str) -> None:
    rng = np.random.default_rng(3)
    img = _xray(rng).astype(np.uint16)
    donor = _xray(rng, sigma=8, level=800).astype(np.uint16)
    for s in range(3):
        res = tamper_array(img, kind, np.random.default_rng(s), donor=donor, sizes=(32, 128))
        assert res.pixels.dtype == img.dtype and res.pixels.shape == img.shape
        assert np.array_equal(res.mask, res.pixels != img)
        assert res.mask.sum() > 0.5 * 16 * 16
        x0, y0, x1, y1 = res.bbox
        assert res.mask[y0:y1, x0:x1].sum() == res.mask.sum()
        assert max(x1 - x0, y1 - y0) <= 128 + 14  # size + feather border
        assert res.pixels.min() == img.min() and res.pixels.max() == img.max()
        if kind == "copy-move":
            dy, dx = res.detail["shift_yx"]
            assert res.source_mask.sum() == res.mask.sum()
            # deep inside the region (past the feather band) pixels are exact copies
            deep = ndimage.binary_erosion(res.mask, iterations=12)
            yy, xx = np.nonzero(deep)
            assert yy.size > 0
            assert np.array_equal(res.pixels[yy, xx], img[yy - dy, xx - dx])
            sy, sx = np.nonzero(res.source_mask)
            ty, tx = np.nonzero(res.mask)
            assert np.array_equal(np.sort(sy * N + sx), np.sort((ty - dy) * N + (tx - dx)))


def test_copy_move_transform_and_determinism() -> None:
    img = _xray(np.random.default_rng(5)).astype(np.uint16)
    opts = {"rotate": True, "scale": True, "p_transform": 1.0}
    a = tamper_array(img, "copy-move", np.random.default_rng(9), options=opts)
    b = tamper_array(img, "copy-move", np.random.default_rng(9), options=opts)
    assert np.array_equal(a.pixels, b.pixels)
    assert a.detail["angle"] != 0.0 or a.detail["scale"] != 1.0
    assert np.array_equal(a.mask, a.pixels != img)


def test_quarter_turn_copy_move_is_an_exact_pixel_rotation() -> None:
    img = _xray(np.random.default_rng(6)).astype(np.uint16)
    seen = set()
    for seed in range(60):
        r = tamper_array(img, "copy-move", np.random.default_rng(seed), sizes=(40, 80),
                         feather=0.0, options={"rotate": True, "p_transform": 1.0})
        angle = r.detail["angle"]
        if angle not in (90.0, 180.0, 270.0) or angle in seen:
            continue
        seen.add(angle)
        k = int(angle) // 90
        x0, y0, x1, y1 = r.bbox
        sx0, sy0, sx1, sy1 = r.source_bbox
        turned = np.rot90(img[sy0:sy1, sx0:sx1], k)
        m = r.mask[y0:y1, x0:x1]
        assert turned.shape == m.shape
        assert np.array_equal(r.pixels[y0:y1, x0:x1][m], turned[m])
        assert np.array_equal(np.rot90(r.source_mask[sy0:sy1, sx0:sx1], k), m)
    assert seen == {90.0, 180.0, 270.0}


def test_copy_move_source_is_content_unless_asked_for_clipped_background() -> None:
    img = _xray(np.random.default_rng(7)).astype(np.uint16)
    img[:, : N // 2] = 0  # left half: clipped background at the image's minimum
    shares = {}
    for mode in ("content", "clipped", "any"):
        shares[mode] = []
        for seed in range(12):
            r = tamper_array(img, "copy-move", np.random.default_rng(seed), sizes=(32, 64),
                             options={"copy_source": mode})
            src = img[r.source_mask]
            shares[mode].append(float(np.mean(src == 0)))
            assert r.detail["source_clipped"] >= 0.0
            assert np.array_equal(r.mask, r.pixels != img)
    assert max(shares["content"]) <= 0.5
    assert min(shares["clipped"]) > 0.5
    # unconstrained draws land on both (half the image is background)
    assert min(shares["any"]) <= 0.5 < max(shares["any"])
    with pytest.raises(ConfigError, match="copy_source"):
        tamper_array(img, "copy-move", np.random.default_rng(0), options={"copy_source": "x"})


def test_bad_arguments() -> None:
    img = _xray(np.random.default_rng(1)).astype(np.uint16)
    with pytest.raises(ConfigError):
        tamper_array(img, "smudge", np.random.default_rng(0))
    with pytest.raises(TamperError):
        tamper_array(img, "splice", np.random.default_rng(0))
    with pytest.raises(TamperError):
        tamper_array(np.zeros((64, 64), np.uint8), "copy-move", np.random.default_rng(0))
    with pytest.raises(ConfigError):
        tamper_array(img, "copy-move", np.random.default_rng(0), sizes=(64, 32))


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("src")
    rng = np.random.default_rng(11)
    for i in range(4):
        _write_dicom(root / f"dev{i % 2}_{i}.dcm", _xray(rng), serial=str(i % 2),
                     photometric="MONOCHROME1" if i == 3 else "MONOCHROME2")
    im8 = _xray(rng, level=120, sigma=3).clip(0, 255).astype(np.uint8)
    Image.fromarray(im8, mode="L").save(root / "eight.png")
    im16 = (_xray(rng) * 10).astype(np.uint16)
    Image.fromarray(im16).save(root / "sixteen.png")
    Image.fromarray(im8, mode="L").save(root / "photo.jpg", quality=85)
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "unit", "PatientID", "split", "status"])
        for p in sorted(root.iterdir()):
            if p.suffix != ".csv":
                unit = p.name.split("_")[0] if p.suffix == ".dcm" else "scanner"
                w.writerow([p.name, unit, "P-" + p.stem, "test", "eligible"])
        w.writerow(["excluded.dcm", "dev0", "P-x", "test", "qc-phantom"])
    return root


def _read_stored(path: str) -> np.ndarray:
    if path.endswith(".dcm"):
        return pydicom.dcmread(path).pixel_array.astype(np.int64)
    return np.asarray(Image.open(path)).astype(np.int64)


def test_generate_files_masks_headers(sources: Path, tmp_path: Path) -> None:
    kinds = list(KINDS)
    rep = generate(sources / "manifest.csv", tmp_path, kinds=kinds, seed=7, sizes=(32, 96))
    assert not rep.failures, rep.failures
    rows = list(csv.DictReader(open(rep.manifest_path)))
    assert len(rows) == 2 * 7
    by_pair: dict[str, dict[str, dict[str, str]]] = {}
    for r in rows:
        by_pair.setdefault(r["pair_id"], {})[r["label"]] = r
    seen_kinds = set()
    for pair in by_pair.values():
        t, o = pair["tampered"], pair["original"]
        seen_kinds.add(t["kind"])
        assert t["original_path"] == o["original_path"]
        assert t["PatientID"] == "P-" + Path(t["original_path"]).stem and t["split"] == "test"
        mask = np.asarray(Image.open(t["mask_path"]))
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        omask = np.asarray(Image.open(o["mask_path"]))
        assert omask.max() == 0 and omask.shape == mask.shape
        tp, op = _read_stored(t["path"]), _read_stored(o["path"])
        assert tp.shape == mask.shape
        if t["format"] == "jpeg":
            # JPEG: mask = edit before encoding; decoded difference stays in touched 8x8 blocks
            diff = tp != op
            blocks = np.zeros_like(diff)
            for y, x in zip(*np.nonzero(mask)):
                blocks[y // 8 * 8 : y // 8 * 8 + 8, x // 8 * 8 : x // 8 * 8 + 8] = True
            assert diff.any() and not (diff & ~blocks).any()
            assert t["path"].endswith(".jpg")
        else:
            assert np.array_equal(tp != op, mask == 255), t["path"]
            src = _read_stored(t["original_path"])
            assert np.array_equal(op, src)  # lossless formats: original copy is identical
        assert int(t["n_changed"]) == int((mask == 255).sum())
        x0, y0, x1, y1 = map(int, t["bbox"].split())
        assert (mask[y0:y1, x0:x1] == 255).sum() == (mask == 255).sum()
        if t["format"] == "dicom":
            # the contract reader (Modality LUT, MONOCHROME1 inversion) sees the same mask
            ti, oi = read_image(t["path"]), read_image(o["path"])
            assert np.array_equal(ti.pixels != oi.pixels, mask == 255)
            assert ti.meta.format == "dicom" and ti.meta.bits_stored == 12
            src_ds = pydicom.dcmread(t["original_path"])
            t_ds, o_ds = pydicom.dcmread(t["path"]), pydicom.dcmread(o["path"])
            for ds in (t_ds, o_ds):
                assert ds.BitsStored == 12 and ds.Manufacturer == "ACME"
                assert ds.PatientID == src_ds.PatientID
                assert ds.PhotometricInterpretation == src_ds.PhotometricInterpretation
                assert ds.SOPInstanceUID != src_ds.SOPInstanceUID
                assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert t_ds.SOPInstanceUID != o_ds.SOPInstanceUID
        if t["format"] == "png":
            src_mode = Image.open(t["original_path"]).mode
            assert Image.open(t["path"]).mode == src_mode
        if t["kind"] == "splice-device":
            assert t["donor_path"] and t["donor_path"] != t["original_path"]
            dev = Path(t["original_path"]).name.split("_")[0]
            assert Path(t["donor_path"]).name.split("_")[0] != dev
        if t["kind"] == "copy-move":
            smask = np.asarray(Image.open(t["source_mask_path"])) == 255
            assert smask.sum() == (mask == 255).sum() and not (smask & (mask == 255)).any()
    assert seen_kinds == set(kinds)
    # reproducible
    rep2 = generate(sources / "manifest.csv", tmp_path / "again", kinds=kinds, seed=7,
                    sizes=(32, 96))
    a = [(r["kind"], r["bbox"], r["seed"]) for r in rep.rows]
    b = [(r["kind"], r["bbox"], r["seed"]) for r in rep2.rows]
    assert a == b


def test_generate_records_failures_and_carries_on(sources: Path, tmp_path: Path) -> None:
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    img = _xray(np.random.default_rng(2)).astype(np.uint16)
    _write_dicom(bad / "ok.dcm", img)
    rep = generate(bad, tmp_path / "out", kinds=["insertion"], seed=1)
    assert len(rep.failures) == 1 and "broken" in rep.failures[0][0]
    assert len(rep.rows) == 2
    assert (tmp_path / "out" / "failures.csv").exists()
    # splice-device with a single device: recorded failure, not a crash
    rep = generate(bad, tmp_path / "out2", kinds=["splice-device"], seed=1)
    assert any("another device" in why for _, why in rep.failures)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("src_name", ["dev1_3.dcm", "dev0_0.dcm", "sixteen.png", "eight.png"])
def test_tamper_file_each_kind_dicom_and_png(sources: Path, tmp_path: Path, kind: str,
                                             src_name: str) -> None:
    src = sources / src_name
    donor = sources / ("dev1_1.dcm" if src_name != "dev1_1.dcm" else "dev0_0.dcm")
    rows = tamper_file(src, tmp_path, kind, seed=11, pair_id="p", sizes=(32, 96),
                       donor=donor if kind.startswith("splice") else None)
    t, o = rows
    mask = np.asarray(Image.open(t["mask_path"])) == 255
    ti, oi = read_image(t["path"]), read_image(o["path"])
    assert np.array_equal(ti.pixels != oi.pixels, mask)  # contract values
    assert np.array_equal(_read_stored(t["path"]) != _read_stored(o["path"]), mask)  # stored
    assert mask.sum() == int(t["n_changed"]) > 0
    assert ti.meta.format == read_image(src).meta.format
    assert ti.meta.bits_stored == read_image(src).meta.bits_stored


@pytest.mark.real
def test_real_compressed_dicom_roundtrip(real_data, tmp_path: Path) -> None:
    src = real_data / "codecs" / "RG2_JLSN.dcm"  # JPEG-LS near-lossless, 10-bit
    t, o = tamper_file(src, tmp_path, "local-edit", seed=3, pair_id="r", sizes=(64, 128))
    mask = np.asarray(Image.open(t["mask_path"])) == 255
    ti, oi = read_image(t["path"]), read_image(o["path"])
    si = read_image(src)
    assert np.array_equal(ti.pixels != oi.pixels, mask) and mask.sum() > 0
    assert np.array_equal(oi.pixels, si.pixels)  # decoded once, written uncompressed
    assert ti.meta.bits_stored == si.meta.bits_stored and ti.meta.model == si.meta.model
    assert ti.meta.lossy  # a once-lossy image stays flagged lossy


def test_cli_copy_source_option(sources: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medforensics.cli import app

    bad = CliRunner().invoke(app, ["tamper", str(sources), "--out", str(tmp_path / "bad"),
                                   "--kinds", "copy-move", "--copy-source", "bogus"])
    assert bad.exit_code == 2 and "copy_source" in bad.output
    ok = CliRunner().invoke(app, ["tamper", str(sources / "manifest.csv"), "--out",
                                  str(tmp_path / "ok"), "--kinds", "copy-move", "--n", "2",
                                  "--copy-source", "content"])
    assert ok.exit_code == 0, ok.output
    rows = list(csv.DictReader(open(tmp_path / "ok" / "tamper_manifest.csv", newline="")))
    tampered = [r for r in rows if r["label"] == "tampered"]
    assert len(tampered) == 2
    assert all('"source_clipped"' in r["detail"] for r in tampered)


def test_copy_move_source_box_holds_the_pasted_pixels(sources: Path, tmp_path: Path) -> None:
    """The manifest's source box / source mask of a hard-edged, untransformed copy-move cover
    exactly the pixels that were pasted: the paste box of the tampered file equals the source
    box of the original on the changed pixels (the both-copies truth of the benchmarks)."""
    rep = generate(sources / "manifest.csv", tmp_path, kinds=["copy-move"], seed=3,
                   sizes=(32, 64), feather=0.0)
    assert not rep.failures, rep.failures
    rows = [r for r in rep.rows if r["label"] == "tampered" and r["format"] != "jpeg"]
    assert rows
    originals = {r["pair_id"]: r for r in rep.rows if r["label"] == "original"}
    for t in rows:
        mask = np.asarray(Image.open(t["mask_path"])) == 255
        smask = np.asarray(Image.open(t["source_mask_path"])) == 255
        x0, y0, x1, y1 = map(int, t["bbox"].split())
        sx0, sy0, sx1, sy1 = map(int, t["source_bbox"].split())
        assert (x1 - x0, y1 - y0) == (sx1 - sx0, sy1 - sy0)
        ys, xs = np.nonzero(smask)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (sx0, sy0, sx1, sy1)
        paste = mask[y0:y1, x0:x1]
        assert np.array_equal(smask[sy0:sy1, sx0:sx1], paste)
        tp = _read_stored(t["path"])
        op = _read_stored(originals[t["pair_id"]]["path"])
        assert np.array_equal(tp[y0:y1, x0:x1][paste], op[sy0:sy1, sx0:sx1][paste])
        assert np.array_equal(tp[sy0:sy1, sx0:sx1], op[sy0:sy1, sx0:sx1])  # source untouched


def test_resampled_copy_move_source_mask_follows_the_turn_and_scale() -> None:
    """A copy turned by any angle or scaled came from an area turned / sized the other way: the
    recorded source mask has the paste's area divided by scale^2, centred where the paste was
    sampled."""
    img = _xray(np.random.default_rng(5), n=384).astype(np.uint16)
    seen = set()
    for s in range(40):
        r = tamper_array(img, "copy-move", np.random.default_rng(s), sizes=(64, 96), feather=0.0,
                         options={"rotate": True, "scale": True, "p_transform": 1.0})
        angle, scale = float(r.detail["angle"]), float(r.detail["scale"])
        if angle in (90.0, 180.0, 270.0) or (angle == 0.0 and scale == 1.0):
            continue
        seen.add((angle != 0.0, scale != 1.0))
        assert not (r.source_mask & r.mask).any()
        ratio = r.source_mask.sum() * scale ** 2 / r.mask.sum()
        assert 0.9 < ratio < 1.1, (angle, scale, ratio)
        # centred where the paste was sampled: the paste's centre minus the shift
        dy, dx = r.detail["shift_yx"]
        ty, tx = (np.mean(v) for v in np.nonzero(r.mask))
        sy, sx = (np.mean(v) for v in np.nonzero(r.source_mask))
        assert abs(sy - (ty - dy)) < 3 and abs(sx - (tx - dx)) < 3
    assert seen == {(True, True)}
