"""Tests for the cached training store (medforensics.data.store)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medforensics.data.datasets import ImageSource, MemoryImageSource, PaperImageDataset
from medforensics.data.store import (
    BLOB_NAME,
    INDEX_NAME,
    StoreSource,
    bench_patch_reads,
    encode_exact,
    identity_preprocess,
    open_store,
    prepare_store,
)
from medforensics.data.transforms import paper_preprocess
from medforensics.errors import ConfigError, StoreError
from medforensics.io import read_image, write_png8, write_png16


def _write_dicom(path: Path, stored: np.ndarray, *, signed: bool = False, slope: float = 1.0,
                 intercept: float = 0.0, photometric: str = "MONOCHROME2", bits: int = 12,
                 manufacturer: str = "Acme", model: str = "X1") -> Path:
    """A small uncompressed single-frame DICOM with the given stored values."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[str(path), "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(path), "series"])
    ds.PatientID = "P" + path.stem
    ds.Modality = "DX"
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    if slope != 1.0 or intercept != 0.0:
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
    ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _row(path: Path, *, split: str = "train", model: str = "Acme X1",
         status: str = "eligible", sha: str | None = None) -> dict:
    return {"path": str(path), "sha256": _sha(path) if sha is None else sha, "status": status,
            "split": split, "model": model, "manufacturer": model.split()[0]}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Files of every storage kind, plus a corrupt one, with their manifest rows."""
    root = tmp_path_factory.mktemp("archive")
    rng = np.random.default_rng(7)
    files = {
        "u16": _write_dicom(root / "u16.dcm", rng.integers(0, 4096, (70, 90))),
        "ct": _write_dicom(root / "ct.dcm", rng.integers(0, 3000, (64, 80)), intercept=-1024),
        "slope": _write_dicom(root / "slope.dcm", rng.integers(0, 4096, (66, 72)), slope=0.25),
        "mono1": _write_dicom(root / "mono1.dcm", rng.integers(100, 1000, (80, 64)),
                              photometric="MONOCHROME1"),
        "signed": _write_dicom(root / "signed.dcm", rng.integers(-2000, 2000, (64, 64)),
                               signed=True, bits=16),
    }
    files["png8"] = root / "p8.png"
    write_png8(files["png8"], rng.integers(0, 256, (72, 68)))
    files["png16"] = root / "p16.png"
    write_png16(files["png16"], rng.integers(0, 65536, (64, 96)))
    files["copy"] = root / "copy_of_u16.dcm"
    shutil.copyfile(files["u16"], files["copy"])
    bad = root / "corrupt.dcm"
    bad.write_bytes(b"DICM? no" * 40)
    rows = [_row(p) for p in files.values()]
    rows.append(_row(bad))  # eligible in the manifest, but undecodable
    changed = root / "changed.dcm"
    _write_dicom(changed, rng.integers(0, 4096, (64, 64)))
    rows.append(_row(changed, sha="0" * 64))  # file differs from the manifest's hash
    rows.append(_row(root / "u16.dcm", status="unreadable") | {"path": str(root / "skip.dcm")})
    return {"root": root, "files": files, "bad": bad, "changed": changed, "rows": rows}


@pytest.fixture(scope="module")
def prepared(archive: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    store = tmp_path_factory.mktemp("store") / "s"
    report = prepare_store(archive["rows"], store, workers=2, progress=False)
    return {"store": store, "report": report}


# ------------------------------------------------------------------------------ encoding


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        ([[0, 255], [7, 8]], "uint8"),
        ([[0, 256], [7, 8]], "uint16"),
        ([[0, 65535], [1, 2]], "uint16"),
        ([[-1024, 2000], [0, 1]], "int16"),
        ([[0, 70000], [1, 2]], "float32"),
        ([[-40000, 0], [1, 2]], "float32"),
        ([[0.5, 1], [2, 3]], "float32"),
        ([[-0.0, 1], [2, 3]], "float32"),
        ([[np.nan, 1], [2, 3]], "float32"),
        ([[np.inf, 1], [2, 3]], "float32"),
    ],
)
def test_encode_exact_picks_smallest_exact_dtype(values: list, dtype: str) -> None:
    a = np.asarray(values, dtype=np.float32)
    enc = encode_exact(a)
    assert enc.dtype == np.dtype(dtype)
    assert np.array_equal(enc.astype(np.float32).view(np.uint32), a.view(np.uint32))


def test_encode_exact_random_round_trip() -> None:
    rng = np.random.default_rng(0)
    for scale, offset in [(255, 0), (4095, 0), (3000, -1024), (1e6, 0)]:
        a = np.rint(rng.random((17, 23)) * scale + offset).astype(np.float32)
        enc = encode_exact(a)
        assert np.array_equal(enc.astype(np.float32).view(np.uint32), a.view(np.uint32))
    with pytest.raises(ConfigError):
        encode_exact(np.zeros((2, 2, 2), np.float32))


# ------------------------------------------------------------------------------ prepare


def test_prepare_values_equal_read_image_bit_for_bit(archive: dict, prepared: dict) -> None:
    src = StoreSource(prepared["store"])
    expected_dtypes = {"u16": "uint16", "ct": "int16", "slope": "float32", "mono1": "uint16",
                       "signed": "int16", "png8": "uint8", "png16": "uint16", "copy": "uint16"}
    for key, path in archive["files"].items():
        px = read_image(path).pixels
        got = src.get(str(path))
        assert got.dtype == np.float32 and got.shape == px.shape
        assert np.array_equal(got.view(np.uint32), px.view(np.uint32)), key
        assert src.stored(str(path)).dtype == np.dtype(expected_dtypes[key]), key
        assert src.shape(str(path)) == px.shape
        assert not got.flags.writeable


def test_prepare_reports_bad_files_and_carries_on(archive: dict, prepared: dict) -> None:
    rep = prepared["report"]
    assert rep.n_rows == len(archive["rows"])
    assert rep.n_selected == len(archive["rows"]) - 1  # the non-eligible row is skipped
    assert rep.skipped == {"status unreadable": 1}
    reasons = {f.path: f.reason for f in rep.failures}
    assert set(reasons) == {str(archive["bad"]), str(archive["changed"])}
    assert reasons[str(archive["changed"])] == "sha256-mismatch"
    assert reasons[str(archive["bad"])] not in ("", "reader-bug")
    assert rep.n_cached == len(archive["files"])
    assert rep.workers == 2
    src = StoreSource(prepared["store"])
    assert str(archive["bad"]) not in src
    assert set(src.failures) == set(reasons)
    with pytest.raises(StoreError, match="prepare failed"):
        src.get(str(archive["bad"]))


def test_identical_files_are_stored_once(archive: dict, prepared: dict) -> None:
    index = json.loads((prepared["store"] / INDEX_NAME).read_text())
    sha = _sha(archive["files"]["u16"])
    assert index["paths"][str(archive["files"]["copy"])] == sha
    assert index["paths"][str(archive["files"]["u16"])] == sha
    assert len(index["entries"]) == len(archive["files"]) - 1


def test_paper_variants_equal_paper_preprocess(archive: dict, prepared: dict) -> None:
    src = StoreSource(prepared["store"])
    for path in archive["files"].values():
        ref = paper_preprocess(read_image(path).pixels)
        got = src.paper(str(path))
        assert got.dtype == np.float32 and got.shape == (256, 256)
        assert np.array_equal(got, ref)
    # the paper view plugs into PaperImageDataset and gives the same items
    rows = [r for r in archive["rows"] if r["path"] in {str(p) for p in archive["files"].values()}]
    cached = PaperImageDataset(rows, "model", ["Acme X1"], image_cache=src.paper_source(),
                               preprocess=identity_preprocess)
    plain = PaperImageDataset(rows, "model", ["Acme X1"], image_cache=MemoryImageSource())
    for i in range(len(rows)):
        assert cached[i][1] == plain[i][1]
        assert np.array_equal(cached[i][0].numpy(), plain[i][0].numpy())


def test_crop_reads_windows_and_checks_bounds(archive: dict, prepared: dict) -> None:
    src = StoreSource(prepared["store"])
    assert isinstance(src, ImageSource) and isinstance(src.paper_source(), ImageSource)
    path = str(archive["files"]["ct"])
    px = read_image(path).pixels
    win = src.crop(path, 5, 7, 32, 40)
    assert win.dtype == np.float32 and win.shape == (32, 40)
    assert np.array_equal(win, px[5:37, 7:47])
    win[:] = 0  # a copy: the store is untouched
    assert np.array_equal(src.crop(path, 5, 7, 32, 40), px[5:37, 7:47])
    for args in [(-1, 0, 8, 8), (0, 0, 65, 8), (0, 75, 8, 8)]:
        with pytest.raises(ConfigError):
            src.crop(path, *args)
    res = bench_patch_reads(src, [path], n=50, patch=32, seed=1)
    assert res["n"] == 50 and res["patches_per_s"] > 0


def test_missing_image_raises_unless_fallback(archive: dict, prepared: dict,
                                              tmp_path: Path) -> None:
    extra = _write_dicom(tmp_path / "new.dcm", np.arange(64 * 64).reshape(64, 64) % 4096)
    src = StoreSource(prepared["store"])
    with pytest.raises(StoreError, match="not in the store"):
        src.get(str(extra))
    with pytest.raises(StoreError):
        src.crop(str(extra), 0, 0, 8, 8)
    fb = StoreSource(prepared["store"], fallback=True)
    assert np.array_equal(fb.get(str(extra)), read_image(extra).pixels)
    assert fb.shape(str(extra)) == (64, 64)
    with pytest.raises(StoreError, match="not in the store"):
        open_store(prepared["store"], [_row(extra)])
    assert open_store(prepared["store"], [_row(extra)], fallback=True).fallback


def test_source_pickles_for_dataloader_workers(archive: dict, prepared: dict) -> None:
    src = StoreSource(prepared["store"])
    path = str(archive["files"]["u16"])
    before = src.crop(path, 1, 2, 16, 16)
    clone = pickle.loads(pickle.dumps(src))
    assert np.array_equal(clone.crop(path, 1, 2, 16, 16), before)


# ------------------------------------------------------------------------------ incremental


def test_reprepare_is_incremental_and_detects_changes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a = _write_dicom(tmp_path / "a.dcm", rng.integers(0, 4096, (64, 64)))
    b = _write_dicom(tmp_path / "b.dcm", rng.integers(0, 4096, (64, 64)))
    store = tmp_path / "store"
    first = prepare_store([_row(a), _row(b)], store, workers=0, progress=False)
    assert (first.n_decoded, first.n_reused, first.workers) == (2, 0, 0)
    again = prepare_store([_row(a), _row(b)], store, workers=0, progress=False)
    assert (again.n_decoded, again.n_reused, again.bytes_written) == (2 - 2, 2, 0)

    # b changes on disk: the old store is stale for the new manifest
    _write_dicom(b, rng.integers(0, 4096, (64, 64)))
    new_rows = [_row(a), _row(b)]
    with pytest.raises(StoreError, match="changed since the store was prepared"):
        open_store(store, new_rows)
    third = prepare_store(new_rows, store, workers=0, progress=False)
    assert (third.n_decoded, third.n_reused) == (1, 1)
    src = open_store(store, new_rows)
    assert np.array_equal(src.get(str(b)), read_image(b).pixels)

    # adding paper variants to a store prepared without them decodes again, once
    s2 = tmp_path / "nopaper"
    prepare_store(new_rows, s2, workers=0, paper=False, progress=False)
    assert not StoreSource(s2).has_paper and StoreSource(store).has_paper
    with pytest.raises(StoreError, match="without paper"):
        StoreSource(s2).paper(str(a))
    rep = prepare_store(new_rows, s2, workers=0, paper=True, progress=False)
    assert rep.n_decoded == 2
    assert np.array_equal(StoreSource(s2).paper(str(a)), paper_preprocess(read_image(a).pixels))


def test_splits_filter_and_open_store_checks_train_val_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    paths = [_write_dicom(tmp_path / f"{i}.dcm", rng.integers(0, 4096, (64, 64)))
             for i in range(3)]
    rows = [_row(paths[0], split="train"), _row(paths[1], split="val"),
            _row(paths[2], split="test")]
    store = tmp_path / "store"
    rep = prepare_store(rows, store, workers=0, paper=False, splits=("train", "val"),
                        progress=False)
    assert rep.n_selected == 2 and rep.skipped == {"split test": 1}
    src = open_store(store, rows)  # default: train + val must be covered
    assert len(src) == 2 and str(paths[2]) not in src
    with pytest.raises(StoreError):
        open_store(store, rows, splits=None)


def test_interrupted_tail_is_dropped_and_damage_detected(tmp_path: Path) -> None:
    a = _write_dicom(tmp_path / "a.dcm", np.full((64, 64), 5))
    store = tmp_path / "store"
    prepare_store([_row(a)], store, workers=0, progress=False)
    size = (store / BLOB_NAME).stat().st_size
    with open(store / BLOB_NAME, "ab") as fh:  # bytes of a prepare that died before its index
        fh.write(b"x" * 1000)
    prepare_store([_row(a)], store, workers=0, progress=False)
    assert (store / BLOB_NAME).stat().st_size == size
    with open(store / BLOB_NAME, "r+b") as fh:
        fh.truncate(size - 10)
    with pytest.raises(StoreError, match="damaged"):
        StoreSource(store)
    (store / INDEX_NAME).write_text("{not json")
    with pytest.raises(StoreError, match="unreadable store index"):
        StoreSource(store)
    with pytest.raises(StoreError, match="not a prepared store"):
        StoreSource(tmp_path)


def test_live_lock_blocks_a_second_prepare(tmp_path: Path) -> None:
    a = _write_dicom(tmp_path / "a.dcm", np.full((64, 64), 5))
    store = tmp_path / "store"
    store.mkdir()
    (store / ".prepare.lock").write_text(str(os.getpid()))  # this (live) process holds it
    with pytest.raises(StoreError, match="another prepare"):
        prepare_store([_row(a)], store, workers=0, progress=False)
    (store / ".prepare.lock").write_text("999999999")  # a dead pid: stale lock is taken over
    assert prepare_store([_row(a)], store, workers=0, progress=False).n_decoded == 1
    assert not (store / ".prepare.lock").exists()


# ------------------------------------------------------------------------------ training


@pytest.mark.parametrize("preset", ["patch", "deepmammo"])
def test_training_from_store_matches_memory_and_never_decodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, preset: str
) -> None:
    """Training from a store gives the metrics of training on decoded images and never
    decodes; a paper preset reads the cached 256x256 variants (no decode, no resize)."""
    import torch

    import medforensics.data.transforms as tr
    import medforensics.io as mio
    from medforensics.training.engine import train

    torch.set_num_threads(1)
    rng = np.random.default_rng(5)
    paper = preset != "patch"
    n, shape = (6, (96, 80)) if paper else (8, (80, 80))
    rows = []
    for i in range(n):
        cls = i % 2
        noise = rng.normal(0, 20 if cls else 5, shape)
        path = _write_dicom(tmp_path / f"img{i}.dcm", np.clip(2000 + noise, 0, 4095).round())
        rows.append(_row(path, split="val" if i >= n - 2 else "train",
                         model=("Acme X1", "Beta Y2")[cls]))
    store = tmp_path / "store"
    prepare_store(rows, store, workers=0, paper=paper, progress=False)
    # The store holds the archive's images; outlier-device images are written into each run
    # and decoded from there, so outlier exposure is off for this never-decodes check.
    kw: dict = dict(label="model", preset=preset, epochs=1, progress=False, outlier_devices=0)
    kw |= (dict(batch_size=4) if paper else
           dict(batch_size=8, patch=32, patches_per_image=4, val_patches=2))
    ref = train(rows, out_dir=str(tmp_path / "mem"), **kw)

    def forbidden(*a: object, **k: object) -> None:
        raise AssertionError("training decoded or re-preprocessed an image despite the store")

    monkeypatch.setattr(mio, "read_image", forbidden)
    if paper:
        monkeypatch.setattr(tr, "paper_preprocess", forbidden)
    got = train(rows, out_dir=str(tmp_path / "store_run"), image_source=open_store(store, rows),
                **kw)
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in got.metrics] == \
        [{k: v for k, v in r.items() if k not in drop} for r in ref.metrics]


def test_cli_prepare(archive: dict, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medforensics.cli import app
    from medforensics.data.manifest import write_manifest

    manifest = write_manifest(archive["rows"], tmp_path / "manifest.csv")
    store = tmp_path / "store"
    res = CliRunner().invoke(app, ["prepare", str(manifest), "--out", str(store), "--workers",
                                   "1", "--no-paper", "--no-progress"])
    assert res.exit_code == 1, res.output  # two images could not be cached, each listed
    n = len(archive["files"])
    assert f"{n}/{n + 2} eligible images cached" in res.output
    assert "2 image(s) could not be cached" in res.output and "sha256-mismatch" in res.output
    src = open_store(store)
    assert len(src) == n
    assert json.loads((store / INDEX_NAME).read_text())["paper"] is None
    bad = CliRunner().invoke(app, ["prepare", str(tmp_path / "nope.csv"), "--out", str(store)])
    assert bad.exit_code == 1 and "manifest not found" in bad.output  # an input not usable
