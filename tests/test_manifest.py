"""Tests for medforensics.data.manifest (ingest, statuses, CSV round trip) and the CLI."""

from __future__ import annotations

import shutil
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    BasicTextSRStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from medforensics.data.manifest import IngestFilters, ingest, read_manifest, summarize, write_manifest
from medforensics.data.scan import COLUMNS, scan_file
from medforensics.errors import ConfigError, ManifestError

# --------------------------------------------------------------------------- file factory


def _dicom(
    path: Path,
    *,
    manufacturer: str | None = "GE MEDICAL SYSTEMS",
    model: str | None = "Senographe Essential",
    serial: str | None = "S1",
    patient: str = "P1",
    study: str | None = None,
    sop_uid: str | None = None,
    modality: str = "MG",
    view: str = "CC",
    size: tuple[int, int] = (70, 70),
    colour: bool = False,
    pixels: bool = True,
    series_description: str = "",
    sop_class: str = DigitalMammographyXRayImageStorageForPresentation,
    seed: int = 0,
    truncate_to: int | None = None,
) -> Path:
    """Write a small real DICOM file with pydicom."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study or f"1.2.826.0.1.3680043.99.{zlib.crc32(patient.encode())}"
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient
    ds.Modality = modality
    if manufacturer is not None:
        ds.Manufacturer = manufacturer
    if model is not None:
        ds.ManufacturerModelName = model
    if serial is not None:
        ds.DeviceSerialNumber = serial
    ds.ViewPosition = view
    ds.SeriesDescription = series_description
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if sop_class != BasicTextSRStorage:
        rows, cols = size
        ds.Rows, ds.Columns = rows, cols
        ds.PixelRepresentation = 0
        if colour:
            ds.SamplesPerPixel = 3
            ds.PhotometricInterpretation = "RGB"
            ds.PlanarConfiguration = 0
            ds.BitsAllocated = ds.BitsStored = 8
            ds.HighBit = 7
            arr = np.random.default_rng(seed).integers(0, 255, (rows, cols, 3), dtype=np.uint8)
        else:
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
            arr = np.random.default_rng(seed).integers(0, 4096, (rows, cols), dtype=np.uint16)
        if pixels:
            ds.PixelData = arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    if truncate_to is not None:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - truncate_to])
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small archive of good files and every kind of junk."""
    root = tmp_path_factory.mktemp("archive")
    _dicom(root / "a" / "good1.dcm", patient="P1", seed=1)
    (root / "a" / "good1_copy.dcm").write_bytes((root / "a" / "good1.dcm").read_bytes())
    sop2 = generate_uid()
    # a file name without extension, in a nested folder
    _dicom(root / "b" / "deep" / "IMG0002", manufacturer="HOLOGIC, Inc.",
           model="Selenia Dimensions", serial="H7", patient="P2", view="MLO", sop_uid=sop2,
           seed=2)
    # same SOPInstanceUID as IMG0002, different bytes (a re-sent copy)
    _dicom(root / "b" / "deep" / "IMG0002_resent.dcm", manufacturer="HOLOGIC, Inc.",
           model="Selenia Dimensions", serial="H7", patient="P2", sop_uid=sop2, seed=3)
    _dicom(root / "c" / "good3.dcm", manufacturer="GE Healthcare", patient="P3", view="MLO",
           seed=4)
    _dicom(root / "c" / "dx.dcm", manufacturer="Canon Inc.", model="CXDI-70C", serial="C1",
           patient="P4", modality="DX", view="PA",
           sop_class=DigitalXRayImageStorageForPresentation, seed=5)
    _dicom(root / "junk" / "small.dcm", patient="P5", size=(32, 70), seed=6)
    _dicom(root / "junk" / "colour.dcm", patient="P6", colour=True,
           sop_class=SecondaryCaptureImageStorage, seed=7)
    _dicom(root / "junk" / "phantom.dcm", patient="QA", series_description="QC PHANTOM",
           seed=8)
    _dicom(root / "junk" / "header_only.dcm", patient="P7", pixels=False)
    _dicom(root / "junk" / "no_model.dcm", model=None, patient="P8", seed=9)
    _dicom(root / "junk" / "report.dcm", patient="P9", sop_class=BasicTextSRStorage)
    _dicom(root / "junk" / "truncated.dcm", patient="P10", seed=10, truncate_to=3000)
    (root / "junk" / "empty.dcm").write_bytes(b"")
    (root / "junk" / "random.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "junk" / "notes.txt").write_text("not an image\n")
    (root / "emptydir").mkdir()
    return root


EXPECTED_STATUS = {
    "a/good1.dcm": "eligible",
    "a/good1_copy.dcm": "duplicate",
    "b/deep/IMG0002": "eligible",
    "b/deep/IMG0002_resent.dcm": "duplicate",
    "c/dx.dcm": "eligible",
    "c/good3.dcm": "eligible",
    "junk/colour.dcm": "unsupported-photometric",
    "junk/empty.dcm": "unreadable",
    "junk/header_only.dcm": "no-pixel-data",
    "junk/no_model.dcm": "missing-label",
    "junk/notes.txt": "side-file",
    "junk/phantom.dcm": "qc-phantom",
    "junk/random.bin": "unreadable",
    "junk/report.dcm": "not-an-image",
    "junk/small.dcm": "too-small",
    "junk/truncated.dcm": "unreadable",
}


def _by_rel(rows: list[dict], root: Path) -> dict[str, dict]:
    return {Path(r["path"]).relative_to(root).as_posix(): r for r in rows}


@pytest.fixture(scope="module")
def ingested(archive: Path) -> list[dict]:
    return ingest([archive], workers=1, progress=False)


# --------------------------------------------------------------------------- statuses


def test_one_row_per_file_sorted_by_path(archive: Path, ingested: list[dict]) -> None:
    files = sorted(str(p) for p in archive.rglob("*") if p.is_file())
    assert [r["path"] for r in ingested] == files
    assert set(_by_rel(ingested, archive)) == set(EXPECTED_STATUS)


def test_statuses(archive: Path, ingested: list[dict]) -> None:
    got = {rel: r["status"] for rel, r in _by_rel(ingested, archive).items()}
    assert got == EXPECTED_STATUS


def test_reason_details(archive: Path, ingested: list[dict]) -> None:
    rows = _by_rel(ingested, archive)
    assert rows["a/good1_copy.dcm"]["reason_detail"] == (
        f"same sha256 as {archive / 'a' / 'good1.dcm'}"
    )
    assert rows["b/deep/IMG0002_resent.dcm"]["reason_detail"] == (
        f"same SOPInstanceUID as {archive / 'b' / 'deep' / 'IMG0002'}"
    )
    assert rows["junk/small.dcm"]["reason_detail"] == "32x70 is smaller than min size 64"
    assert rows["junk/phantom.dcm"]["reason_detail"] == (
        "ImageType/SeriesDescription contains 'QC'"
    )
    assert rows["junk/no_model.dcm"]["reason_detail"] == "no ManufacturerModelName in the header"
    assert rows["junk/truncated.dcm"]["reason_detail"].startswith("truncated-pixel-data: ")
    assert rows["junk/random.bin"]["reason_detail"].startswith("not-an-image-file: ")
    assert rows["junk/notes.txt"]["reason_detail"].startswith("not an image: a .txt file")
    assert "not-an-image-file: " in rows["junk/notes.txt"]["reason_detail"]
    assert rows["junk/empty.dcm"]["reason_detail"].startswith("not-an-image-file: ")
    assert "RGB" in rows["junk/colour.dcm"]["reason_detail"]
    assert "Basic Text SR Storage" in rows["junk/report.dcm"]["reason_detail"]
    assert "no Pixel Data" in rows["junk/header_only.dcm"]["reason_detail"]
    for rel, r in rows.items():
        assert (r["reason_detail"] == "") == (r["status"] == "eligible"), rel


def test_columns_and_labels(archive: Path, ingested: list[dict]) -> None:
    rows = _by_rel(ingested, archive)
    for r in ingested:
        assert set(COLUMNS) <= set(r)
        assert len(r["sha256"]) == 64
    good = rows["a/good1.dcm"]
    assert good["manufacturer"] == "GE"
    assert good["model"] == "GE Senographe Essential"
    assert good["unit"] == "GE Senographe Essential #S1"
    assert good["Manufacturer"] == "GE MEDICAL SYSTEMS"
    assert (good["Rows"], good["Columns"], good["BitsStored"]) == (70, 70, 12)
    assert good["PhotometricInterpretation"] == "MONOCHROME2"
    assert good["ViewPosition"] == "CC" and good["Modality"] == "MG"
    assert good["TransferSyntaxUID"] == ExplicitVRLittleEndian
    assert good["lossy"] is False
    # "GE Healthcare" and "GE MEDICAL SYSTEMS" are one manufacturer, one model
    assert rows["c/good3.dcm"]["model"] == good["model"]
    assert rows["b/deep/IMG0002"]["model"] == "Hologic Selenia Dimensions"
    # byte-identical copies share the hash
    assert rows["a/good1_copy.dcm"]["sha256"] == good["sha256"]


def test_missing_model_is_only_missing_for_the_model_label(archive: Path) -> None:
    rows = _by_rel(ingest([archive / "junk" / "no_model.dcm"], label="manufacturer",
                          workers=1, progress=False), archive)
    assert rows["junk/no_model.dcm"]["status"] == "eligible"
    assert rows["junk/no_model.dcm"]["manufacturer"] == "GE"


@pytest.mark.parametrize(
    ("description", "qc"),
    [
        ("QC PHANTOM", "QC"),
        ("Flat-field calibration", "Flat-field"),
        ("DAILY UNIFORMITY", "UNIFORMITY"),
        ("test image", "test"),
        ("MODALITYLUT - TEETH", ""),
        ("TESTIS US", ""),
        ("Chest PA", ""),
    ],
)
def test_qc_keywords_match_whole_words(tmp_path: Path, description: str, qc: str) -> None:
    row = scan_file(_dicom(tmp_path / "x.dcm", series_description=description))
    assert row["status"] == ""
    assert row["_qc"] == qc


def test_min_size_option(archive: Path) -> None:
    rows = ingest([archive / "junk" / "small.dcm"], filters=IngestFilters(min_size=16),
                  workers=1, progress=False)
    assert rows[0]["status"] == "eligible"


def test_scan_file_never_raises_on_missing_file(tmp_path: Path) -> None:
    row = scan_file(tmp_path / "gone.dcm")
    assert row["status"] == "unreadable"
    assert row["reason_detail"].startswith("file-access: ")


# --------------------------------------------------------------------------- filters


def test_modality_and_view_filters(archive: Path) -> None:
    rows = _by_rel(
        ingest([archive / "a", archive / "b", archive / "c"], workers=1, progress=False,
               filters=IngestFilters(modalities=("MG", "CR"), views=("CC",))),
        archive,
    )
    assert rows["c/dx.dcm"]["status"] == "filtered-modality"
    assert rows["c/dx.dcm"]["reason_detail"] == "Modality 'DX' not in CR,MG"
    assert rows["b/deep/IMG0002"]["status"] == "filtered-view"
    assert rows["c/good3.dcm"]["status"] == "filtered-view"
    assert rows["a/good1.dcm"]["status"] == "eligible"
    assert rows["a/good1_copy.dcm"]["status"] == "duplicate"  # exclusions come before filters


def test_min_patients_and_images_per_class(archive: Path) -> None:
    roots = [archive / "a", archive / "b", archive / "c"]
    rows = _by_rel(ingest(roots, workers=1, progress=False,
                          filters=IngestFilters(min_patients_per_class=2)), archive)
    # GE Senographe Essential: patients P1 and P3 -> kept; the others have one patient
    assert rows["a/good1.dcm"]["status"] == "eligible"
    assert rows["c/good3.dcm"]["status"] == "eligible"
    assert rows["b/deep/IMG0002"]["status"] == "filtered-min-patients"
    assert rows["b/deep/IMG0002"]["reason_detail"] == (
        "class 'Hologic Selenia Dimensions' has 1 patients < 2"
    )
    rows = _by_rel(ingest(roots, workers=1, progress=False,
                          filters=IngestFilters(min_images_per_class=3)), archive)
    assert rows["a/good1.dcm"]["status"] == "filtered-min-images"
    assert rows["a/good1.dcm"]["reason_detail"] == (
        "class 'GE Senographe Essential' has 2 images < 3"
    )


def test_bad_arguments(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        ingest([archive], label="vendor", progress=False)
    with pytest.raises(ConfigError):
        ingest([tmp_path / "does-not-exist"], progress=False)


# --------------------------------------------------------------------------- parallel, CSV


def test_parallel_matches_serial(archive: Path, ingested: list[dict]) -> None:
    for backend in ("process", "thread"):
        rows = ingest([archive], workers=2, backend=backend, chunk_size=3, progress=False)
        assert rows == ingested, backend


def test_csv_round_trip(ingested: list[dict], tmp_path: Path) -> None:
    out = write_manifest(ingested, tmp_path / "m" / "manifest.csv")
    back = read_manifest(out)
    assert back == ingested
    header = out.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header == list(COLUMNS)


def test_csv_keeps_split_and_extra_columns(ingested: list[dict], tmp_path: Path) -> None:
    rows = [dict(r, split="train", note="x") for r in ingested[:2]]
    out = write_manifest(rows, tmp_path / "m.csv")
    header = out.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[len(COLUMNS):] == ["split", "note"]
    assert read_manifest(out)[0]["split"] == "train"


def test_read_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ManifestError, match="empty"):
        read_manifest(tmp_path / "empty.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ManifestError, match="path, status"):
        read_manifest(tmp_path / "other.csv")


def test_summary(ingested: list[dict]) -> None:
    summary = summarize(ingested, "model")
    assert summary.n_files == len(EXPECTED_STATUS)
    assert summary.per_status == dict(Counter(EXPECTED_STATUS.values()).most_common())
    assert summary.per_label == {
        "Canon CXDI-70C": 1,
        "GE Senographe Essential": 2,
        "Hologic Selenia Dimensions": 1,
    }
    assert summary.patients_per_label["GE Senographe Essential"] == 2


# --------------------------------------------------------------------------- CLI


def test_cli_ingest_and_split(archive: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medforensics.cli import app

    # enough patients for a split: copy the archive's good files under new patient ids
    data = tmp_path / "data"
    for i in range(20):
        _dicom(data / f"ge_{i}.dcm", patient=f"G{i}", seed=100 + i)
        _dicom(data / f"ho_{i}.dcm", manufacturer="Hologic", model="Selenia Dimensions",
               patient=f"H{i}", seed=200 + i)
    shutil.copy(archive / "junk" / "notes.txt", data / "notes.txt")
    manifest = tmp_path / "manifest.csv"
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", str(data), "--out", str(manifest), "--workers", "1",
                                 "--no-progress", "--modality", "MG"])
    assert result.exit_code == 0, result.output
    assert "GE Senographe Essential" in result.output and "side-file" in result.output
    rows = read_manifest(manifest)
    assert len(rows) == 41
    result = runner.invoke(app, ["split", str(manifest), "--test", "0.25", "--val", "0",
                                 "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "no patient/study/file leakage" in result.output
    rows = read_manifest(manifest)
    splits = Counter(r["split"] for r in rows)
    assert splits == {"train": 30, "test": 10, "": 1}
    assert all(r["split"] == "" for r in rows if r["status"] != "eligible")


# --------------------------------------------------------------------------- real files

XRAY_LABELS = {  # file -> (manufacturer, model) labels; see ../shared/data/real/README.md
    "ge_senographe_essential_mg.dcm": ("GE", "GE Senographe Essential"),
    "siemens_mammomat_inspiration_mg.dcm": ("Siemens", "Siemens Mammomat Inspiration"),
    "canon_dx.dcm": ("Canon", ""),
    "rentgenprom_proscan2000_dx.dcm": ("Rentgenprom", "Rentgenprom ProScan-2000"),
    "kodak_cr500_cr.dcm": ("Kodak", "Kodak CR500"),
    "fuji_irs_cr_RG3_J2KR.dcm": ("Fujifilm", "Fujifilm IRS"),
    "fuji_cr_RG2_JLSL.dcm": ("Fujifilm", ""),
    "philips_pcr_cr_RG1_JLSN.dcm": ("Philips", "Philips Cassette Holder Type 9840 500 70201"),
    "fujifilm_dx_thumbnail.dcm": ("Fujifilm", ""),
}


@pytest.mark.real
def test_real_archive_header_only(real_data: Path) -> None:
    rows = ingest([real_data], workers=2, progress=False)
    files = sorted(str(p) for p in real_data.rglob("*") if p.is_file())
    assert [r["path"] for r in rows] == files
    rel = _by_rel(rows, real_data)

    for name, (manufacturer, model) in XRAY_LABELS.items():
        row = rel[f"xray/{name}"]
        assert (row["manufacturer"], row["model"]) == (manufacturer, model), name
        if model:
            assert row["status"] == "eligible", (name, row["reason_detail"])
    assert rel["xray/fuji_cr_RG2_JLSL.dcm"]["status"] == "missing-label"
    assert rel["xray/kodak_cr500_cr.dcm"]["unit"] == "Kodak CR500 #0123456789ABCDEF"

    # a damaged copy sharing canon_dx's SOPInstanceUID is decoded and found unreadable,
    # instead of making the readable file its "duplicate"
    j2k = rel["bad/truncated_j2k_stream.dcm"]
    assert j2k["SOPInstanceUID"] == rel["xray/canon_dx.dcm"]["SOPInstanceUID"]
    assert j2k["status"] == "unreadable", j2k

    # header-level problems are found without decoding
    acr = rel["bad/acr_nema_no_file_meta.dcm"]
    assert acr["status"] == "unreadable" and acr["reason_detail"].startswith("no-file-meta: ")
    assert rel["bad/no_pixel_data.dcm"]["status"] == "no-pixel-data"
    holo = rel["bad/truncated_pixel_data_hologic.dcm"]
    assert holo["status"] == "unreadable"
    assert holo["reason_detail"].startswith("truncated-pixel-data: ")

    # 19 files, 12 distinct: the 7 byte-identical copies are duplicates of an earlier path
    mr = {k: r for k, r in rel.items() if k.startswith("mr/ge_signa_profile_excite/")}
    assert len(mr) == 19
    dups = {k: r for k, r in mr.items() if r["status"] == "duplicate"}
    assert len(dups) == 7
    assert sum(r["status"] == "eligible" for r in mr.values()) == 12
    for r in dups.values():
        original = r["reason_detail"].removeprefix("same sha256 as ")
        assert original != r["reason_detail"] and original < r["path"]
        assert Path(original).read_bytes() == Path(r["path"]).read_bytes()


@pytest.mark.real
def test_real_bad_files_with_verify(real_data: Path) -> None:
    rows = _by_rel(ingest([real_data / "bad"], workers=1, progress=False, verify=True),
                   real_data)
    got = {k: (r["status"], r["reason_detail"].split(":")[0]) for k, r in rows.items()}
    assert got == {
        "bad/acr_nema_no_file_meta.dcm": ("unreadable", "no-file-meta"),
        "bad/no_pixel_data.dcm": ("no-pixel-data", "header declares a 32x32 image but the file "
                                  "has no Pixel Data element (header-only copy?)"),
        "bad/truncated_j2k_stream.dcm": ("unreadable", "decode-failed"),
        "bad/truncated_pixel_data_hologic.dcm": ("unreadable", "truncated-pixel-data"),
        "bad/undecodable_jpeg_extended.dcm": ("unreadable", "decode-failed"),
    }
