"""Tests for ELA (dsp.ela and forgery.ela)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from medforensics.dsp.ela import ela_enhance, ela_map, ela_score, jpeg_roundtrip
from medforensics.errors import InvalidArrayError
from medforensics.forgery.cues.ela import analyze_ela, ela_cnn_input, ela_cue, is_8bit, window_to_uint8


def _textured(rng: np.random.Generator, n: int = 256) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n]
    base = 128 + 60 * np.sin(xx / 23.0) * np.cos(yy / 31.0)
    return np.clip(base + rng.normal(0, 6, (n, n)), 0, 255)


def _as_jpeg(img: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8), mode="L").save(buf, format="JPEG", quality=q)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("L"))


def test_ela_low_on_jpeg_high_on_pasted_raw_patch() -> None:
    rng = np.random.default_rng(0)
    jpg = _as_jpeg(_textured(rng), 90)
    ela_clean = ela_map(jpg, 90)
    forged = jpg.copy()
    patch = np.clip(_textured(rng, 96) + rng.normal(0, 4, (96, 96)), 0, 255).astype(np.uint8)
    forged[80:176, 64:160] = patch
    ela_forged = ela_map(forged, 90)
    inside = ela_forged[80:176, 64:160].mean()
    outside_mask = np.ones_like(forged, bool)
    outside_mask[72:184, 56:168] = False
    outside = ela_forged[outside_mask].mean()
    # the re-saved JPEG barely changes, the uncompressed patch changes a lot
    assert inside > 3 * outside
    assert ela_score(ela_forged) > 1.5 * ela_score(ela_clean)
    # localisation via the enhanced image and the cue points at the patch
    cue = ela_cue(ela_forged)
    assert cue[96:160, 80:144].mean() > 0.8
    assert cue[outside_mask].mean() < 0.2


def test_ela_score_arithmetic_and_enhance() -> None:
    ela = np.zeros((10, 10), np.float32)
    ela[0, :5] = 51.0  # mean = 255 / 100 -> score exactly 1.0
    assert ela_score(ela) == pytest.approx(1.0)
    assert ela_score(np.full((4, 4), 255.0)) == pytest.approx(100.0)
    assert ela_score(np.zeros((4, 4))) == 0.0
    enh = ela_enhance(ela)
    assert enh.dtype == np.uint8 and enh.max() == 255 and enh[0, 0] == 255 and enh[5, 5] == 0
    half = np.array([[0.0, 10.0, 20.0]])
    assert ela_enhance(half).tolist() == [[0, 128, 255]]  # 10 * 255/20 = 127.5 -> rint 128
    assert ela_enhance(np.zeros((3, 3))).max() == 0


def test_jpeg_roundtrip_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        jpeg_roundtrip(np.zeros((8, 8), np.uint16))
    with pytest.raises(ValueError):
        jpeg_roundtrip(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError):
        jpeg_roundtrip(np.zeros((8, 8), np.uint8), quality=0)


def test_window_for_16bit_is_reported() -> None:
    rng = np.random.default_rng(1)
    px = (1000 + 3000 * rng.random((64, 64))).astype(np.float32)
    assert not is_8bit(px, 12)
    res = analyze_ela(px, bits_stored=12, quality=90)
    lo, hi = res.window
    assert lo == pytest.approx(np.percentile(px, 0.5))
    assert hi == pytest.approx(np.percentile(px, 99.5))
    assert "8-bit window" in res.note and "JPEG-domain heuristic" in res.note
    assert res.ela.shape == px.shape and res.ela.dtype == np.float32
    img8, lo2, hi2 = window_to_uint8(px, (1000.0, 4000.0))
    assert (lo2, hi2) == (1000.0, 4000.0)
    assert img8.dtype == np.uint8
    assert img8[px <= 1000].max(initial=0) == 0
    # 8-bit data is used as is
    res8 = analyze_ela(np.round(px / 16) % 256, bits_stored=8)
    assert res8.window is None and "stored 8-bit values" in res8.note
    # constant image does not divide by zero
    c8, lo3, hi3 = window_to_uint8(np.full((4, 4), 7.0))
    assert hi3 == lo3 + 1 and c8.max() == 0


def test_ela_cnn_input_shape_and_range() -> None:
    rng = np.random.default_rng(3)
    px = (1000 + 3000 * rng.random((200, 300))).astype(np.float32)
    x = ela_cnn_input(px, bits_stored=12)
    assert x.shape == (128, 128) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 255.0 and x.max() > 50
    assert ela_cnn_input(px, size=64).shape == (64, 64)


def _textured(seed: int, n: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    base = 120 + 60 * np.sin(xx / 23.0) * np.cos(yy / 31.0)
    return np.clip(base + rng.normal(0, 6, (n, n)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 1])
def test_jpeg_grid_found_with_its_offset_and_absent_without_jpeg(seed: int) -> None:
    from medforensics.dsp.ela import jpeg_grid

    img = _textured(seed)
    never = jpeg_grid(img)
    assert not never.detected and max(never.ratio) < 1.03
    dec = jpeg_roundtrip(img, 75)
    g = jpeg_grid(dec)
    assert g.detected and g.offset == (0, 0) and min(g.ratio) > 1.2
    # cropped by 3 rows / 5 columns: blocks now start at row 5, column 3
    gc = jpeg_grid(dec[3:, 5:])
    assert gc.detected and gc.offset == (5, 3)
    # any bit depth: the same image scaled to 12 bits keeps its grid
    assert jpeg_grid(dec.astype(np.float32) * 16).detected
    with pytest.raises(InvalidArrayError):
        jpeg_grid(np.zeros((8, 300)))


def test_lossy_codec_tells_jpeg_from_other_lossy_coding() -> None:
    from types import SimpleNamespace as M

    from medforensics.forgery.cues.ela import jpeg_history, lossy_codec

    img = _textured(0).astype(np.float32)
    dec = jpeg_roundtrip(_textured(0), 75).astype(np.float32)
    j2k = M(lossy=True, transfer_syntax="1.2.840.10008.1.2.4.91", format="dicom")
    jls = M(lossy=True, transfer_syntax="1.2.840.10008.1.2.4.81", format="dicom")
    base = M(lossy=True, transfer_syntax="1.2.840.10008.1.2.4.50", format="dicom")
    said = M(lossy=True, transfer_syntax="1.2.840.10008.1.2.1", format="dicom")
    assert lossy_codec(img, j2k) == ("other", None)
    assert lossy_codec(img, jls) == ("other", None)
    assert lossy_codec(img, base) == ("jpeg", None)
    assert lossy_codec(img, M(lossy=True, transfer_syntax="", format="jpeg"))[0] == "jpeg"
    # LossyImageCompression "01" over uncompressed pixels: the block grid decides
    assert lossy_codec(img, said)[0] == "other"
    assert lossy_codec(dec, said)[0] == "jpeg"
    # losslessly stored: None, or "jpeg" with a note when the grid is there
    assert lossy_codec(img, M(lossy=False)) == (None, None)
    codec, note = lossy_codec(dec, M(lossy=False))
    assert codec == "jpeg" and "8x8 block grid" in note
    assert jpeg_history(dec, M(lossy=False)) == (True, note)


def test_other_lossy_coding_gets_no_ela_and_no_noise_cue() -> None:
    from medforensics.forgery.localize import localize

    rng = np.random.default_rng(3)
    img = 1000 + 10 * rng.normal(size=(256, 256))
    img[64:128, 64:128] = 1000 + 2 * rng.normal(size=(64, 64))  # a quiet square
    img = np.round(img)
    as_jpeg = localize(img, lossy=True, lossy_codec="jpeg", cues=None)
    assert "ela" in as_jpeg.cues and as_jpeg.cues["noise"][80:112, 80:112].mean() > 0.5
    other = localize(img, lossy=True, lossy_codec="other", cues=None)
    assert "ela" not in other.cues and "noise" not in other.cues and "copymove" in other.cues
    assert sum("JPEG 2000" in n for n in other.notes) == 2
    # cues named explicitly still run
    forced = localize(img, lossy=True, lossy_codec="other", cues=["noise", "ela"])
    assert forced.cues["noise"][80:112, 80:112].mean() > 0.5 and "ela" in forced.cues
    # lossless inputs are not touched by the codec
    assert localize(img, lossy=False, lossy_codec="other").cues["noise"][80:112, 80:112].mean() \
        > 0.5
