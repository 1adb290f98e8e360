"""Hardening: a corpus of bad inputs, the batch commands over it, and model loading safety.

Every bad file must give its own :class:`medforensics.errors.ReadError` subclass (and
``reason``) from ``read_image``; the header-only path (``read_header`` + ``check_header``,
used by ingest) gives the same error when the header alone shows the problem. The batch
commands (``medforensics ingest``, ``medforensics identify``) and the web service carry on
over the whole corpus and report each file. Loading a model never executes code from a file.
"""

from __future__ import annotations

import ast
import json
import pickle
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from typer.testing import CliRunner

from medforensics import errors
from medforensics.cli import app
from medforensics.data.files import SIDE_FILE_SUFFIXES
from medforensics.source.verdicts import header_claim
from medforensics.io import check_header, read_header, read_image

SRC = Path(__file__).resolve().parents[1] / "src" / "medforensics"


@dataclass(frozen=True)
class Expect:
    """What a corpus file must give.

    Attributes:
        error: exact ReadError subclass from ``read_image`` (``None``: readable image).
        header: whether ``read_header`` + ``check_header`` already raise ``error`` (else they
            pass and only decoding finds the problem).
    """

    error: type[errors.ReadError] | None
    header: bool = True

    @property
    def reason(self) -> str | None:
        return None if self.error is None else self.error.reason


# ------------------------------------------------------------------------------ the corpus

ROWS, COLS = 64, 64
EXPLICIT_LE = b"1.2.840.10008.1.2.1\x00"


def _image_ds(seed: int = 0, bits: int = 12, rows: int = ROWS, cols: int = COLS) -> Dataset:
    rng = np.random.default_rng(seed)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.SOPClassUID = uid.DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.{seed + 1}"
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.9{seed + 1}"
    ds.Modality = "DX"
    ds.Manufacturer = "ACME Imaging"
    ds.ManufacturerModelName = "Model X"
    ds.DeviceSerialNumber = "SN-1"
    ds.PatientID = f"P{seed:03d}"
    # an exposure gradient with noise on it (noise alone would be no evidence of any device)
    top = (1 << bits) - 1
    ramp = np.linspace(0, 0.75 * top, cols)[None, :]
    noise = rng.integers(0, max(2, (1 << bits) // 16), (rows, cols))
    arr = (ramp + noise).astype(np.uint16 if bits > 8 else np.uint8)
    ds.set_pixel_data(arr, "MONOCHROME2", bits)
    return ds


def _dicom_bytes(ds: Dataset, **kw: object) -> bytes:
    import io

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True, **kw)
    return buf.getvalue()


def _patch_element(data: bytes, tag: bytes, vr: bytes, value: bytes) -> bytes:
    """Rewrite one short explicit-VR element (tag + old VR + 2-byte length + value)."""
    i = data.find(tag)
    assert i > 0, tag
    old_len = struct.unpack("<H", data[i + 6 : i + 8])[0]
    new = tag + vr + struct.pack("<H", len(value)) + value
    if vr in (b"SQ", b"OB", b"OW", b"UN"):
        new = tag + vr + b"\x00\x00" + struct.pack("<I", len(value)) + value
    return data[:i] + new + data[i + 8 + old_len :]


ROWS_TAG = b"\x28\x00\x10\x00"
BITS_STORED_TAG = b"\x28\x00\x01\x01"
PIXEL_TAG = b"\xe0\x7f\x10\x00"


def build_corpus(root: Path) -> dict[str, Expect]:
    """Write the generated bad-input corpus (and a few odd-named good files) into ``root``.

    Returns:
        file name -> :class:`Expect`.
    """
    from PIL import Image as PILImage

    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[bytes, Expect]] = {}
    good = _dicom_bytes(_image_ds(0))
    px = good.rfind(PIXEL_TAG)

    files["zero-bytes.dcm"] = (b"", Expect(errors.NotDicomError))
    files["random-bytes.bin"] = (np.random.default_rng(7).bytes(4096), Expect(errors.NotDicomError))
    files["text.txt"] = (b"this is not an image\n" * 40, Expect(errors.NotDicomError))
    files["cut-in-preamble.dcm"] = (good[:100], Expect(errors.NotDicomError))
    files["cut-in-header.dcm"] = (good[: px - 3], Expect(errors.CorruptHeaderError))
    files["cut-in-pixel-data.dcm"] = (good[: px + 12 + 999], Expect(errors.TruncatedPixelDataError))
    # wrong VRs
    rows_value = struct.pack("<H", ROWS)
    files["rows-vr-LO.dcm"] = (_patch_element(good, ROWS_TAG, b"LO", rows_value),
                               Expect(errors.CorruptHeaderError))
    files["rows-vr-invalid.dcm"] = (_patch_element(good, ROWS_TAG, b"XX", rows_value),
                                    Expect(errors.CorruptHeaderError))
    files["rows-vr-US-length-3.dcm"] = (_patch_element(good, ROWS_TAG, b"US", rows_value + b"\0"),
                                        Expect(errors.CorruptHeaderError))
    files["bits-stored-vr-SS-negative.dcm"] = (
        _patch_element(good, BITS_STORED_TAG, b"SS", struct.pack("<h", -3)),
        Expect(errors.CorruptHeaderError))
    # decompression bomb guards
    ds = _image_ds(1)
    ds.Rows, ds.Columns = 65535, 65535
    files["huge-rows-columns.dcm"] = (_dicom_bytes(ds), Expect(errors.ImageTooLargeError))
    ds = _image_ds(2)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 40000, 40000, 1000
    files["huge-frames.dcm"] = (_dicom_bytes(ds), Expect(errors.ImageTooLargeError))
    ds = _image_ds(3)
    del ds.PixelData
    files["missing-pixel-data.dcm"] = (_dicom_bytes(ds), Expect(errors.NoPixelDataError))
    # colour
    ds = _image_ds(4)
    ds.set_pixel_data(np.full((16, 16, 3), (200, 30, 10), np.uint8), "RGB", 8)
    files["colour-rgb.dcm"] = (_dicom_bytes(ds), Expect(errors.UnsupportedPhotometricError))
    ds = _image_ds(5)
    ds.PhotometricInterpretation = "YBR_FULL_422"
    files["colour-ybr.dcm"] = (_dicom_bytes(ds), Expect(errors.UnsupportedPhotometricError))
    ds = _image_ds(6)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    files["colour-palette.dcm"] = (_dicom_bytes(ds), Expect(errors.UnsupportedPhotometricError))
    # compressed with no codec / broken compressed streams
    ds = _image_ds(7)
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.8.498.77.1"  # private, no plugin
    files["private-transfer-syntax.dcm"] = (
        _dicom_bytes(ds, implicit_vr=False, little_endian=True), Expect(errors.MissingDecoderError))
    ds = _image_ds(8)
    ds.file_meta.TransferSyntaxUID = uid.DeflatedExplicitVRLittleEndian
    deflated = _dicom_bytes(ds)
    meta_end = 132 + 12 + struct.unpack("<I", deflated[140:144])[0]
    files["deflated-garbage.dcm"] = (deflated[:meta_end] + b"\x00not deflate data" * 20,
                                     Expect(errors.CorruptHeaderError))
    files["deflated-cut.dcm"] = (deflated[: (meta_end + len(deflated)) // 2],
                                 Expect(errors.CorruptHeaderError))
    ds = _image_ds(9)
    ds.file_meta.TransferSyntaxUID = uid.JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(60)])
    ds["PixelData"].VR = "OB"
    files["j2k-garbage-stream.dcm"] = (_dicom_bytes(ds), Expect(errors.DecodeError, header=False))
    files["rle-claimed-native-data.dcm"] = (
        _dicom_bytes(_image_ds(10)).replace(EXPLICIT_LE, b"1.2.840.10008.1.2.5\x00"),
        Expect(errors.DecodeError, header=False))
    # not an image / no file meta
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    sr.SOPClassUID = uid.BasicTextSRStorage
    sr.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.500"
    sr.Modality = "SR"
    files["structured-report.dcm"] = (_dicom_bytes(sr), Expect(errors.NotAnImageError))
    acr = _image_ds(11)
    del acr.file_meta
    import io

    buf = io.BytesIO()
    pydicom.dcmwrite(buf, acr, implicit_vr=True, little_endian=True)
    files["acr-nema-no-meta.dcm"] = (buf.getvalue(), Expect(errors.MissingFileMetaError))
    # raster files
    img = io.BytesIO()
    PILImage.fromarray(np.full((20, 30, 3), (10, 200, 30), np.uint8)).save(img, format="PNG")
    files["colour.png"] = (img.getvalue(), Expect(errors.UnsupportedPhotometricError,
                                                  header=False))
    img = io.BytesIO()
    PILImage.fromarray(np.zeros((20, 30), np.uint8)).save(img, format="PNG")
    files["cut.png"] = (img.getvalue()[:40], Expect(errors.DecodeError))
    img = io.BytesIO()
    PILImage.fromarray((np.arange(600).reshape(20, 30) % 251).astype(np.uint8)).save(
        img, format="JPEG", quality=90)
    files["cut.jpg"] = (img.getvalue()[: len(img.getvalue()) // 2],
                        Expect(errors.TruncatedPixelDataError))
    # odd file names, readable content (each distinct so that ingest does not call them
    # duplicates)
    odd = ["with space.dcm", "Röntgen 画像 ünïcode.dcm", "no-extension", "-leading-dash.dcm",
           "semi;colon 'quote\" #hash.dcm", "new\nline.dcm"]
    for k, name in enumerate(odd):
        files[name] = (_dicom_bytes(_image_ds(20 + k)), Expect(None))

    for name, (data, _) in files.items():
        (root / name).write_bytes(data)
    return {name: exp for name, (_, exp) in files.items()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Expect]]:
    root = tmp_path_factory.mktemp("corpus") / "bad inputs"
    return root, build_corpus(root)


REAL_BAD = {
    "acr_nema_no_file_meta.dcm": Expect(errors.MissingFileMetaError),
    "no_pixel_data.dcm": Expect(errors.NoPixelDataError),
    "truncated_j2k_stream.dcm": Expect(errors.DecodeError, header=False),
    "truncated_pixel_data_hologic.dcm": Expect(errors.TruncatedPixelDataError),
    "undecodable_jpeg_extended.dcm": Expect(errors.DecodeError, header=False),
}


@pytest.fixture(scope="module")
def real_bad(request: pytest.FixtureRequest) -> tuple[Path, dict[str, Expect]] | None:
    """``real/bad`` and its expectations, or ``None`` when the real files are absent."""
    try:
        root = request.getfixturevalue("real_data") / "bad"
    except pytest.skip.Exception:
        return None
    return root, {p.name: REAL_BAD.get(p.name, Expect(errors.ReadError))
                  for p in sorted(root.iterdir()) if p.is_file()}


def _check(path: Path, exp: Expect, *, force: bool = False) -> None:
    if exp.error is None:
        img = read_image(path, force=force)
        assert img.pixels.dtype == np.float32 and img.pixels.shape == (ROWS, COLS)
        check_header(read_header(path, force=force))
        return
    with pytest.raises(errors.ReadError) as info:
        read_image(path, force=force)
    if exp.error is not errors.ReadError:  # an unknown new real file: any specific subclass
        assert type(info.value) is exp.error, f"{path.name}: {info.value!r}"
    else:
        assert type(info.value) is not errors.ReadError
    assert info.value.reason == type(info.value).reason
    assert info.value.path == str(path)
    try:
        check_header(read_header(path, force=force))
    except errors.ReadError as exc:
        assert exp.header, f"{path.name}: header path raised {exc!r} too early"
        assert type(exc) is type(info.value), f"{path.name}: header says {exc!r}"
    else:
        assert not exp.header, f"{path.name}: header-only path did not see the problem"


# ------------------------------------------------------------------------------ the reader


def test_generated_corpus_gives_specific_errors(corpus: tuple[Path, dict[str, Expect]]) -> None:
    root, expect = corpus
    assert len(expect) >= 30
    for name, exp in expect.items():
        _check(root / name, exp)


def test_real_bad_files(real_bad: tuple[Path, dict[str, Expect]] | None) -> None:
    if real_bad is None:
        pytest.skip("../shared/data/real is not present")
    root, expect = real_bad
    assert set(REAL_BAD) <= set(expect)
    for name, exp in expect.items():
        _check(root / name, exp)


def _element_ends(data: bytes) -> set[int]:
    """File offsets where a top-level data element of the main data set ends."""
    import io

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    ends = set()
    for tag in ds.keys():
        elem = ds.get_item(tag, keep_deferred=True)
        if getattr(elem, "value_tell", None) is not None:
            ends.add(elem.value_tell + elem.length)
    return ends


def test_dicom_truncated_at_many_offsets(tmp_path: Path) -> None:
    data = _dicom_bytes(_image_ds(0))
    px = data.rfind(PIXEL_TAG)
    ends = _element_ends(data)
    rng = np.random.default_rng(0)
    offsets = sorted(
        {0, 1, 64, 128, 131}
        | {int(x) for x in rng.integers(132, px, 8)}
        | {px + 2, px + 8}
        | {int(x) for x in rng.integers(px + 12, len(data), 5)}
        | {len(data) - 1}
    )
    assert len(offsets) >= 20
    seen = set()
    for cut in offsets:
        path = tmp_path / f"cut-{cut}.dcm"
        path.write_bytes(data[:cut])
        if cut < 132:
            exp: tuple[type[errors.ReadError], ...] = (errors.NotDicomError,)
        elif cut < px + 12:
            # inside the header: corrupt, unless the cut falls exactly between two elements,
            # which leaves a well-formed shorter data set (no Rows/Pixel Data)
            exp = (errors.CorruptHeaderError,) if cut not in ends else (
                errors.NotAnImageError, errors.NoPixelDataError, errors.CorruptHeaderError)
        else:
            exp = (errors.TruncatedPixelDataError,)
        with pytest.raises(errors.ReadError) as info:
            read_image(path)
        assert type(info.value) in exp, f"cut at {cut}: {info.value!r}"
        with pytest.raises(errors.ReadError) as info_h:
            check_header(read_header(path))
        assert type(info_h.value) is type(info.value), f"cut at {cut}"
        seen.add(type(info.value))
    assert {errors.NotDicomError, errors.CorruptHeaderError,
            errors.TruncatedPixelDataError} <= seen


@pytest.mark.parametrize("vr,ts", [("SQ", "native"), ("UC", "rle"), ("UR", "rle"),
                                   ("SQ", "rle")])
def test_pixel_data_with_non_pixel_vr(tmp_path: Path, vr: str, ts: str) -> None:
    ds = _image_ds(0)
    if ts == "rle":
        ds.compress(uid.RLELossless)
    data = _dicom_bytes(ds)
    i = data.rfind(PIXEL_TAG)
    path = tmp_path / f"pixel-{vr}.dcm"
    path.write_bytes(data[: i + 4] + vr.encode() + data[i + 6 :])
    with pytest.raises(errors.ReadError):
        read_image(path)


def test_non_finite_rescale_slope_is_refused(tmp_path: Path) -> None:
    ds = _image_ds(0)
    ds.RescaleSlope, ds.RescaleIntercept = "2", "0"
    data = _patch_element(_dicom_bytes(ds), b"\x28\x00\x53\x10", b"DS", b"inf ")
    path = tmp_path / "slope-inf.dcm"
    path.write_bytes(data)
    assert read_header(path).header["RescaleSlope"] == "inf"
    with pytest.raises(errors.ReadError):
        read_image(path)


def _tiff_with_broken_second_page(path: Path) -> None:
    """Two-page TIFF whose second IFD gives BitsPerSample (258) a count of 0."""
    import io

    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.arange(2 * 16 * 20, dtype=np.uint16).reshape(2, 16, 20))
    d = bytearray(buf.getvalue())
    assert d[:2] == b"II"
    ifd0 = struct.unpack("<I", d[4:8])[0]
    n0 = struct.unpack("<H", d[ifd0 : ifd0 + 2])[0]
    ifd1 = struct.unpack("<I", d[ifd0 + 2 + 12 * n0 : ifd0 + 6 + 12 * n0])[0]
    n1 = struct.unpack("<H", d[ifd1 : ifd1 + 2])[0]
    for k in range(n1):
        entry = ifd1 + 2 + 12 * k
        if struct.unpack("<H", d[entry : entry + 2])[0] == 258:
            d[entry + 4 : entry + 8] = struct.pack("<I", 0)
            break
    else:
        raise AssertionError("no BitsPerSample entry")
    path.write_bytes(bytes(d))


def test_tiff_with_corrupt_second_page(tmp_path: Path) -> None:
    from medforensics.io import iter_frames

    path = tmp_path / "two-pages.tif"
    _tiff_with_broken_second_page(path)
    assert read_header(path).n_frames == 2
    assert read_image(path).pixels.shape == (16, 20)  # the first page is fine
    with pytest.raises(errors.ReadError):
        read_image(path, frame=1)
    with pytest.raises(errors.ReadError):
        list(iter_frames(path))


def test_tiff_size_tag_with_two_values(tmp_path: Path) -> None:
    import io

    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((16, 20), np.uint16))
    d = bytearray(buf.getvalue())
    ifd0 = struct.unpack("<I", d[4:8])[0]
    for k in range(struct.unpack("<H", d[ifd0 : ifd0 + 2])[0]):
        entry = ifd0 + 2 + 12 * k
        if struct.unpack("<H", d[entry : entry + 2])[0] == 256:  # ImageWidth
            d[entry + 4 : entry + 8] = struct.pack("<I", 2)
    path = tmp_path / "width-2-values.tif"
    path.write_bytes(bytes(d))
    with pytest.raises(errors.ReadError):
        read_header(path)


# ------------------------------------------------------------------------------ batch commands


def _all_inputs(corpus, real_bad) -> tuple[list[Path], dict[str, Expect]]:
    roots = [corpus[0]] + ([real_bad[0]] if real_bad else [])
    expect = {str(corpus[0] / n): e for n, e in corpus[1].items()}
    if real_bad:
        expect.update({str(real_bad[0] / n): e for n, e in real_bad[1].items()})
    return roots, expect


def test_ingest_reports_every_file(corpus, real_bad, tmp_path: Path) -> None:
    from medforensics.data.manifest import read_manifest

    roots, expect = _all_inputs(corpus, real_bad)
    out = tmp_path / "manifest.csv"
    res = CliRunner().invoke(app, ["ingest", *map(str, roots), "--out", str(out), "--verify",
                                   "--workers", "1", "--min-size", "16", "--no-progress"])
    assert res.exit_code == 0, res.output
    rows = read_manifest(out)
    by_path = {r["path"]: r for r in rows}
    assert len(rows) == len(by_path) == len(expect)
    for path, exp in expect.items():
        row = by_path[str(Path(path).resolve())] if path not in by_path else by_path[path]
        if exp.error is None:
            assert row["status"] == "eligible", (path, row["status"], row["reason_detail"])
            continue
        assert row["status"] != "eligible" and row["reason_detail"], path
        if exp.error is errors.ReadError:
            continue
        side = Path(path).suffix in SIDE_FILE_SUFFIXES  # a .txt beside the images
        assert row["status"] == exp.reason or (
            row["status"] == ("side-file" if side else "unreadable")
            and f"{exp.reason}:" in row["reason_detail"]
        ), (path, row["status"], row["reason_detail"])


@pytest.fixture(scope="module")
def random_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained (random-weight) patch model: enough to exercise the identify plumbing."""
    import torch

    from medforensics.models.io import save_model
    from medforensics.models.registry import create_model

    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("random_run")
    save_model(run, create_model("patch", 2, patch=32),
               {"classes": ["Acme Imaging Model X", "Other Vendor Y"], "label_column": "model"})
    return run


def test_identify_reports_every_file(corpus, real_bad, random_run: Path) -> None:
    roots, expect = _all_inputs(corpus, real_bad)
    # a folder walk leaves out side files that are never images (text.txt)
    expect = {p: e for p, e in expect.items() if Path(p).suffix not in SIDE_FILE_SUFFIXES}
    res = CliRunner().invoke(app, ["identify", str(random_run), *map(str, roots), "--json"])
    assert res.exit_code == 1, res.output  # some files could not be analysed, each reported
    lines = [json.loads(ln) for ln in res.stdout.splitlines() if ln.startswith("{")]
    got = {rec["path"]: rec for rec in lines}
    assert len(lines) == len(got) == len(expect)
    for path, exp in expect.items():
        rec = got[path]
        if exp.error is None:
            assert rec["status"] == "done", rec
            assert rec["header_claim"] == header_claim(read_header(path), "model")
            assert rec["claim_class"] == rec["header_claim"] == "Acme Imaging Model X"
        else:
            assert rec["status"] == "error" and "verdict" not in rec, rec
            if exp.error is not errors.ReadError:
                assert rec["reason"] == exp.reason, (path, rec["reason"], rec["message"])
    # the table output also carries on (exit 1: some files not analysed) and counts every file
    table = CliRunner().invoke(app, ["identify", str(random_run), str(corpus[0])])
    assert table.exit_code == 1, table.output
    walked = {n: e for n, e in corpus[1].items() if Path(n).suffix not in SIDE_FILE_SUFFIXES}
    n_bad = sum(e.error is not None for e in walked.values())
    assert f"{len(walked)} image(s)" in table.stdout
    assert f"unreadable: {n_bad}" in table.stdout


def test_leading_dash_file_name_on_the_command_line(corpus, random_run: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(corpus[0])
    res = CliRunner().invoke(app, ["identify", str(random_run), "--json", "--",
                                   "-leading-dash.dcm", "no-extension"])
    assert res.exit_code == 0, res.output
    recs = [json.loads(ln) for ln in res.stdout.splitlines() if ln.startswith("{")]
    assert [r["path"] for r in recs] == ["-leading-dash.dcm", "no-extension"]
    assert all(r["status"] == "done" for r in recs)


def _pixel_sq_file(path: Path) -> Path:
    data = _dicom_bytes(_image_ds(0))
    i = data.rfind(PIXEL_TAG)
    path.write_bytes(data[: i + 4] + b"SQ" + data[i + 6 :])
    return path


def test_identify_carries_on_past_reader_bugs(random_run: Path, tmp_path: Path) -> None:
    _pixel_sq_file(tmp_path / "a-pixel-sq.dcm")
    (tmp_path / "b-good.dcm").write_bytes(_dicom_bytes(_image_ds(1)))
    res = CliRunner().invoke(app, ["identify", str(random_run), str(tmp_path), "--json"])
    assert res.exit_code == 1, repr(res.exception)  # one file not analysed, the batch went on
    assert len([ln for ln in res.stdout.splitlines() if ln.startswith("{")]) == 2


def test_report_carries_on_past_reader_bugs(random_run: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    _pixel_sq_file(src / "a-pixel-sq.dcm")
    (src / "b-good.dcm").write_bytes(_dicom_bytes(_image_ds(1)))
    (src / "c-empty.dcm").write_bytes(b"")
    res = CliRunner().invoke(app, ["report", str(src), "--source-model", str(random_run),
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 1, res.output  # two unreadable files (exit 1), yet every file has
    assert "2 file(s) could not be read" in res.output  # its page and none failed
    assert "failed" not in res.output
    pages = sorted((tmp_path / "out").glob("case-*.html"))
    assert len(pages) == 3
    text = "".join(p.read_text() for p in pages)
    assert "a-pixel-sq" not in text  # the path stays masked on every page
    index = (tmp_path / "out" / "index.html").read_text()
    assert "corrupt-header" in index and "not-an-image-file" in index


def test_service_answers_4xx_never_500(corpus, real_bad, random_run: Path) -> None:
    pytest.importorskip("medforensics.service.app")
    from fastapi.testclient import TestClient

    from medforensics.service.app import create_app

    _, expect = _all_inputs(corpus, real_bad)
    client = TestClient(create_app(random_run))
    for path, exp in expect.items():
        data = Path(path).read_bytes()
        r = client.post("/v1/identify", files={"file": ("upload.dcm", data)})
        assert r.status_code < 500, (path, r.status_code, r.text)
        if exp.error is None:
            assert r.status_code == 200, (path, r.text)
        else:
            assert 400 <= r.status_code < 500, (path, r.status_code)
            if exp.error is not errors.ReadError:
                assert r.json()["error"] == exp.reason, (path, r.json())


# ------------------------------------------------------------------------------ model loading


class _Canary:
    """Unpickling this object creates a file: proof that a pickle was executed."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (Path(self.target),))


def _valid_run(tmp_path: Path) -> Path:
    from medforensics.models.io import save_model
    from medforensics.models.registry import create_model

    run = tmp_path / "run"
    save_model(run, create_model("patch", 2, patch=32), {"classes": ["a", "b"]})
    return run


def test_load_model_never_unpickles(tmp_path: Path) -> None:
    import hashlib

    from medforensics.models.io import load_model

    canary = tmp_path / "EXECUTED"
    payload = pickle.dumps(_Canary(str(canary)))
    pickle.loads(payload)  # the payload really works ...
    assert canary.exists()
    canary.unlink()
    for suffix in (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".npy", ".npz", ".joblib"):
        p = tmp_path / f"model{suffix}"
        p.write_bytes(payload)
        with pytest.raises(errors.ModelFileError, match="refus"):
            load_model(p)
    # a pickle under the safetensors name, with model.json carrying its true hash
    run = _valid_run(tmp_path)
    (run / "model.safetensors").write_bytes(payload)
    meta = json.loads((run / "model.json").read_text())
    meta["weights_sha256"] = hashlib.sha256(payload).hexdigest()
    (run / "model.json").write_text(json.dumps(meta))
    with pytest.raises(errors.ModelFileError):
        load_model(run)
    assert not canary.exists()  # ... but loading never ran it


@pytest.mark.parametrize("change", [
    {"weights_file": "../model.safetensors"},
    {"weights_file": "/etc/passwd"},
    {"weights_file": "model.pt"},
    {"weights_file": "sub/model.safetensors"},
    {"weights_file": ["model.safetensors"]},
    {"name": "os.system"},
    {"name": "builtins.eval"},
    {"name": "__import__('os').system('true')"},
    {"model_kwargs": {"__class__": "os.system"}},
    {"model_kwargs": {"patch": "exec('x')"}},
    {"num_classes": "2; import os"},
    {"format": "pickle"},
    {"weights_sha256": "0" * 64},
])
def test_load_model_refuses_odd_json(tmp_path: Path, change: dict) -> None:
    from medforensics.models.io import load_model

    run = _valid_run(tmp_path)
    outside = tmp_path / "model.safetensors"  # target of the ../ traversal: a real file
    outside.write_bytes((run / "model.safetensors").read_bytes())
    meta = json.loads((run / "model.json").read_text())
    meta.update(change)
    (run / "model.json").write_text(json.dumps(meta))
    with pytest.raises(errors.ModelFileError):
        load_model(run)


@pytest.mark.parametrize("text", ["[]", "null", "{\"format\": 1}", "not json", "\ufeff{}"])
def test_load_model_refuses_malformed_json(tmp_path: Path, text: str) -> None:
    from medforensics.models.io import load_model

    run = _valid_run(tmp_path)
    (run / "model.json").write_text(text, encoding="utf-8")
    with pytest.raises(errors.ModelFileError):
        load_model(run)


_UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal",
                   "shelve"}


def unsafe_loads(source: str, filename: str = "<src>") -> list[str]:
    """Calls/imports in Python source that can execute code from a file (AST "grep")."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names
                      if a.name.split(".")[0] in _UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in _UNSAFE_MODULES:
                found.append(f"from {node.module} import ...")
            if node.module in ("torch", "torch.serialization", "torch.jit") and any(
                    a.name in ("load", "jit") for a in node.names):
                found.append(f"from {node.module} import load/jit")
        elif isinstance(node, ast.Call):
            f = node.func
            name = ""
            if isinstance(f, ast.Attribute):
                parts = [f.attr]
                v = f.value
                while isinstance(v, ast.Attribute):
                    parts.append(v.attr)
                    v = v.value
                parts.append(v.id if isinstance(v, ast.Name) else "<expr>")
                name = ".".join(reversed(parts))
            elif isinstance(f, ast.Name):
                name = f.id
            if name in ("torch.load", "torch.jit.load", "torch.serialization.load",
                        "eval", "exec") or name.split(".")[0] in _UNSAFE_MODULES:
                found.append(f"{name}()")
            if name in ("np.load", "numpy.load") and any(
                    k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant)
                                                     and k.value.value is False)
                    for k in node.keywords):
                found.append(f"{name}(allow_pickle=...)")
    return found


def test_unsafe_load_detector_works() -> None:
    bad = ("import pickle\nfrom joblib import load\nimport torch\nimport numpy as np\n"
           "torch.load('m.pt')\nnp.load('a.npy', allow_pickle=True)\ntorch.jit.load('x')\n"
           "eval('1')\n")
    assert len(unsafe_loads(bad)) == 6
    assert unsafe_loads("net = make().eval()\nmodel.eval()\n") == []
    assert unsafe_loads("import torch\n'''torch.load(x)'''\nnp.load('a.npy')\n") == []


def test_no_code_executing_loaders_in_src() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 30
    hits = {str(p.relative_to(SRC)): unsafe_loads(p.read_text(encoding="utf-8"), str(p))
            for p in files}
    hits = {k: v for k, v in hits.items() if v}
    assert hits == {}
    # and a plain text grep, outside comments and docstrings, as the belt to those braces
    pattern = re.compile(r"^\s*[^#\s\"'].*\b(torch\.load|pickle\.loads?|torch\.jit\.load)\s*\(")
    lines = [f"{p.name}:{i}" for p in files
             for i, ln in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if pattern.search(ln)]
    assert lines == []
