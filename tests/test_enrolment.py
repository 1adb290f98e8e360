"""The documented enrolment path ("Enrolling your own devices", docs/openset.md), end to end.

simulate -> ingest -> split -> train -> calibrate (enrols units) -> identify --json, all
through the command line. The archive is far too small for the classifier's open-set
threshold (fewer than 39 validation images), so the classifier alone names nothing: an
image is named only when an enrolled unit's reference pattern matches. An image of a unit
that was never enrolled (its model is known) must then come out unnamed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _helpers import one_torch_thread  # noqa: F401

from medforensics.cli import app

#: Simulator unit id of the unit kept out of everything but the final identify.
HELD_OUT = "1.0.1"
SIM = ["--manufacturers", "2", "--models-per-manufacturer", "1", "--units-per-model", "2",
       "--patients", "16", "--images-per-patient", "1", "--size", "192-224", "--seed", "3",
       "--multi-device-fraction", "0", "--no-progress"]


def _ok(args: list[str]) -> str:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run trained, calibrated and enrolled through the CLI, plus the held-out unit's files."""
    root = tmp_path_factory.mktemp("enrolment")
    archive, other = root / "archive", root / "heldout"
    # the user's archive: 2 models x 2 units, one unit of the second model not in it
    _ok(["simulate", str(archive), *SIM, "--exclude", HELD_OUT])
    # the same simulated devices (same seed): only the held-out unit's patients
    _ok(["simulate", str(other), *SIM, "--include", HELD_OUT])
    manifest = root / "manifest.csv"
    _ok(["ingest", str(archive), "--out", str(manifest), "--workers", "1", "--no-progress"])
    _ok(["split", str(manifest), "--by", "patient", "--val", "0.25", "--test", "0.25",
         "--seed", "0"])
    run = root / "run"
    _ok(["train", str(manifest), "--out", str(run), "--epochs", "1", "--patch", "32",
         "--patches-per-image", "16", "--batch-size", "32", "--no-calibrate", "--no-progress"])
    out = _ok(["calibrate", str(run), "--manifest", str(manifest)])
    assert "enrolled" in out
    return {"manifest": manifest, "run": run, "heldout": other}


def _identify(run: Path, paths: list[str]) -> list[dict]:
    out = _ok(["identify", str(run), *paths, "--json", "--no-progress"])
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_calibration_says_the_classifier_cannot_name(enrolled: dict[str, Path]) -> None:
    cal = json.loads((enrolled["run"] / "calibration.json").read_text())
    assert cal["n_val_images"] < 39
    assert cal["feature_threshold"] is None
    assert "39 needed" in cal["threshold_note"]
    assert cal["require_unit_match"] is True


def test_enrolled_unit_named_unenrolled_unit_not(enrolled: dict[str, Path]) -> None:
    from medforensics.data.manifest import read_manifest

    units = {u["unit"] for u in json.loads(
        (enrolled["run"] / "fingerprints" / "fingerprints.json").read_text())["units"]}
    rows = [r for r in read_manifest(enrolled["manifest"]) if r["status"] == "eligible"]
    assert len(units) == 3 and {r["unit"] for r in rows} == units
    # test-split images (patients never seen in training) of enrolled units
    test = [r for r in rows if r["split"] == "test" and r["unit"] in units]
    assert test
    known = _identify(enrolled["run"], [r["path"] for r in test])
    assert len(known) == len(test)
    for v, r in zip(known, test):
        assert v["confident"] is True, v["message"]
        assert v["named_by"] == "unit-pattern"
        assert v["named"] == r["model"] and v["unit"] == r["unit"]
        assert v["verdict"] == "consistent"
        # the compared pixels are named: a window inside the image, at most 1024 px a side
        r0, c0, h, w = v["unit_window"]
        assert r0 >= 0 and c0 >= 0 and 32 <= h <= 1024 and 32 <= w <= 1024
    # the never-enrolled unit: its model is known, but nothing may be named
    files = sorted(str(p) for p in enrolled["heldout"].rglob("*.dcm"))
    assert files
    unseen = _identify(enrolled["run"], files)
    assert len(unseen) == len(files)
    for v in unseen:
        assert v["confident"] is False and v["named"] is None, v["message"]
        assert v["verdict"] in ("UNKNOWN", "insufficient-evidence")
        assert v["unit"] is None
    assert any(v["verdict"] == "UNKNOWN" for v in unseen)


def test_enrolling_the_new_unit_makes_it_named(enrolled: dict[str, Path], tmp_path: Path) -> None:
    """The documented way to add a unit of a known model: enrol it, no retraining."""
    import shutil

    from medforensics.data.manifest import read_manifest, write_manifest

    run = tmp_path / "run"
    shutil.copytree(enrolled["run"], run)
    new = tmp_path / "new.csv"
    _ok(["ingest", str(enrolled["heldout"]), "--out", str(new), "--workers", "1",
         "--no-progress"])
    _ok(["split", str(new), "--by", "patient", "--val", "0", "--test", "0.5", "--seed", "0"])
    new_rows = [r for r in read_manifest(new) if r["status"] == "eligible"]
    assert {r["split"] for r in new_rows} == {"train", "test"}
    both = tmp_path / "manifest-with-new-unit.csv"
    write_manifest(read_manifest(enrolled["manifest"]) + read_manifest(new), both)
    # a smaller compared window than the default, chosen at enrolment and kept with the run
    out = _ok(["calibrate", str(run), "--manifest", str(both), "--unit-window", "96"])
    assert "enrolled 4 units" in out
    meta = json.loads((run / "fingerprints" / "fingerprints.json").read_text())
    assert meta["config"]["window"] == 96
    test = [r for r in new_rows if r["split"] == "test"]
    for v, r in zip(_identify(run, [r["path"] for r in test]), test, strict=True):
        assert v["confident"] is True and v["named_by"] == "unit-pattern", v["message"]
        assert v["unit"] == r["unit"] and v["verdict"] == "consistent"
        assert v["unit_window"][2:] == [96, 96]
