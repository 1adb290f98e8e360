"""The reader takes a ``pydicom.Dataset`` held in memory (what a DICOM receiver hands over)
under the same pixel contract and errors as a file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from medforensics.errors import MissingFileMetaError, NoPixelDataError, NotAnImageError
from medforensics.io import iter_frames, read_header, read_image, read_stored


@pytest.fixture(scope="module")
def dicom_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medforensics.synth.simulate import simulate_archive

    root = tmp_path_factory.mktemp("ds_input")
    paths = simulate_archive(root / "a", manufacturers=1, models_per_manufacturer=1,
                             units_per_model=1, patients=1, images_per_patient=1, size=96,
                             seed=3)
    return Path(paths[0])


def test_dataset_reads_like_the_file(dicom_file: Path) -> None:
    ds = pydicom.dcmread(dicom_file)
    want = read_image(dicom_file)
    got = read_image(ds)
    assert got.pixels.dtype == np.float32
    np.testing.assert_array_equal(got.pixels, want.pixels)
    assert got.meta.sop_uid == want.meta.sop_uid == ds.SOPInstanceUID
    assert got.meta.path == f"<dataset {ds.SOPInstanceUID}>"
    assert read_header(ds).rows == want.meta.rows
    np.testing.assert_array_equal(read_stored(ds).pixels, read_stored(dicom_file).pixels)
    np.testing.assert_array_equal(next(iter(iter_frames(ds))).pixels, want.pixels)


def test_dataset_is_not_changed(dicom_file: Path) -> None:
    ds = pydicom.dcmread(dicom_file)
    bare = Dataset()
    bare.update(ds)
    read_image(bare, force=True)
    assert not hasattr(bare, "file_meta")
    assert "PixelData" in bare


def test_network_style_dataset_without_file_meta(dicom_file: Path) -> None:
    """A data set decoded from a network stream knows its encoding but has no file meta."""
    ds = pydicom.dcmread(dicom_file)
    bare = Dataset()
    bare.update(ds)
    raw = io.BytesIO()
    pydicom.dcmwrite(raw, bare, implicit_vr=True, little_endian=True)
    raw.seek(0)
    received = pydicom.dcmread(raw, force=True)
    np.testing.assert_array_equal(read_image(received).pixels, read_image(dicom_file).pixels)


def test_dataset_without_transfer_syntax_needs_force(dicom_file: Path) -> None:
    ds = pydicom.dcmread(dicom_file)
    bare = Dataset()
    bare.update(ds)
    with pytest.raises(MissingFileMetaError, match="force=True") as info:
        read_image(bare)
    assert info.value.reason == "no-file-meta"
    np.testing.assert_array_equal(read_image(bare, force=True).pixels,
                                  read_image(dicom_file).pixels)


def test_dataset_errors_are_reader_errors(dicom_file: Path) -> None:
    header_only = pydicom.dcmread(dicom_file, stop_before_pixels=True)
    with pytest.raises(NoPixelDataError):
        read_image(header_only)
    sr = pydicom.dcmread(dicom_file, stop_before_pixels=True)
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    sr.file_meta.MediaStorageSOPClassUID = sr.SOPClassUID
    for kw in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
               "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
        delattr(sr, kw)
    with pytest.raises(NotAnImageError):
        read_image(sr)
