"""Reader tests on generated files: pixel contract, transfer syntaxes, errors, rasters, writers."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset

from medforensics import errors
from medforensics.io import (
    check_header,
    iter_frames,
    read_header,
    read_image,
    read_stored,
    save_dicom_like,
    write_jpeg,
    write_png8,
    write_png16,
)
from medforensics.io.dicom import guess_codec, is_lossy

ROWS, COLS = 32, 40  # >= 32 so that the OpenJPEG encoder accepts the default resolutions


# --------------------------------------------------------------------------- fixtures


def stored_array(bits: int, signed: bool, *, frames: int = 1, seed: int = 0) -> np.ndarray:
    """Random stored values covering the full range of ``bits`` (both extremes included)."""
    rng = np.random.default_rng(seed)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    dtype = np.dtype(f"{'i' if signed else 'u'}{1 if bits <= 8 else 2}")
    shape = (ROWS, COLS) if frames == 1 else (frames, ROWS, COLS)
    arr = rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)
    arr.reshape(-1)[:2] = (lo, hi)
    return arr


def make_ds(arr: np.ndarray, bits: int, photometric: str = "MONOCHROME2") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.SOPClassUID = uid.DigitalXRayImageStorageForPresentation
    ds.StudyInstanceUID = uid.generate_uid()
    ds.SeriesInstanceUID = uid.generate_uid()
    ds.Modality = "DX"
    ds.Manufacturer = "ACME Imaging"
    ds.ManufacturerModelName = "Model X"
    ds.DeviceSerialNumber = "SN-1"
    ds.PatientID = "P001"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PROCESSING"
    ds.set_pixel_data(arr, photometric, bits)
    return ds


def write(ds: Dataset, path: Path, ts: str = uid.ExplicitVRLittleEndian) -> Path:
    ts = uid.UID(ts)
    if ts == uid.ExplicitVRBigEndian:
        arr = ds.pixel_array
        ds.file_meta.TransferSyntaxUID = ts
        ds.PixelData = arr.astype(arr.dtype.newbyteorder(">")).tobytes()
        ds["PixelData"].VR = "OW" if arr.dtype.itemsize > 1 else "OB"
    elif ts.is_compressed:
        ds.compress(ts)
    else:
        ds.file_meta.TransferSyntaxUID = ts
    ds.save_as(path, enforce_file_format=True)
    return path


def expected(arr: np.ndarray, photometric: str = "MONOCHROME2") -> np.ndarray:
    out = arr.astype(np.float64)
    if photometric == "MONOCHROME1":
        out = out.min() + out.max() - out
    return out.astype(np.float32)


def j2k_available() -> bool:
    from pydicom.pixels import get_encoder

    return get_encoder(uid.JPEG2000Lossless).is_available


needs_j2k = pytest.mark.skipif(not j2k_available(), reason="no JPEG 2000 encoder installed")


# --------------------------------------------------------------------------- pixel contract


@pytest.mark.parametrize(
    "ts",
    [uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian, uid.ExplicitVRBigEndian,
     uid.RLELossless],
    ids=["implicit-le", "explicit-le", "explicit-be", "rle"],
)
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("bits", [8, 10, 12, 16])
def test_transfer_syntaxes_bits_signedness(tmp_path, ts, photometric, signed, bits):
    arr = stored_array(bits, signed, seed=bits + signed)
    path = write(make_ds(arr, bits, photometric), tmp_path / "a.dcm", ts)
    img = read_image(path)
    assert img.pixels.dtype == np.float32 and img.pixels.shape == (ROWS, COLS)
    np.testing.assert_array_equal(img.pixels, expected(arr, photometric))
    assert img.meta.bits_stored == bits and img.meta.photometric == photometric
    assert img.meta.transfer_syntax == ts and not img.meta.lossy
    stored = read_stored(path).pixels
    np.testing.assert_array_equal(stored, arr)


@needs_j2k
@pytest.mark.parametrize("bits,signed", [(8, False), (12, False), (12, True), (16, False)])
def test_jpeg2000_lossless(tmp_path, bits, signed):
    arr = stored_array(bits, signed, seed=3)
    path = write(make_ds(arr, bits, "MONOCHROME1"), tmp_path / "j.dcm", uid.JPEG2000Lossless)
    img = read_image(path)
    np.testing.assert_array_equal(img.pixels, expected(arr, "MONOCHROME1"))
    assert img.meta.transfer_syntax == uid.JPEG2000Lossless and not img.meta.lossy


def test_unused_high_bits_are_masked(tmp_path):
    arr = stored_array(12, False)
    ds = make_ds(arr, 12)
    ds.PixelData = (arr | 0xF000).astype("<u2").tobytes()  # overlay garbage above bit 11
    img = read_image(write(ds, tmp_path / "o.dcm"))
    np.testing.assert_array_equal(img.pixels, expected(arr))


def test_signed_unused_bits_sign_extended(tmp_path):
    arr = stored_array(12, True)
    ds = make_ds(arr, 12)
    ds.PixelData = (arr.astype(np.int32) & 0x0FFF).astype("<u2").tobytes()  # no sign bits
    img = read_image(write(ds, tmp_path / "s.dcm"))
    np.testing.assert_array_equal(img.pixels, expected(arr))


def test_rescale_slope_intercept_then_monochrome1(tmp_path):
    arr = stored_array(12, False)
    ds = make_ds(arr, 12, "MONOCHROME1")
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "0.5", "-100", "US"
    img = read_image(write(ds, tmp_path / "r.dcm"))
    y = arr.astype(np.float64) * 0.5 - 100
    np.testing.assert_array_equal(img.pixels, (y.min() + y.max() - y).astype(np.float32))


def test_rescale_monochrome2(tmp_path):
    arr = stored_array(16, True)
    ds = make_ds(arr, 16)
    ds.RescaleSlope, ds.RescaleIntercept = "2", "1024"
    img = read_image(write(ds, tmp_path / "r.dcm", uid.ImplicitVRLittleEndian))
    want = (arr.astype(np.float64) * 2 + 1024).astype(np.float32)
    np.testing.assert_array_equal(img.pixels, want)


def _lut_ds(arr: np.ndarray, lut: np.ndarray, first: int) -> Dataset:
    ds = make_ds(arr, 12)
    item = Dataset()
    item.add_new(0x00283002, "US", [len(lut), first, 16])
    item.ModalityLUTType = "US"
    item.add_new(0x00283006, "OW", lut.astype("<u2").tobytes())
    ds.ModalityLUTSequence = [item]
    ds.RescaleSlope, ds.RescaleIntercept = "3", "7"  # must be ignored: the LUT wins
    return ds


def test_modality_lut_sequence_applied(tmp_path):
    arr = stored_array(12, False)
    lut = (np.sqrt(np.arange(4000)) * 500).astype(np.uint16)  # non-linear, 4000 entries
    path = write(_lut_ds(arr, lut, 50), tmp_path / "lut.dcm")
    img = read_image(path)
    idx = np.clip(arr.astype(np.int64) - 50, 0, len(lut) - 1)
    np.testing.assert_array_equal(img.pixels, lut[idx].astype(np.float32))


def test_multiframe_native_and_rle(tmp_path):
    arr = stored_array(12, False, frames=3)
    for ts in (uid.ExplicitVRLittleEndian, uid.RLELossless):
        path = write(make_ds(arr, 12, "MONOCHROME1"), tmp_path / f"m{ts}.dcm", ts)
        assert read_header(path).n_frames == 3
        for k in range(3):
            img = read_image(path, frame=k)
            assert img.meta.n_frames == 3
            np.testing.assert_array_equal(img.pixels, expected(arr[k], "MONOCHROME1"))
        frames = [im.pixels for im in iter_frames(path)]
        assert len(frames) == 3
        for k in range(3):
            np.testing.assert_array_equal(frames[k], expected(arr[k], "MONOCHROME1"))
        with pytest.raises(errors.ConfigError):
            read_image(path, frame=3)


@needs_j2k
def test_multiframe_jpeg2000(tmp_path):
    arr = stored_array(10, False, frames=2)
    path = write(make_ds(arr, 10), tmp_path / "mj.dcm", uid.JPEG2000Lossless)
    np.testing.assert_array_equal(read_image(path, frame=1).pixels, expected(arr[1]))
    assert [im.pixels.shape for im in iter_frames(path)] == [(ROWS, COLS)] * 2


def test_meta_fields(tmp_path):
    arr = stored_array(12, False)
    ds = make_ds(arr, 12)
    ds.ViewPosition, ds.ImageLaterality, ds.BodyPartExamined = "CC", "L", "BREAST"
    ds.SoftwareVersions = ["1.0", "2.0"]
    ds.StationName, ds.InstitutionName = "ST1", "Hospital"
    path = write(ds, tmp_path / "m.dcm")
    meta = read_header(path)
    assert (meta.format, meta.rows, meta.cols, meta.n_frames) == ("dicom", ROWS, COLS, 1)
    assert meta.manufacturer == "ACME Imaging" and meta.model == "Model X"
    assert meta.serial == "SN-1" and meta.station == "ST1" and meta.institution == "Hospital"
    assert meta.patient_id == "P001" and meta.view == "CC" and meta.laterality == "L"
    assert meta.body_part == "BREAST" and meta.software_versions == "1.0\\2.0"
    assert meta.image_type == "ORIGINAL\\PRIMARY"
    assert meta.presentation_intent == "FOR PROCESSING"
    assert meta.sop_uid == ds.SOPInstanceUID and meta.study_uid == ds.StudyInstanceUID
    assert meta.sop_class_uid == uid.DigitalXRayImageStorageForPresentation
    assert (meta.bits_allocated, meta.pixel_representation, meta.samples_per_pixel) == (16, 0, 1)
    assert meta.header["TransferSyntaxUID"] == uid.ExplicitVRLittleEndian
    assert meta.header["Manufacturer"] == "ACME Imaging" and meta.header["Rows"] == str(ROWS)
    assert meta.has_pixel_data and meta.pixel_data_bytes == ROWS * COLS * 2
    assert read_image(path).meta == meta


def test_lossy_rule():
    assert is_lossy(uid.JPEGBaseline8Bit, "")
    assert is_lossy(uid.JPEGLSNearLossless, "")
    assert is_lossy(uid.JPEG2000, "") and not is_lossy(uid.JPEG2000, "00")
    assert not is_lossy(uid.JPEG2000Lossless, "") and not is_lossy(uid.JPEGLSLossless, "")
    assert is_lossy(uid.ExplicitVRLittleEndian, "01")  # decompressed copy of a lossy image
    assert not is_lossy(uid.ExplicitVRLittleEndian, "00")


def test_lossy_flag_from_header(tmp_path):
    ds = make_ds(stored_array(8, False), 8)
    ds.LossyImageCompression = "01"
    assert read_header(write(ds, tmp_path / "l.dcm")).lossy


class _CountingBytesIO(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        out = super().read(size)
        self.bytes_read += len(out)
        return out


def test_read_header_does_not_read_pixels(tmp_path):
    rng = np.random.default_rng(1)
    big = rng.integers(0, 4096, (512, 512)).astype(np.uint16)
    path = write(make_ds(big, 12), tmp_path / "big.dcm")
    data = path.read_bytes()
    stream = _CountingBytesIO(data)
    meta = read_header(stream)
    assert meta.rows == 512 and meta.pixel_data_bytes == 512 * 512 * 2
    assert stream.bytes_read < 4096 < len(data)


def test_native_multiframe_reads_only_the_frame(tmp_path):
    stack = np.random.default_rng(2).integers(0, 4096, (4, 256, 256)).astype(np.uint16)
    path = write(make_ds(stack, 12), tmp_path / "mf.dcm")
    stream = _CountingBytesIO(path.read_bytes())
    img = read_image(stream, frame=2)
    np.testing.assert_array_equal(img.pixels, stack[2].astype(np.float32))
    assert img.meta.n_frames == 4
    assert stream.bytes_read < 1.2 * stack[0].nbytes
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # last frame incomplete: the file is refused as a whole
    with pytest.raises(errors.TruncatedPixelDataError):
        read_image(path, frame=0)


def test_file_objects_accepted(tmp_path):
    arr = stored_array(12, False)
    path = write(make_ds(arr, 12), tmp_path / "f.dcm")
    img = read_image(io.BytesIO(path.read_bytes()))
    np.testing.assert_array_equal(img.pixels, expected(arr))
    assert img.meta.path == "<stream>"


# --------------------------------------------------------------------------- charsets


def test_declared_charsets(tmp_path):
    ds = make_ds(stored_array(8, False), 8)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.Manufacturer = "Müller Röntgen ÆØÅ"
    ds.InstitutionName = "Klinikum München"
    meta = read_header(write(ds, tmp_path / "u.dcm"))
    assert meta.manufacturer == "Müller Röntgen ÆØÅ" and meta.institution == "Klinikum München"
    assert meta.charset == "ISO_IR 192"
    ds = make_ds(stored_array(8, False), 8)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.Manufacturer = "Société Générale"
    assert read_header(write(ds, tmp_path / "l.dcm")).manufacturer == "Société Générale"


def test_undeclared_cyrillic_is_guessed(tmp_path):
    ds = make_ds(stored_array(8, False), 8)
    ds.Manufacturer = "MANUFACTURERX"  # 14 bytes incl. padding
    ds.InstitutionName = "INSTITUTE"
    path = write(ds, tmp_path / "c.dcm")
    data = path.read_bytes()
    data = data.replace(b"MANUFACTURERX ", "Рентгенпром   ".encode("cp1251"))
    data = data.replace(b"INSTITUTE ", "Больница  ".encode("cp1251"))
    path.write_bytes(data)
    meta = read_header(path)
    assert meta.manufacturer == "Рентгенпром" and meta.institution == "Больница"
    assert meta.charset == "undeclared (guessed cp1251)"


def test_guess_codec():
    assert guess_codec(["Müller".encode("utf-8")]) == "utf-8"
    assert guess_codec(["Müller Straße".encode("latin-1")]) == "latin-1"
    assert guess_codec(["ЗАО Рентгенпром (JSC)".encode("cp1251")]) == "cp1251"


# --------------------------------------------------------------------------- errors


def test_empty_random_and_text_files(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "random.dcm").write_bytes(np.random.default_rng(7).bytes(4096))
    (tmp_path / "text.dcm").write_text("hello, this is not an image\n" * 20)
    for name in ("empty.dcm", "random.dcm", "text.dcm"):
        with pytest.raises(errors.NotDicomError) as exc:
            read_image(tmp_path / name)
        assert exc.value.reason == "not-an-image-file" and name in str(exc.value)
        with pytest.raises(errors.NotDicomError):
            read_header(tmp_path / name, force=True)


def test_file_access_errors(tmp_path):
    with pytest.raises(errors.FileAccessError):
        read_image(tmp_path / "missing.dcm")
    with pytest.raises(errors.FileAccessError):
        read_header(tmp_path)


def test_truncated_native_pixel_data(tmp_path):
    path = write(make_ds(stored_array(12, False), 12), tmp_path / "t.dcm")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    meta = read_header(path)  # header still readable
    assert meta.pixel_data_bytes == ROWS * COLS * 2 - 100
    with pytest.raises(errors.TruncatedPixelDataError, match="cut short"):
        check_header(meta)
    with pytest.raises(errors.TruncatedPixelDataError):
        read_image(path)


def test_truncated_header(tmp_path):
    path = write(make_ds(stored_array(12, False), 12), tmp_path / "h.dcm")
    data = path.read_bytes()
    pixel_at = data.rfind(b"\xe0\x7f\x10\x00")
    for cut in (140, (pixel_at + 140) // 2, pixel_at - 3):
        path.write_bytes(data[:cut])
        with pytest.raises(errors.CorruptHeaderError, match="cut short"):
            read_image(path)


def test_truncated_rle(tmp_path):
    path = write(make_ds(stored_array(12, False), 12), tmp_path / "r.dcm", uid.RLELossless)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 60])
    with pytest.raises(errors.TruncatedPixelDataError):
        read_image(path)


@needs_j2k
def test_corrupt_jpeg2000_stream(tmp_path):
    path = write(make_ds(stored_array(12, False), 12), tmp_path / "c.dcm", uid.JPEG2000Lossless)
    data = bytearray(path.read_bytes())
    sot = data.find(b"\xff\x90", data.find(b"\xff\x4f\xff\x51"))
    data[sot : sot + 12] = b"\xff\x64" + bytes(10)  # destroy the tile-part header
    path.write_bytes(bytes(data))
    with pytest.raises(errors.DecodeError, match="decoder failed"):
        read_image(path)


@needs_j2k
def test_stream_dimensions_must_match_header(tmp_path):
    ds = make_ds(stored_array(12, False), 12)
    write(ds, tmp_path / "d.dcm", uid.JPEG2000Lossless)
    ds.Rows = ROWS * 2  # header lies about the size of the code stream
    ds.save_as(tmp_path / "d.dcm", enforce_file_format=True)
    with pytest.raises(errors.DecodeError, match="compressed stream declares"):
        read_image(tmp_path / "d.dcm")


def test_huge_declared_dimensions(tmp_path):
    for ts in (uid.ExplicitVRLittleEndian, uid.RLELossless):
        ds = make_ds(stored_array(12, False), 12)
        write(ds, tmp_path / "b.dcm", ts)
        ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 1000
        ds.save_as(tmp_path / "b.dcm", enforce_file_format=True)
        with pytest.raises(errors.ImageTooLargeError, match="decompression-bomb"):
            read_image(tmp_path / "b.dcm")
    path = write(make_ds(stored_array(12, False), 12), tmp_path / "s.dcm")
    with pytest.raises(errors.ImageTooLargeError):
        read_image(path, max_pixels=ROWS * COLS - 1)
    assert read_image(path, max_pixels=ROWS * COLS).pixels.shape == (ROWS, COLS)


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_colour_refused(tmp_path, photometric):
    rgb = np.random.default_rng(0).integers(0, 256, (ROWS, COLS, 3)).astype(np.uint8)
    ds = make_ds(stored_array(8, False), 8)
    ds.set_pixel_data(rgb, photometric, 8)
    with pytest.raises(errors.UnsupportedPhotometricError, match=photometric):
        read_image(write(ds, tmp_path / "rgb.dcm"))


def test_palette_refused(tmp_path):
    ds = make_ds(stored_array(8, False), 8)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    with pytest.raises(errors.UnsupportedPhotometricError):
        read_image(write(ds, tmp_path / "p.dcm"))


def test_no_pixel_data_and_not_an_image(tmp_path):
    ds = make_ds(stored_array(8, False), 8)
    del ds.PixelData
    path = write(ds, tmp_path / "n.dcm")
    assert not read_header(path).has_pixel_data
    with pytest.raises(errors.NoPixelDataError):
        read_image(path)
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    sr.SOPClassUID = uid.BasicTextSRStorage
    sr.SOPInstanceUID = uid.generate_uid()
    sr.Modality = "SR"
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    with pytest.raises(errors.NotAnImageError, match="not an image"):
        read_image(tmp_path / "sr.dcm")
    with pytest.raises(errors.NotAnImageError):
        check_header(read_header(tmp_path / "sr.dcm"))


def test_missing_file_meta_and_force(tmp_path):
    arr = stored_array(12, False)
    ds = make_ds(arr, 12, "MONOCHROME1")
    del ds.file_meta
    pydicom.dcmwrite(tmp_path / "acr.dcm", ds, implicit_vr=True, little_endian=True)
    assert (tmp_path / "acr.dcm").read_bytes()[:2] == b"\x08\x00"
    with pytest.raises(errors.MissingFileMetaError, match="force=True"):
        read_image(tmp_path / "acr.dcm")
    with pytest.raises(errors.MissingFileMetaError):
        read_header(tmp_path / "acr.dcm")
    img = read_image(tmp_path / "acr.dcm", force=True)
    np.testing.assert_array_equal(img.pixels, expected(arr, "MONOCHROME1"))
    assert img.meta.transfer_syntax == uid.ImplicitVRLittleEndian
    assert read_header(tmp_path / "acr.dcm", force=True).manufacturer == "ACME Imaging"


def test_file_meta_without_preamble_is_fine(tmp_path):
    arr = stored_array(12, False)
    path = write(make_ds(arr, 12), tmp_path / "p.dcm")
    (tmp_path / "bare.dcm").write_bytes(path.read_bytes()[132:])
    np.testing.assert_array_equal(read_image(tmp_path / "bare.dcm").pixels, expected(arr))


@needs_j2k
def test_missing_decoder_names_the_plugin(tmp_path, monkeypatch):
    from pydicom.pixels import get_decoder

    path = write(make_ds(stored_array(12, False), 12), tmp_path / "j.dcm", uid.JPEG2000Lossless)
    decoder = get_decoder(uid.JPEG2000Lossless)
    monkeypatch.setattr(decoder, "_available", {})
    with pytest.raises(errors.MissingDecoderError, match="pylibjpeg-openjpeg"):
        read_image(path)
    meta = read_header(path)
    with pytest.raises(errors.MissingDecoderError):
        check_header(meta)


@needs_j2k
def test_unsupported_transfer_syntax(tmp_path):
    path = write(make_ds(stored_array(12, False), 12), tmp_path / "j.dcm", uid.JPEG2000Lossless)
    data = path.read_bytes().replace(b"1.2.840.10008.1.2.4.90", b"1.2.840.10008.1.2.4.93")
    path.write_bytes(data)
    with pytest.raises(errors.MissingDecoderError, match="no Python decoder"):
        read_image(path)


def _mutants(data: bytes, rng: np.random.Generator, n: int):
    for _ in range(n):
        buf = bytearray(data)
        kind = rng.integers(3)
        if kind == 0:  # truncate anywhere
            yield bytes(buf[: int(rng.integers(0, len(buf)))])
            continue
        start = int(rng.integers(0, len(buf)))
        count = int(rng.integers(1, 16))
        if kind == 1:  # random bytes
            buf[start : start + count] = rng.bytes(len(buf[start : start + count]))
        else:  # 0xFF bytes (lengths/markers)
            buf[start : start + count] = b"\xff" * len(buf[start : start + count])
        yield bytes(buf)


@pytest.mark.parametrize("ts", [uid.ExplicitVRLittleEndian, uid.RLELossless, uid.JPEG2000Lossless])
def test_fuzz_never_leaks_bare_exceptions(tmp_path, ts):
    if ts == uid.JPEG2000Lossless and not j2k_available():
        pytest.skip("no JPEG 2000 encoder")
    path = write(make_ds(stored_array(12, False), 12), tmp_path / "f.dcm", ts)
    data = path.read_bytes()
    rng = np.random.default_rng(42)
    outcomes: dict[str, int] = {}
    for k, mutant in enumerate(_mutants(data, rng, 60)):
        target = tmp_path / f"m{k}.dcm"
        target.write_bytes(mutant)
        for force in (False, True):
            try:
                img = read_image(target, force=force)
                assert img.pixels.dtype == np.float32 and img.pixels.ndim == 2
                outcomes["ok"] = outcomes.get("ok", 0) + 1
            except (errors.ReadError, errors.ConfigError) as exc:
                outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
            try:
                read_header(target, force=force)
            except errors.ReadError:
                pass
    assert len(outcomes) >= 2  # the mutations really produced failures


# --------------------------------------------------------------------------- PNG / TIFF / JPEG


def test_png_8_and_16_bit(tmp_path):
    a16 = stored_array(16, False)
    write_png16(tmp_path / "a.png", a16)
    img = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(img.pixels, a16.astype(np.float32))
    assert (img.meta.format, img.meta.bits_stored, img.meta.lossy) == ("png", 16, False)
    a8 = stored_array(8, False)
    write_png8(tmp_path / "b.png", a8)
    img = read_image(tmp_path / "b.png")
    np.testing.assert_array_equal(img.pixels, a8.astype(np.float32))
    assert img.meta.bits_stored == 8 and read_header(tmp_path / "b.png").rows == ROWS


def test_png_rgb_equal_channels_and_colour(tmp_path):
    from PIL import Image as PILImage

    a8 = stored_array(8, False)
    PILImage.fromarray(np.stack([a8] * 3, -1)).save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    np.testing.assert_array_equal(img.pixels, a8.astype(np.float32))
    assert img.meta.photometric == "MONOCHROME2"
    colour = np.stack([a8, a8, 255 - a8], -1)
    PILImage.fromarray(colour).save(tmp_path / "c.png")
    with pytest.raises(errors.UnsupportedPhotometricError, match="colour"):
        read_image(tmp_path / "c.png")


def test_png_palette(tmp_path):
    from PIL import Image as PILImage

    a8 = stored_array(8, False)
    grey = PILImage.fromarray(a8).convert("P")  # Pillow builds a grey palette
    grey.putpalette([v for i in range(256) for v in (i, i, i)])
    grey.save(tmp_path / "gp.png")
    np.testing.assert_array_equal(read_image(tmp_path / "gp.png").pixels, a8.astype(np.float32))
    colour = PILImage.fromarray(a8).convert("P")
    colour.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    colour.save(tmp_path / "cp.png")
    with pytest.raises(errors.UnsupportedPhotometricError):
        read_image(tmp_path / "cp.png")


def _png(width: int, height: int, depth: int, colour: int, raw: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def test_png_16bit_rgb_refused_and_bomb(tmp_path):
    rows = b"".join(b"\x00" + bytes(6 * 4) for _ in range(3))
    (tmp_path / "rgb48.png").write_bytes(_png(4, 3, 16, 2, rows))
    with pytest.raises(errors.UnsupportedPhotometricError, match="8 bits"):
        read_image(tmp_path / "rgb48.png")
    (tmp_path / "bomb.png").write_bytes(_png(100_000, 100_000, 8, 0, b"\x00" * 10))
    with pytest.raises(errors.ImageTooLargeError):
        read_image(tmp_path / "bomb.png")
    write_png8(tmp_path / "s.png", stored_array(8, False))
    with pytest.raises(errors.ImageTooLargeError):
        read_image(tmp_path / "s.png", max_pixels=100)


def test_png_truncated(tmp_path):
    write_png16(tmp_path / "a.png", stored_array(16, False))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(errors.TruncatedPixelDataError):
        read_image(tmp_path / "t.png")


def test_tiff_16bit_multipage_float_and_lzw(tmp_path):
    import tifffile
    from PIL import Image as PILImage

    stack = stored_array(16, False, frames=3)
    with tifffile.TiffWriter(tmp_path / "s.tif") as tw:
        for page in stack:
            tw.write(page, photometric="minisblack")
    meta = read_header(tmp_path / "s.tif")
    assert (meta.format, meta.n_frames, meta.bits_stored) == ("tiff", 3, 16)
    for k in range(3):
        np.testing.assert_array_equal(read_image(tmp_path / "s.tif", frame=k).pixels, stack[k])
    assert len(list(iter_frames(tmp_path / "s.tif"))) == 3
    f32 = np.random.default_rng(0).normal(size=(ROWS, COLS)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", f32)
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif").pixels, f32)
    PILImage.fromarray(stack[0]).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    np.testing.assert_array_equal(read_image(tmp_path / "lzw.tif").pixels, stack[0])
    rgb = np.stack([stack[0], stack[0], stack[1]], -1)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    with pytest.raises(errors.UnsupportedPhotometricError):
        read_image(tmp_path / "rgb.tif")


def test_jpeg_grey_and_rgb_grey(tmp_path):
    from PIL import Image as PILImage

    smooth = (np.add.outer(np.arange(ROWS), np.arange(COLS)) * 3).astype(np.uint8)
    write_jpeg(tmp_path / "g.jpg", smooth, quality=90)
    img = read_image(tmp_path / "g.jpg")
    assert img.meta.format == "jpeg" and img.meta.lossy and img.meta.bits_stored == 8
    with PILImage.open(tmp_path / "g.jpg") as ref:
        np.testing.assert_array_equal(img.pixels, np.asarray(ref).astype(np.float32))
    assert np.abs(img.pixels - smooth).max() < 12
    PILImage.fromarray(np.stack([smooth] * 3, -1)).save(tmp_path / "rgb.jpg", quality=90)
    img = read_image(tmp_path / "rgb.jpg")
    assert img.pixels.shape == (ROWS, COLS) and img.meta.photometric == "MONOCHROME2"
    assert np.abs(img.pixels - smooth).max() < 12
    colour = np.stack([smooth, 255 - smooth, smooth // 2], -1)
    PILImage.fromarray(colour).save(tmp_path / "c.jpg", quality=90)
    with pytest.raises(errors.UnsupportedPhotometricError):
        read_image(tmp_path / "c.jpg")


def test_jpeg_corrupt(tmp_path):
    write_jpeg(tmp_path / "g.jpg", stored_array(8, False))
    data = bytearray((tmp_path / "g.jpg").read_bytes())
    data[20:] = np.random.default_rng(0).bytes(len(data) - 20)
    (tmp_path / "bad.jpg").write_bytes(bytes(data))
    with pytest.raises(errors.ReadError) as exc:
        read_image(tmp_path / "bad.jpg")
    assert type(exc.value) in (errors.DecodeError, errors.TruncatedPixelDataError)


# --------------------------------------------------------------------------- writers


def test_png_writers_refuse_bad_input(tmp_path):
    with pytest.raises(errors.InvalidArrayError):
        write_png16(tmp_path / "a.png", np.full((4, 4), 70000))
    with pytest.raises(errors.InvalidArrayError):
        write_png16(tmp_path / "a.png", np.full((4, 4), 1.5))
    with pytest.raises(errors.InvalidArrayError):
        write_png8(tmp_path / "a.png", np.zeros((2, 4, 4)))
    with pytest.raises(errors.InvalidArrayError):
        write_jpeg(tmp_path / "a.jpg", np.full((4, 4), 256))


@pytest.mark.parametrize("ts", [uid.ExplicitVRLittleEndian, uid.RLELossless])
def test_save_dicom_like_roundtrip(tmp_path, ts):
    arr = stored_array(12, False)
    src_ds = make_ds(arr, 12, "MONOCHROME1")
    src_ds.RescaleSlope, src_ds.RescaleIntercept = "1", "-5"
    src = write(src_ds, tmp_path / "src.dcm", ts)
    stored = read_stored(src).pixels
    forged = stored.copy()
    forged[5:10, 5:15] = forged[20:25, 20:30]  # copy-move
    save_dicom_like(src, forged, tmp_path / "out.dcm")
    out = read_stored(tmp_path / "out.dcm")
    np.testing.assert_array_equal(out.pixels, forged)
    src_meta = read_header(src)
    assert out.meta.manufacturer == src_meta.manufacturer
    assert out.meta.patient_id == src_meta.patient_id
    assert out.meta.photometric == "MONOCHROME1"
    assert out.meta.transfer_syntax == uid.ExplicitVRLittleEndian
    assert out.meta.sop_uid != src_meta.sop_uid
    y = forged.astype(np.float64) - 5
    np.testing.assert_array_equal(read_image(tmp_path / "out.dcm").pixels,
                                  (y.min() + y.max() - y).astype(np.float32))
    save_dicom_like(pydicom.dcmread(src), forged, tmp_path / "same.dcm", new_sop_uid=False)
    assert read_header(tmp_path / "same.dcm").sop_uid == src_meta.sop_uid
    with pytest.raises(errors.InvalidArrayError):
        save_dicom_like(src, np.full((ROWS, COLS), 5000), tmp_path / "x.dcm")  # > 12 bits
