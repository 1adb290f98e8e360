"""The command line's user contract: exit codes, JSON result schemas, progress, version.

Exit codes (docs/design.md, "Results"): 0 every input analysed; 1 some input could not be
analysed; 2 usage error; 3 a refused run or model. ``identify`` and ``forgery detect`` print
one JSON line per file with the same image reference (path, frame, DICOM UIDs) and the same
error shape, and the web service answers exactly that line for the same image.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from _helpers import one_torch_thread  # noqa: F401
from fastapi.testclient import TestClient
from fixtures_service import ServiceArchive, service_archive, source_run  # noqa: F401
from typer.testing import CliRunner

from medforensics import __version__
from medforensics.cli import app
from medforensics.forgery.schema import ForgeryRecord, validate_forgery_line
from medforensics.io import write_png16
from medforensics.source.schema import (
    ErrorRecord,
    IdentifyRecord,
    validate_identify_line,
)

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
UIDS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")


def _run(args: list[str]) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def _lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def dicom(service_archive: ServiceArchive) -> Path:
    return next(Path(r["path"]) for r in service_archive.rows if r.get("split") == "test")


@pytest.fixture(scope="module")
def png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A textured 16-bit PNG (no DICOM header: null UIDs)."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("png") / "img.png"
    write_png16(path, np.rint(2000 + rng.normal(0, 40, (160, 192))).astype(np.uint16))
    return path


@pytest.fixture(scope="module")
def tampered_run(source_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the source run whose calibration changed after it was written."""
    run = tmp_path_factory.mktemp("tampered") / "run"
    shutil.copytree(source_run, run)
    cal = run / "calibration.json"
    cal.write_text(cal.read_text() + " ")
    return run


@pytest.fixture(scope="module")
def forgery_like_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that says it is a forgery run (only its kind is read before refusing it)."""
    run = tmp_path_factory.mktemp("forgery") / "run"
    run.mkdir()
    (run / "model.json").write_text(json.dumps({"preset": "cues"}))
    return run


# ---------------------------------------------------------------------- version, logging
def test_version() -> None:
    res = _run(["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"medforensics {__version__}"


def test_logging_levels(png: Path) -> None:
    for flags, level in (([], logging.WARNING), (["-v"], logging.INFO),
                         (["-vv"], logging.DEBUG)):
        assert _run([*flags, "forgery", "detect", "cues", png]).exit_code == 0
        assert logging.getLogger("medforensics").level == level
        assert logging.getLogger().level == logging.WARNING  # other libraries stay quiet


# ---------------------------------------------------------------------- exit codes
def test_identify_exit_codes(source_run: Path, dicom: Path, png: Path,
                             tampered_run: Path, forgery_like_run: Path) -> None:
    assert _run(["identify", source_run, dicom, png]).exit_code == EXIT_OK
    res = _run(["identify", source_run, dicom, dicom.parent / "missing.dcm"])
    assert res.exit_code == EXIT_PARTIAL and "1 of 2 file(s) could not be analysed" in res.output
    assert _run(["identify", source_run, dicom, "--patches", "many"]).exit_code == EXIT_USAGE
    assert _run(["identify", source_run]).exit_code == EXIT_USAGE
    res = _run(["identify", tampered_run, dicom])
    assert res.exit_code == EXIT_REFUSED and "calibration.json" in res.output
    res = _run(["identify", forgery_like_run, dicom])
    assert res.exit_code == EXIT_REFUSED and "is a forgery run" in res.output


def test_forgery_detect_exit_codes(source_run: Path, dicom: Path, png: Path,
                                   tampered_run: Path, tmp_path: Path) -> None:
    assert _run(["forgery", "detect", "cues", dicom, png]).exit_code == EXIT_OK
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not an image")
    res = _run(["forgery", "detect", "cues", png, junk])
    assert res.exit_code == EXIT_PARTIAL and "not analysed (not-an-image-file)" in res.output
    assert _run(["forgery", "detect", "cues", png, "--ela", "sometimes"]).exit_code == EXIT_USAGE
    assert _run(["forgery", "detect", "cues", png, "--bogus"]).exit_code == EXIT_USAGE
    res = _run(["forgery", "detect", "cues", png, "--source-model", tampered_run])
    assert res.exit_code == EXIT_REFUSED and "calibration.json" in res.output
    res = _run(["forgery", "detect", source_run, png])
    assert res.exit_code == EXIT_REFUSED
    assert "is a source-identification run" in res.output and "'cues'" in res.output


def test_old_name_of_the_training_free_detector_still_works(png: Path) -> None:
    res = _run(["forgery", "detect", "none", png, "--json"])
    assert res.exit_code == EXIT_OK and "now reads 'cues'" in res.output
    assert _lines(res.output)[0]["method"] == "cues"


def test_report_exit_codes(source_run: Path, png: Path, tmp_path: Path,
                           tampered_run: Path) -> None:
    ok = _run(["report", png, "--out", tmp_path / "a.html", "--forgery-model", "cues"])
    assert ok.exit_code == EXIT_OK, ok.output
    res = _run(["report", png, tmp_path / "missing.png", "--out", tmp_path / "b"])
    assert res.exit_code == EXIT_PARTIAL and "missing.png" in res.output
    assert (tmp_path / "b" / "index.html").is_file()  # the readable file still has its page
    res = _run(["report", png, "--out", tmp_path / "c.html", "--source-model", tampered_run])
    assert res.exit_code == EXIT_REFUSED


def test_export_needs_out(source_run: Path) -> None:
    res = _run(["export", source_run])
    assert res.exit_code == EXIT_USAGE and "--out" in res.output


# ---------------------------------------------------------------------- JSON schema
def test_identify_json_lines_follow_the_schema(source_run: Path, dicom: Path,
                                               png: Path) -> None:
    missing = dicom.parent / "missing.dcm"
    res = _run(["identify", source_run, dicom, png, missing, "--json"])
    assert res.exit_code == EXIT_PARTIAL
    good, flat, bad = _lines(res.output)
    assert isinstance(validate_identify_line(good), IdentifyRecord)
    assert isinstance(validate_identify_line(flat), IdentifyRecord)
    assert isinstance(validate_identify_line(bad), ErrorRecord)
    assert list(good)[:6] == ["status", "path", "frame", *UIDS]
    ds = pydicom.dcmread(dicom, stop_before_pixels=True)
    assert (good["SOPInstanceUID"], good["SeriesInstanceUID"], good["StudyInstanceUID"]) == (
        ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID)
    assert good["status"] == "done" and good["frame"] == 0 and good["path"] == str(dicom)
    assert all(flat[k] is None for k in UIDS)  # PNG: no DICOM identifiers
    assert set(bad) == set(ErrorRecord.model_fields)
    assert bad["status"] == "error" and bad["reason"] == "file-access" and "verdict" not in bad


def test_forgery_json_lines_follow_the_schema(dicom: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "cut.dcm"
    truncated.write_bytes(dicom.read_bytes()[:-2000])
    res = _run(["forgery", "detect", "cues", dicom, truncated, "--json"])
    assert res.exit_code == EXIT_PARTIAL
    good, bad = _lines(res.output)
    assert isinstance(validate_forgery_line(good), ForgeryRecord)
    assert isinstance(validate_forgery_line(bad), ErrorRecord)
    ds = pydicom.dcmread(dicom, stop_before_pixels=True)
    assert good["SOPInstanceUID"] == ds.SOPInstanceUID and "files" not in good
    # The header of a file whose pixels are cut short still names the image.
    assert bad["reason"] == "truncated-pixel-data" and bad["SOPInstanceUID"] == ds.SOPInstanceUID
    assert set(bad) == set(ErrorRecord.model_fields)


def test_identify_and_forgery_share_one_error_shape(source_run: Path,
                                                    tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG but not really")
    a = _lines(_run(["identify", source_run, junk, "--json"]).output)[0]
    b = _lines(_run(["forgery", "detect", "cues", junk, "--json"]).output)[0]
    assert a == b


# ---------------------------------------------------------------------- service = --json
def test_service_returns_the_json_line(source_run: Path, dicom: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from medforensics.service.app import create_app

    shutil.copy(dicom, tmp_path / "x.dcm")
    monkeypatch.chdir(tmp_path)
    ident = _lines(_run(["identify", source_run, "x.dcm", "--json"]).output)[0]
    forg = _lines(_run(["forgery", "detect", "cues", "x.dcm", "--json"]).output)[0]
    with TestClient(create_app(source_run, "cues")) as client:
        files = {"file": ("x.dcm", dicom.read_bytes(), "application/dicom")}
        served_id = client.post("/v1/identify", files=files).json()
        served_fg = client.post("/v1/forgery", files=files).json()
    assert served_fg.pop("overlay_png_b64")
    assert served_id == ident
    assert served_fg == forg


# ---------------------------------------------------------------------- progress, workflow
def test_no_progress_bar_when_not_a_terminal(source_run: Path,
                                             service_archive: ServiceArchive) -> None:
    res = _run(["identify", source_run, service_archive.root])
    assert res.exit_code == EXIT_OK, res.output  # devices.json is not taken for an image
    for frame in ("\r", "\x1b[", "━", "files/s"):
        assert frame not in res.output


def test_redirected_progress_is_a_line_every_n_files(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    from medforensics.cli import _common

    monkeypatch.setattr(_common, "PROGRESS_EVERY", 2)
    assert list(_common.files_progress(range(5), 5, "identify", None)) == list(range(5))
    err = capsys.readouterr().err
    assert [line.split(" (")[0] for line in err.splitlines()] == [
        "identify: 2/5 files", "identify: 4/5 files", "identify: 5/5 files"]
    assert "\r" not in err and "\x1b[" not in err
    list(_common.files_progress(range(5), 5, "identify", False))
    assert capsys.readouterr().err == ""


def test_split_refuses_to_overwrite_and_warns_about_small_splits(
        service_archive: ServiceArchive, tmp_path: Path) -> None:
    from medforensics.data.manifest import write_manifest

    manifest = tmp_path / "m.csv"
    write_manifest([{k: v for k, v in r.items() if k != "split"}
                    for r in service_archive.rows], manifest)
    first = _run(["split", manifest, "--val", "0.2"])
    assert first.exit_code == EXIT_OK, first.output
    assert "warning: the val split has" in first.output and "needs at least 39" in first.output
    again = _run(["split", manifest, "--seed", "1"])
    assert again.exit_code == EXIT_USAGE and "already has splits" in again.output
    assert "--force" in again.output
    assert _run(["split", manifest, "--seed", "1", "--force"]).exit_code == EXIT_OK
    no_test = _run(["split", manifest, "--test", "0", "--force"])
    assert "the test split is empty" in no_test.output


def test_calibrate_says_the_run_is_already_calibrated(
        service_archive: ServiceArchive, tmp_path: Path) -> None:
    from medforensics.data.manifest import write_manifest

    run = tmp_path / "run"
    shutil.copytree(service_archive.run, run)
    manifest = tmp_path / "m.csv"
    write_manifest(service_archive.rows, manifest)
    res = _run(["calibrate", run, "--manifest", manifest, "--no-units", "--noise-shape"])
    assert res.exit_code == EXIT_OK, res.output
    assert "already calibrated (train calibrates after training)" in res.output
    assert json.loads((run / "calibration.json").read_text())["openset_blocks"] == [
        "network features", "noise shape"]
    res = _run(["calibrate", run, "--manifest", manifest, "--no-units", "--no-noise-shape"])
    assert res.exit_code == EXIT_OK, res.output
    assert json.loads((run / "calibration.json").read_text())["openset_blocks"] == [
        "network features"]
