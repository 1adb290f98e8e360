"""DICOM SR and SEG results: read back with highdicom / pydicom, references, the SEG mask
equals the map, stable UIDs, the private codes documented, and dciodvfy finds no error."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

hd = pytest.importorskip("highdicom")

from medforensics.pacs import codes as C
from medforensics.pacs.common import Producer, write_dataset
from medforensics.pacs.errors import DicomBuildError
from medforensics.pacs.seg import build_seg, seg_mask
from medforensics.pacs.sr import build_report, report_summary

DOCS = Path(__file__).resolve().parents[1] / "docs" / "dicom.md"

IDENTIFY = {
    "verdict": "MISMATCH", "level": "model", "predicted": "Beta B1", "probability": 0.97,
    "message": 'MISMATCH: header claims model "Alpha A1", pixels say "Beta B1" (p=0.97)',
    "top": [{"label": "Beta B1", "probability": 0.97}, {"label": "Alpha A1",
                                                       "probability": 0.03}],
    "confident": True, "header_claim": "Alpha A1", "claim_class": "Alpha A1",
    "unknown_threshold": 0.6, "score": 0.97, "named_by": "classifier",
    "feature_distance": 3.5, "feature_threshold": 5.0, "named": "Beta B1", "unit": None,
    "distance_parts": {"network features": 1.25, "noise shape": 3.5},
    "unit_score": 12.5, "unit_claim": "Alpha A1 #7", "n_patches": 8,
    "run_integrity": "verified",
    "model": {"name": "patch", "run": "run1", "sha256": "ab" * 32, "run_integrity": "verified"},
}


def _forgery(rows: int, cols: int) -> dict:
    return {
        "path": "x.dcm", "status": "done", "score": 0.91, "verdict": "tampered",
        "inconclusive_reason": None, "covered_fraction": 0.97, "forged_area_percent": 4.2,
        "ela_score": None, "threshold": 0.6, "inconclusive_from": 0.4, "map_threshold": 0.5,
        "method": "cues", "cues": {"copymove": 0.91}, "notes": ["copy-move by blocks"],
        "regions": [
            {"bbox": [10, 20, 40, 50], "area_px": 900, "area_percent": 4.2, "mean_prob": 0.8,
             "max_prob": 0.9, "cue": "copymove",
             "copy_of": {"partner_bbox": [60, 70, 90, 100], "transform": "rot90",
                         "role": "pasted copy", "method": "blocks", "cue": "seam",
                         "evidence": "a paste seam on its border"}},
            {"bbox": [0, 0, 8, 8], "area_px": 64, "area_percent": 0.3, "mean_prob": 0.6,
             "max_prob": 0.6, "cue": "noise"},
        ],
        "copy_moves": [], "rows": rows, "cols": cols, "run_integrity": None,
        "model": {"name": "cues (training-free)"},
    }


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One simulated DICOM image, 96 x 128 (rows x columns: not square on purpose)."""
    from medforensics.synth.simulate import simulate_archive

    root = tmp_path_factory.mktemp("pacs_objects")
    paths = simulate_archive(root / "a", manufacturers=1, models_per_manufacturer=1,
                             units_per_model=1, patients=1, images_per_patient=1,
                             size=(96, 128), seed=5)
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    assert (ds.Rows, ds.Columns) != (ds.Columns, ds.Rows) or ds.Rows != ds.Columns
    return Path(paths[0])


def _map(ds: pydicom.Dataset) -> np.ndarray:
    rng = np.random.default_rng(0)
    m = rng.random((int(ds.Rows), int(ds.Columns))).astype(np.float32) * 0.3
    m[20:50, 10:40] = 0.8
    m[0, 0], m[-1, -1] = 0.0, 1.0
    return m


def _words(ds: pydicom.Dataset) -> set[str]:
    """Every text value and code meaning of an SR content tree."""
    out: set[str] = set()
    for item in ds.get("ContentSequence") or []:
        if "TextValue" in item:
            out.add(str(item.TextValue))
        for seq in ("ConceptNameCodeSequence", "ConceptCodeSequence"):
            if seq in item:
                out.add(str(item[seq][0].CodeMeaning))
        out |= _words(item)
    return out


def dciodvfy_errors(path: Path) -> list[str]:
    """The error lines dciodvfy prints for ``path`` (skips when dciodvfy is missing)."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy is not installed (Debian: apt-get install dicom3tools)")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60,
                          check=False)
    return [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]


def test_fractional_seg_references_the_image_and_holds_the_map(source: Path, tmp_path):
    src = pydicom.dcmread(source, stop_before_pixels=True)
    m = _map(src)
    seg = build_seg(source, m, model={"name": "cues"})
    path = write_dataset(seg, tmp_path / "seg.dcm")
    back = hd.seg.segread(path)
    assert back.SegmentationType == "FRACTIONAL"
    assert back.StudyInstanceUID == src.StudyInstanceUID
    assert back.PatientID == src.PatientID
    assert (back.Rows, back.Columns) == (src.Rows, src.Columns)
    ref = back.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == src.SeriesInstanceUID
    assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert [u[2] for u in back.get_source_image_uids()] == [src.SOPInstanceUID]
    got = seg_mask(pydicom.dcmread(path))
    assert got.shape == m.shape
    assert np.max(np.abs(got - m)) <= 0.5 / 255 + 1e-6
    via_hd = back.get_pixels_by_source_instance([src.SOPInstanceUID], segment_numbers=[1])
    np.testing.assert_allclose(via_hd[0, :, :, 0], got, atol=1e-6)
    seg_codes = back.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0]
    assert (seg_codes.CodeValue, seg_codes.CodingSchemeDesignator) == \
        (C.CODES["seg_type"][0], C.SCHEME)
    assert back.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == C.SCHEME
    assert dciodvfy_errors(path) == []


def test_binary_seg_is_the_forged_area_mask(source: Path, tmp_path):
    src = pydicom.dcmread(source, stop_before_pixels=True)
    m = _map(src)
    path = write_dataset(build_seg(src, m, kind="binary", threshold=0.5), tmp_path / "b.dcm")
    back = pydicom.dcmread(path)
    assert back.SegmentationType == "BINARY"
    np.testing.assert_array_equal(seg_mask(back), (m >= 0.5).astype(np.float32))
    assert dciodvfy_errors(path) == []


def test_empty_map_still_gives_one_frame(source: Path):
    src = pydicom.dcmread(source, stop_before_pixels=True)
    seg = build_seg(src, np.zeros((src.Rows, src.Columns), np.float32))
    assert int(seg.NumberOfFrames) == 1
    assert seg_mask(seg).max() == 0.0


def test_sr_holds_both_results_and_references(source: Path, tmp_path):
    src = pydicom.dcmread(source, stop_before_pixels=True)
    m = _map(src)
    seg = build_seg(src, m)
    sr = build_report(source, identify=IDENTIFY, forgery=_forgery(src.Rows, src.Columns),
                      seg=seg, producer=Producer(institution="Test Lab"))
    path = write_dataset(sr, tmp_path / "sr.dcm")
    back = hd.sr.ComprehensiveSR.from_dataset(pydicom.dcmread(path))
    assert back.StudyInstanceUID == src.StudyInstanceUID
    assert back.PatientName == src.PatientName
    assert back.SeriesInstanceUID != src.SeriesInstanceUID
    refs = {i.ReferencedSOPInstanceUID
            for s in back.CurrentRequestedProcedureEvidenceSequence
            for se in s.ReferencedSeriesSequence for i in se.ReferencedSOPSequence}
    assert refs == {src.SOPInstanceUID, seg.SOPInstanceUID}
    summary = report_summary(back)
    assert summary == {
        "source": (src.SOPClassUID, src.SOPInstanceUID),
        "identify_verdict": C.CODES["mismatch"][1], "named_device": "Beta B1",
        "forgery_verdict": C.CODES["tampered"][1], "forgery_score": pytest.approx(0.91),
        "forged_area_percent": pytest.approx(4.2), "seg": seg.SOPInstanceUID, "areas": 2,
    }
    text = _words(back)
    for needle in ("ab" * 32, "Alpha A1 #7", "rot90", "a paste seam on its border",
                   "Pasted copy", "Model weights SHA-256", "cues (training-free)",
                   "Noise shape distance", "Network features distance"):
        assert needle in text, needle
    # a flagged area's outline is a closed rectangle on the analysed image
    scoords = hd.sr.utils.find_content_items(back, value_type=hd.sr.ValueTypeValues.SCOORD,
                                             recursive=True)
    first = scoords[0]
    assert first.GraphicType == "POLYLINE"
    np.testing.assert_allclose(np.asarray(first.GraphicData).reshape(-1, 2)[[0, 2]],
                               [[10, 20], [40, 50]])
    img = first.ContentSequence[0].ReferencedSOPSequence[0]
    assert img.ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert dciodvfy_errors(path) == []


def test_unknown_device_and_missing_values(source: Path, tmp_path):
    res = {"verdict": "UNKNOWN", "message": "UNKNOWN: ...", "level": "model",
           "predicted": "Beta B1", "probability": 0.41, "top": [], "confident": False,
           "header_claim": None, "score": float("nan"), "named": None}
    sr = build_report(source, identify=res)
    s = report_summary(sr)
    assert s["identify_verdict"] == C.CODES["unknown"][1]
    assert s["named_device"] == "UNKNOWN"
    assert s["forgery_verdict"] is None and s["seg"] is None
    assert "Open-set score" not in _words(sr)  # NaN is left out, not written as a number
    assert dciodvfy_errors(write_dataset(sr, tmp_path / "u.dcm")) == []


def test_uids_are_stable_per_source_and_model(source: Path):
    src = pydicom.dcmread(source, stop_before_pixels=True)
    m = _map(src)
    a = build_report(source, identify=IDENTIFY)
    b = build_report(source, identify=IDENTIFY)
    assert a.SOPInstanceUID == b.SOPInstanceUID and a.SeriesInstanceUID == b.SeriesInstanceUID
    other = dict(IDENTIFY, model={**IDENTIFY["model"], "sha256": "cd" * 32})
    assert build_report(source, identify=other).SOPInstanceUID != a.SOPInstanceUID
    assert build_seg(src, m).SOPInstanceUID == build_seg(src, m).SOPInstanceUID
    assert build_seg(src, m).SOPInstanceUID != build_seg(src, m, kind="binary").SOPInstanceUID


def test_refusals(source: Path, tmp_path):
    src = pydicom.dcmread(source, stop_before_pixels=True)
    with pytest.raises(DicomBuildError, match="Rows x Columns"):
        build_seg(src, np.zeros((src.Columns, src.Rows), np.float32))
    with pytest.raises(DicomBuildError, match=r"\[0, 1\]"):
        build_seg(src, np.full((src.Rows, src.Columns), 2.0, np.float32))
    with pytest.raises(DicomBuildError, match="kind"):
        build_seg(src, _map(src), kind="labelmap")
    with pytest.raises(DicomBuildError, match="verdict"):
        build_report(src, identify={"verdict": "maybe"})
    with pytest.raises(DicomBuildError, match="nothing to report"):
        build_report(src)
    with pytest.raises(DicomBuildError, match="failed"):
        build_report(src, forgery={"status": "error", "reason": "decode-failed"})
    from medforensics.io import write_png16

    png = tmp_path / "x.png"
    write_png16(png, np.zeros((70, 70), np.uint16))
    with pytest.raises(DicomBuildError, match="PNG"):
        build_report(png, identify=IDENTIFY)
    no_uid = pydicom.dcmread(source, stop_before_pixels=True)
    del no_uid.SOPInstanceUID
    with pytest.raises(DicomBuildError, match="SOPInstanceUID"):
        build_report(no_uid, identify=IDENTIFY)


def test_every_private_code_is_documented():
    text = DOCS.read_text(encoding="utf-8")
    assert C.SCHEME in text
    for key, (value, meaning) in C.CODES.items():
        assert re.search(rf"\|\s*`?{value}`?\s*\|\s*{re.escape(meaning)}\s*\|", text), \
            f"{key} ({value} {meaning}) is not in docs/dicom.md"
        assert len(meaning) <= 64, key
    assert len({v for v, _ in C.CODES.values()}) == len(C.CODES)
    assert set(C.IDENTIFY_VERDICTS) == {"consistent", "MISMATCH", "UNKNOWN",
                                        "claim-not-in-model", "no-header-claim",
                                        "insufficient-evidence", "unreadable"}


def test_results_for_every_real_radiograph(real_data: Path, tmp_path: Path):
    """Real, de-identified files hold values highdicom refuses to copy (hashes where a date
    belongs): every readable one still gets an SR and a SEG that dciodvfy accepts."""
    from medforensics.pacs.results import dicom_results, write_dicom_results

    files = sorted((real_data / "xray").glob("*.dcm"))
    assert files
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        prob = np.zeros((ds.Rows, ds.Columns), np.float32)
        prob[: ds.Rows // 4, : ds.Columns // 4] = 0.9
        objects = dicom_results(f, identify=IDENTIFY, forgery=_forgery(ds.Rows, ds.Columns),
                                prob_map=prob)
        assert set(objects) == {"sr", "seg"}, f.name
        assert objects["seg"].StudyInstanceUID == ds.StudyInstanceUID
        assert np.array_equal(seg_mask(objects["seg"]) > 0.5, prob > 0.5), f.name
    paths = write_dicom_results(tmp_path, files[0], "both", identify=IDENTIFY,
                                forgery=_forgery(1, 1), prob_map=None)
    assert [Path(p).name.split("_")[-1] for p in paths] == ["sr.dcm"]
    assert dciodvfy_errors(Path(paths[0])) == []
