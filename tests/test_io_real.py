"""Reader checks on the real DICOM files of ../shared/data/real (skipped when absent)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medforensics import errors
from medforensics.io import Image, check_header, iter_frames, read_header, read_image, read_stored

pytestmark = pytest.mark.real

DECODABLE = [
    "xray/canon_dx.dcm",
    "xray/fuji_cr_RG2_JLSL.dcm",
    "xray/fuji_irs_cr_RG3_J2KR.dcm",
    "xray/fujifilm_dx_thumbnail.dcm",
    "xray/ge_senographe_essential_mg.dcm",
    "xray/kodak_cr500_cr.dcm",
    "xray/philips_pcr_cr_RG1_JLSN.dcm",
    "xray/rentgenprom_proscan2000_dx.dcm",
    "xray/siemens_mammomat_inspiration_mg.dcm",
    "codecs/RG1_J2KI.dcm",
    "codecs/RG2_JLSN.dcm",
    "codecs/RG2_JPLL.dcm",
    "codecs/RG2_JPLY_fixed.dcm",
    "codecs/RG3_J2KI.dcm",
    "codecs/cr_modality_lut_sequence.dcm",
    "codecs/xa_96frame_jpeg_baseline.dcm",
]

BAD = {
    "bad/truncated_j2k_stream.dcm": errors.DecodeError,
    "bad/undecodable_jpeg_extended.dcm": errors.DecodeError,
    "bad/acr_nema_no_file_meta.dcm": errors.MissingFileMetaError,
    "bad/no_pixel_data.dcm": errors.NoPixelDataError,
    "bad/truncated_pixel_data_hologic.dcm": errors.TruncatedPixelDataError,
}

LOSSY = {
    "xray/philips_pcr_cr_RG1_JLSN.dcm": True,  # JPEG-LS near-lossless
    "codecs/RG2_JLSN.dcm": True,
    "codecs/RG2_JPLY_fixed.dcm": True,  # 12-bit JPEG extended
    "codecs/RG1_J2KI.dcm": True,  # lossy JPEG 2000
    "codecs/RG3_J2KI.dcm": True,
    "codecs/xa_96frame_jpeg_baseline.dcm": True,
    "codecs/RG2_JPLL.dcm": False,
    "xray/fuji_cr_RG2_JLSL.dcm": False,
    "xray/fuji_irs_cr_RG3_J2KR.dcm": False,
    "xray/canon_dx.dcm": False,
    "xray/fujifilm_dx_thumbnail.dcm": False,
}


@functools.lru_cache(maxsize=None)
def _decoded(path: str) -> Image:
    return read_image(path)


def _img(real_data: Path, name: str) -> Image:
    return _decoded(str(real_data / name))


@pytest.fixture(scope="module", autouse=True)
def _free_decoded():
    """Decoded images are shared by the tests of this module, then released."""
    yield
    _decoded.cache_clear()


@pytest.mark.parametrize("name", DECODABLE)
def test_real_files_decode(real_data, name):
    img = _img(real_data, name)
    meta = img.meta
    assert img.pixels.dtype == np.float32 and img.pixels.shape == (meta.rows, meta.cols)
    assert np.isfinite(img.pixels).all() and img.pixels.std() > 0
    assert meta.has_pixel_data and meta.format == "dicom"
    assert read_header(real_data / name).rows == meta.rows  # header-only path agrees
    check_header(read_header(real_data / name))


def test_mr_series_decode(real_data):
    files = sorted((real_data / "mr").rglob("*.dcm"))
    assert len(files) == 35
    for path in files:
        img = read_image(path)
        assert img.pixels.shape == (img.meta.rows, img.meta.cols) and img.pixels.max() > 0
        assert img.meta.modality == "MR" and img.meta.manufacturer.startswith("GE")


@pytest.mark.parametrize("name,error", sorted(BAD.items(), key=lambda kv: kv[0]))
def test_bad_files_give_their_error(real_data, name, error):
    with pytest.raises(error) as exc:
        read_image(real_data / name)
    assert exc.value.path == str(real_data / name)
    assert type(exc.value) is error  # the specific class, not a sibling


def test_bad_files_header_classification(real_data):
    """Ingest path: read_header + check_header classify without decoding."""
    meta = read_header(real_data / "bad/no_pixel_data.dcm")
    assert not meta.has_pixel_data and meta.rows == 32
    with pytest.raises(errors.NoPixelDataError):
        check_header(meta)
    meta = read_header(real_data / "bad/truncated_pixel_data_hologic.dcm")
    assert meta.manufacturer == "HOLOGIC, Inc." and meta.pixel_data_bytes < 2457 * 1890 * 2
    with pytest.raises(errors.TruncatedPixelDataError):
        check_header(meta)
    with pytest.raises(errors.MissingFileMetaError):
        read_header(real_data / "bad/acr_nema_no_file_meta.dcm")


def test_acr_nema_readable_with_force(real_data):
    img = read_image(real_data / "bad/acr_nema_no_file_meta.dcm", force=True)
    assert img.pixels.shape == (440, 440) and img.pixels.std() > 0
    assert img.meta.manufacturer.startswith("FUJI") and img.meta.photometric == "MONOCHROME1"
    assert img.meta.transfer_syntax == pydicom.uid.ImplicitVRLittleEndian


def test_same_acquisition_lossless_syntaxes_identical(real_data):
    jpeg_lossless = _img(real_data, "codecs/RG2_JPLL.dcm").pixels
    jpeg_ls = _img(real_data, "xray/fuji_cr_RG2_JLSL.dcm").pixels
    np.testing.assert_array_equal(jpeg_lossless, jpeg_ls)


def test_near_lossless_and_lossy_versions_close_but_different(real_data):
    ref = _img(real_data, "codecs/RG2_JPLL.dcm").pixels
    for name in ("codecs/RG2_JLSN.dcm", "codecs/RG2_JPLY_fixed.dcm"):
        other = _img(real_data, name).pixels
        diff = np.abs(other - ref)
        assert 0 < diff.mean() < 5, name
    j2kr = _img(real_data, "xray/fuji_irs_cr_RG3_J2KR.dcm").pixels
    j2ki = _img(real_data, "codecs/RG3_J2KI.dcm").pixels
    assert 0 < np.abs(j2ki - j2kr).mean() < 0.02 * float(j2kr.max() - j2kr.min())
    jlsn = _img(real_data, "xray/philips_pcr_cr_RG1_JLSN.dcm").pixels
    j2ki = _img(real_data, "codecs/RG1_J2KI.dcm").pixels
    assert 0 < np.abs(j2ki - jlsn).mean() < 0.02 * float(jlsn.max() - jlsn.min())


def test_modality_lut_sequence_applied(real_data):
    path = real_data / "codecs/cr_modality_lut_sequence.dcm"
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    item = ds.ModalityLUTSequence[0]
    n, first, _bits = item.LUTDescriptor
    lut = np.frombuffer(item.LUTData, dtype="<u2")[:n].astype(np.float64)
    assert not np.array_equal(lut, np.arange(n))  # a real, non-identity LUT
    stored = read_stored(path).pixels.astype(np.int64)
    mapped = lut[np.clip(stored - first, 0, n - 1)]
    inverted = mapped.min() + mapped.max() - mapped  # MONOCHROME1
    np.testing.assert_array_equal(_img(real_data, "codecs/cr_modality_lut_sequence.dcm").pixels,
                                  inverted.astype(np.float32))


def test_lossy_flags(real_data):
    for name, lossy in LOSSY.items():
        assert read_header(real_data / name).lossy is lossy, name


def test_monochrome1_inverted(real_data):
    """The Fujifilm DX is MONOCHROME1 with Rescale 1/0: pixels = min + max - stored."""
    path = real_data / "xray/fujifilm_dx_thumbnail.dcm"
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, 0.0)
    stored = read_stored(path).pixels.astype(np.float64)
    np.testing.assert_array_equal(read_image(path).pixels,
                                  (stored.min() + stored.max() - stored).astype(np.float32))


def test_charsets(real_data):
    meta = read_header(real_data / "xray/rentgenprom_proscan2000_dx.dcm")
    assert "Рентгенпром" in meta.manufacturer and "ПроСкан-2000" in meta.model
    assert meta.charset == "undeclared (guessed cp1251)"
    meta = read_header(real_data / "bad/no_pixel_data.dcm")
    assert meta.charset == "\\ISO 2022 IR 87" and meta.manufacturer == "Agfa-Gevaert AG"


def test_multiframe_xa(real_data):
    path = real_data / "codecs/xa_96frame_jpeg_baseline.dcm"
    assert read_header(path).n_frames == 96
    last = read_image(path, frame=95).pixels
    frames = [im.pixels for im in iter_frames(path)]
    assert len(frames) == 96
    first = _img(real_data, "codecs/xa_96frame_jpeg_baseline.dcm").pixels
    np.testing.assert_array_equal(frames[0], first)
    np.testing.assert_array_equal(frames[95], last)
    assert not np.array_equal(frames[0], frames[95])
    with pytest.raises(errors.ConfigError):
        read_image(path, frame=96)
