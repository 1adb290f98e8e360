"""Case report: self-contained page, device/forgery sections, masking, provenance, determinism."""

from __future__ import annotations

import base64
import datetime as dt
import difflib
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image as PILImage
from typer.testing import CliRunner

from medforensics.cli import app
from medforensics.errors import ConfigError
from medforensics.report.analysis import analyse_case
from medforensics.report.batch import write_report
from medforensics.report.html import render_case_report
from medforensics.report.redaction import MASKED

T1 = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
T2 = dt.datetime(2025, 6, 7, 8, 9, 10, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def case_env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny simulated archive and a (random-weight, calibrated, enrolled) patch run."""
    from medforensics.data.manifest import ingest
    from medforensics.synth.simulate import simulate_archive
    from medforensics.data.splits import assign_splits
    from medforensics.models.io import save_model
    from medforensics.models.registry import create_model
    from medforensics.models.runfiles import record_files
    from medforensics.source.predictor import enroll_units

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("report")
    archive = root / "archive"
    paths = simulate_archive(archive, manufacturers=2, models_per_manufacturer=1,
                             units_per_model=1, patients=6, images_per_patient=2,
                             size=(96, 128), seed=3)
    rows = ingest([archive], label="model", workers=1, progress=False)
    assign_splits(rows, by="patient", test=0.0, val=0.3, stratify="model", seed=0)
    classes = sorted({r["model"] for r in rows if r["status"] == "eligible"})
    assert len(classes) == 2
    run = root / "run"
    save_model(run, create_model("patch", 2, patch=32),
               {"classes": classes, "label_column": "model", "seed": 0,
                "training_manifest_sha256": "ab" * 32})
    (run / "calibration.json").write_text(json.dumps(
        {"temperature": 1.0, "unknown_threshold": 0.5, "n_patches": 8}))
    record_files(run, ["calibration.json"])  # a hand-written side file joins the run manifest
    enroll_units(run, rows, progress=False)
    return {"root": root, "archive": archive, "paths": [Path(p) for p in paths], "run": run,
            "classes": classes}


@dataclass
class FakeResult:
    """A result following the ForgeryDetector.detect contract."""

    score: float
    verdict: str
    forged_area_percent: float
    ela_score: float
    prob_map: np.ndarray
    note: str = "fake detector for tests"
    regions: list = field(default_factory=list)


class FakeDetector:
    """Deterministic stand-in: flags a fixed square in the upper-left quarter."""

    def detect(self, pixels: np.ndarray, meta: object) -> FakeResult:
        h, w = pixels.shape
        pm = np.zeros((h, w), np.float32)
        pm[h // 8 : h // 2, w // 8 : w // 2] = 0.9
        area = 100.0 * float((pm > 0.5).mean())
        reg = {"bbox": [w // 8, h // 8, w // 2, h // 2], "area_percent": area, "mean_prob": 0.9,
               "cue": "copymove", "copy_of": {"partner_bbox": [0, 0, 10, 12],
                                              "transform": "rot90", "role": "pasted copy"}}
        return FakeResult(0.8125, "forged", area, 1.234, pm, regions=[reg])


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def _image(page: str, alt: str) -> np.ndarray:
    """The embedded PNG with this alt text, decoded."""
    found = re.findall(rf'alt="{re.escape(alt)}" src="data:image/png;base64,([^"]+)"', page)
    assert len(found) == 1, (alt, len(found))
    return np.asarray(PILImage.open(io.BytesIO(base64.b64decode(found[0]))))


def _text(page: str) -> str:
    """Visible-ish text (tags stripped, entities kept escaped) for searching numbers."""
    return re.sub(r"<[^>]+>", " ", page)


# ---------------------------------------------------------------------------------- content


def test_page_is_self_contained(case_env: dict) -> None:
    page = render_case_report(case_env["paths"][0], source=case_env["run"],
                              forgery=FakeDetector(), generated_at=T1)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    low = page.lower()
    for bad in ("<script", "<link", "http://", "https://", "url(", "@import", "<iframe"):
        assert bad not in low, bad
    # every src= is an embedded PNG, and they decode
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    imgs = [PILImage.open(io.BytesIO(b)) for b in _images(page)]
    # display rendering + (image, overlay, colour scale) in the forgery section
    assert len(imgs) == 4
    for im in imgs:
        assert im.format == "PNG" and max(im.size) <= 768
    assert _image(page, "forgery heat map").ndim == 3  # the overlay is coloured
    ramp = _image(page, "colour scale")
    assert ramp.shape == (10, 160, 3) and ramp[0, 0, 1] == 0 and ramp[0, -1, 1] == 255
    assert "Display rendering only" in page and "stored values windowed to 8 bits" in page


def test_display_window_is_stated_and_matches_the_data(case_env: dict) -> None:
    from medforensics.io import read_image

    path = case_env["paths"][1]
    case = analyse_case(path)
    px = read_image(path).pixels
    lo, hi = np.percentile(px.astype(np.float64), [0.5, 99.5])
    assert case.window == pytest.approx((lo, hi))
    page = render_case_report(path, generated_at=T1)
    assert f"[{lo:.6g}, {hi:.6g}]" in page
    disp = np.asarray(PILImage.open(io.BytesIO(_images(page)[0])))
    assert disp.shape == px.shape and disp.dtype == np.uint8 and disp.max() == 255


def test_device_section_agrees_with_identify(case_env: dict) -> None:
    from medforensics.source.predictor import SourcePredictor, identify_files

    path = case_env["paths"][2]
    predictor = SourcePredictor.from_run(case_env["run"])
    v, extra = next(iter(identify_files(predictor, [path])))
    case = analyse_case(path, source=predictor)
    dev = case.device
    assert dev["verdict"] == v.verdict and dev["predicted"] == v.predicted
    assert dev["probability"] == pytest.approx(v.probability)
    assert [lab for lab, _ in dev["top"]] == [lab for lab, _ in v.top]
    assert dev["header_claim"] == v.header_claim and v.header_claim in case_env["classes"]
    assert dev["unit"] == extra["unit"] and dev["unit_claim"] == extra["unit_claim"]
    page = render_case_report(path, source=predictor, generated_at=T1)
    text = _text(page)
    assert v.verdict in text and v.predicted in text
    assert f"{v.probability:.3f}" in text
    assert "no forgery model given" in text
    assert "Acquisition unit (reference patterns)" in text


def test_no_models_given(case_env: dict) -> None:
    page = render_case_report(case_env["paths"][0], generated_at=T1)
    text = _text(page)
    assert "no source model given" in text and "no forgery model given" in text
    assert len(_images(page)) == 1


def test_forgery_section(case_env: dict) -> None:
    det = FakeDetector()
    path = case_env["paths"][0]
    case = analyse_case(path, forgery=det)
    fg = case.forgery
    assert fg["status"] == "done" and fg["verdict"] == "forged"
    assert fg["score"] == pytest.approx(0.8125) and fg["ela_score"] == pytest.approx(1.234)
    assert fg["details"] == {"note": "fake detector for tests"}
    assert fg["regions"][0]["copy_of"]["transform"] == "rot90"
    page = render_case_report(path, forgery=det, generated_at=T1)
    text = _text(page)
    assert "0.812" in text and "1.23" in text and f"{fg['forged_area_percent']:.2f} %" in text
    assert "Flagged areas" in text and "partner (0, 0)-(10, 12); this area: pasted copy, rot90" in text
    overlay = _image(page, "forgery heat map").astype(int)
    grey = _image(page, "display rendering").astype(int)
    h, w = grey.shape
    # inside the flagged square the overlay is tinted (red > green/blue); outside it is grey
    # (sampled off the diagonal, where the copy-move arrow from the partner is drawn)
    inside = overlay[3 * h // 8, w // 5]
    outside = overlay[3 * h // 4, 3 * w // 4]
    assert inside[0] > inside[2] + 40
    assert abs(int(outside[0]) - int(outside[2])) <= 1
    assert abs(int(outside[0]) - grey[3 * h // 4, 3 * w // 4]) <= 1


class _PairsDetector:
    """Stand-in returning a result with copy-move pairs."""

    def __init__(self, pairs: list) -> None:
        self.pairs = pairs

    def detect(self, pixels: np.ndarray, meta: object) -> object:
        from medforensics.forgery.detector import ForgeryResult

        return ForgeryResult(
            score=0.9, verdict="tampered", forged_area_percent=1.0, ela_score=0.7,
            threshold=0.5, inconclusive_from=0.4, map_threshold=0.5, method="cues",
            prob_map=np.zeros(pixels.shape, np.float32), copy_moves=self.pairs)


class _VerdictDetector:
    """Stand-in returning a fixed verdict (and, for inconclusive, a reason and no ELA)."""

    def __init__(self, verdict: str) -> None:
        self.verdict = verdict

    def detect(self, pixels: np.ndarray, meta: object) -> object:
        from medforensics.forgery.detector import ForgeryResult

        inc = self.verdict == "inconclusive"
        return ForgeryResult(
            score=0.1, verdict=self.verdict, forged_area_percent=0.0,
            ela_score=None if inc else 0.7, threshold=0.5, inconclusive_from=0.4,
            map_threshold=0.5, method="cues", prob_map=np.zeros(pixels.shape, np.float32),
            inconclusive_reason="nothing to read: only 1.0 % of the image" if inc else None,
            covered_fraction=0.01 if inc else 0.95)


def test_inconclusive_looks_different_from_authentic(case_env: dict) -> None:
    """Different label and colour; the reason is shown; no ELA number where ELA did not run."""
    path = case_env["paths"][0]
    inc = render_case_report(path, forgery=_VerdictDetector("inconclusive"), generated_at=T1)
    ok = render_case_report(path, forgery=_VerdictDetector("authentic"), generated_at=T1)
    assert '<span class="badge warn">inconclusive</span>' in inc
    assert '<span class="badge ok">authentic</span>' in ok
    assert "badge ok" not in inc.split('id="forgery"')[1]
    assert "nothing to read: only 1.0 % of the image" in _text(inc)
    assert "not run (ELA does not apply" in _text(inc)
    assert "not run (ELA does not apply" not in _text(ok) and "0.70" in _text(ok)
    assert "1.0 % of the image carries measurable noise" in _text(inc)


def test_copy_move_pairs_with_direction(case_env: dict) -> None:
    path = case_env["paths"][0]
    pairs = [{"bbox_a": [1, 2, 30, 40], "bbox_b": [50, 60, 79, 98], "transform": "identity",
              "direction": "undetermined", "pasted_bbox": None, "source_bbox": None,
              "evidence": "no evidence tells the two areas apart"},
             {"bbox_a": [1, 2, 30, 40], "bbox_b": [50, 60, 79, 98], "transform": "rot90",
              "direction": "a->b", "pasted_bbox": [50, 60, 79, 98], "source_bbox": [1, 2, 30, 40],
              "evidence": "hard step along the border of the pasted area"}]
    page = render_case_report(path, forgery=_PairsDetector(pairs), generated_at=T1)
    text = " ".join(_text(page).split())
    assert "Copy-moves" in text
    assert ("undetermined : the two areas hold the same content, (1, 2)-(30, 40) and "
            "(50, 60)-(79, 98); which one was pasted is not known") in text
    assert "pasted at (50, 60)-(79, 98) , copied from (1, 2)-(30, 40)" in text
    assert "hard step along the border" in text


def test_real_forgery_detector_if_present(case_env: dict) -> None:
    detector_mod = pytest.importorskip("medforensics.forgery.detector")
    from medforensics.io import read_image

    path = case_env["paths"][0]
    det = detector_mod.ForgeryDetector.from_run(None)
    res = det.detect(*read_image(path))
    case = analyse_case(path, forgery="cues")  # the training-free detector, by name
    fg = case.forgery
    assert fg["verdict"] == res.verdict and fg["score"] == pytest.approx(res.score)
    assert fg["forged_area_percent"] == pytest.approx(res.forged_area_percent)
    assert fg["cues"] == pytest.approx(res.cues) and fg["notes"] == list(res.notes)
    prov = case.provenance["forgery_model"]
    assert prov["detector"] == "ForgeryDetector" and prov["run"] is None
    assert prov["parameters"]["method"] == "cues"
    page = render_case_report(path, forgery=det, generated_at=T1)
    assert "no forgery model given" not in page and "Cue scores" in page
    assert _image(page, "forgery heat map").shape[:2] == _image(page, "display rendering").shape


# ---------------------------------------------------------------------------------- masking


def test_identifiers_masked_by_default(case_env: dict) -> None:
    path = case_env["paths"][0]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    secrets = [str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.AccessionNumber,
               ds.InstitutionName, ds.StudyInstanceUID, ds.SOPInstanceUID, ds.StudyDate]
    assert all(secrets)
    page = render_case_report(path, source=case_env["run"], forgery=FakeDetector(),
                              generated_at=T1)
    for s in secrets:
        assert s not in page, s
    assert str(path) not in page and path.name not in page.split("sha256")[0]
    assert page.count(f'<span class="masked">{MASKED}</span>') >= 8
    assert "identifying field(s) masked" in page
    # device fields are not identifiers: they stay
    assert ds.Manufacturer in page and ds.ManufacturerModelName in page

    shown = render_case_report(path, source=case_env["run"], mask_identifiers=False,
                               generated_at=T1)
    for s in secrets:
        assert s in shown, s
    assert str(path) in shown and "This page shows patient identifiers" in shown


def test_unreadable_message_does_not_leak_the_path(case_env: dict, tmp_path: Path) -> None:
    # a folder named like a patient, holding a truncated file
    folder = tmp_path / "DOE^JANE_12345"
    folder.mkdir()
    bad = folder / "x.dcm"
    data = case_env["paths"][0].read_bytes()
    bad.write_bytes(data[: len(data) - 500])
    page = render_case_report(bad, generated_at=T1)
    assert "truncated-pixel-data" in page and "could not be read" in page
    assert "DOE^JANE" not in page and "12345" not in page
    assert "Header" in page and "Rows" in page  # the header is still summarised


# ---------------------------------------------------------------------------------- provenance


def test_provenance(case_env: dict) -> None:
    from medforensics import __version__

    path, run = case_env["paths"][3], case_env["run"]
    case = analyse_case(path, source=run)
    prov = case.provenance
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert prov["input"]["sha256"] == sha and prov["input"]["path"] == MASKED
    files = prov["source_model"]["files"]
    for name in ("model.json", "model.safetensors", "calibration.json"):
        assert files[name] == hashlib.sha256((run / name).read_bytes()).hexdigest()
    assert any(k.startswith("fingerprints/") for k in files)
    model = prov["source_model"]["model"]
    meta = json.loads((run / "model.json").read_text())
    assert model["weights_sha256"] == meta["weights_sha256"] == files["model.safetensors"]
    assert model["weights_match_model_json"] is True
    assert model["training_manifest_sha256"] == "ab" * 32 and model["name"] == "patch"
    assert prov["software"]["medforensics"] == __version__
    assert prov["parameters"]["source"]["n_patches"] == 8
    assert prov["forgery_model"] is None
    page = render_case_report(path, source=run, generated_at=T1)
    for value in (sha, files["model.json"], files["calibration.json"], "ab" * 32, __version__):
        assert value in page
    assert "2024-01-02T03:04:05+00:00" in page


def test_rerender_differs_only_in_the_timestamp(case_env: dict) -> None:
    path = case_env["paths"][4]
    a = render_case_report(path, source=case_env["run"], forgery=FakeDetector(),
                           generated_at=T1)
    b = render_case_report(path, source=case_env["run"], forgery=FakeDetector(),
                           generated_at=T2)
    diff = [ln for ln in difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    assert len(diff) == 2, diff
    assert all('class="generated"' in ln for ln in diff)
    # default time stamp (now): only that line may differ
    c = render_case_report(path, source=case_env["run"], forgery=FakeDetector())
    changed = [x for x, y in zip(a.splitlines(), c.splitlines()) if x != y]
    assert len(a.splitlines()) == len(c.splitlines())
    assert all('class="generated"' in ln for ln in changed)
    assert render_case_report(path, source=case_env["run"], forgery=FakeDetector(),
                              generated_at=T1) == a


# ---------------------------------------------------------------------------------- inputs


def test_png_input(tmp_path: Path) -> None:
    from medforensics.io import write_png16

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 4096, size=(64, 80)).astype(np.uint16)
    p = tmp_path / "scan.png"
    write_png16(p, arr)
    page = render_case_report(p, generated_at=T1)
    assert "PNG" in page and "no DICOM header" in page and "identifying field" not in page
    assert np.asarray(PILImage.open(io.BytesIO(_images(page)[0]))).shape == (64, 80)


def test_write_report_batch(case_env: dict, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for p in case_env["paths"][:3]:
        (src / f"{p.parent.parent.name}_{p.name}").write_bytes(p.read_bytes())
    (src / "zero.dcm").write_bytes(b"")
    out = tmp_path / "out"
    res = write_report([src], out, source=case_env["run"], forgery=FakeDetector(),
                       generated_at=T1)
    assert len(res.pages) == 4 and res.index == out / "index.html"
    assert res.n_unreadable == 1 and res.n_failed == 0
    index = res.index.read_text()
    links = re.findall(r'href="([^"]+)"', index)
    assert sorted(links) == sorted(p.name for p in res.pages)
    assert all((out / link).is_file() for link in links)
    assert "not-an-image-file" in index
    for p in case_env["paths"][:3]:
        assert p.parent.parent.name not in index  # file names (patient folders) masked
    verdicts = [v["device_verdict"] for v in res.verdicts]
    assert verdicts.count("unreadable") == 1
    # each verdict carries its image's UIDs (to join with a PACS); the empty file has none
    import pydicom

    by_uid = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
              for p in case_env["paths"][:3]}
    got = {v["SOPInstanceUID"] for v in res.verdicts if v["device_verdict"] != "unreadable"}
    assert got == by_uid and all(v["frame"] == 0 for v in res.verdicts)
    assert [v["StudyInstanceUID"] for v in res.verdicts
            if v["device_verdict"] == "unreadable"] == [None]
    # re-running into the same folder replaces the previous report
    res2 = write_report([src], out, generated_at=T1)
    assert sorted(out.iterdir()) == sorted(res2.pages + [res2.index])
    # a foreign non-empty folder is refused; a .html output takes exactly one file
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        write_report([src], tmp_path / "other")
    with pytest.raises(ConfigError, match="one page"):
        write_report([src], tmp_path / "r.html")
    with pytest.raises(ConfigError, match="no such file"):
        write_report([tmp_path / "missing"], tmp_path / "r2")
    single = write_report([case_env["paths"][0]], tmp_path / "one.html", generated_at=T1)
    assert single.index is None and single.pages == [tmp_path / "one.html"]


def test_cli_report(case_env: dict, tmp_path: Path) -> None:
    path = case_env["paths"][5]
    out = tmp_path / "r"
    res = CliRunner().invoke(app, ["report", str(path), "--source-model", str(case_env["run"]),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote 1 case page(s)" in res.output and (out / "index.html").is_file()
    page = next(out.glob("case-*.html")).read_text()
    assert str(path) not in page
    res = CliRunner().invoke(app, ["report", str(path), "--out", str(tmp_path / "p.html"),
                                   "--show-identifiers"])
    assert res.exit_code == 0, res.output
    assert str(path) in (tmp_path / "p.html").read_text()
    res = CliRunner().invoke(app, ["report", str(path), "--source-model",
                                   str(tmp_path / "nope"), "--out", str(tmp_path / "q")])
    assert res.exit_code == 3 and "error" in res.output  # a refused (missing) model
