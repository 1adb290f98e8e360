"""Trusted run folders: the run manifest (run.json), hash and range checks on load, the
``--allow-modified-run`` override and the ``run_integrity`` of every verdict.

The runs are tiny (one epoch on a simulated archive, or untrained weights): these tests check
what is loaded and refused, not accuracy.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from _helpers import one_torch_thread  # noqa: F401

from medforensics.cli import app
from medforensics.errors import ConfigError, ModelFileError, RunIntegrityError
from medforensics.models.runfiles import (
    RUN_MANIFEST,
    file_sha256,
    record_files,
    seal_run,
    verify_run,
)
from medforensics.source.predictor import SourcePredictor, identify_files


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Simulate -> ingest -> split -> `medforensics train` (calibrates and enrols units)."""
    from medforensics.data.manifest import ingest, write_manifest
    from medforensics.synth.simulate import simulate_archive
    from medforensics.data.splits import assign_splits

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("integrity")
    paths = simulate_archive(root / "archive", manufacturers=2, models_per_manufacturer=1,
                             units_per_model=1, patients=6, images_per_patient=2,
                             size=(96, 128), seed=2)
    rows = ingest([root / "archive"], label="model", workers=1, progress=False)
    assign_splits(rows, by="patient", test=0.2, val=0.3, stratify="model", seed=0)
    manifest = root / "manifest.csv"
    write_manifest(rows, manifest)
    run = root / "run"
    res = CliRunner().invoke(app, [
        "train", str(manifest), "--label", "model", "--preset", "patch", "--out", str(run),
        "--epochs", "1", "--patch", "32", "--patches-per-image", "8", "--seed", "0",
        "--no-progress"])
    assert res.exit_code == 0, res.output
    return {"manifest": manifest, "run": run, "paths": sorted(Path(p) for p in paths)}


def _copy(trained: dict, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    return run


def _listed(run: Path) -> dict[str, str]:
    return json.loads((run / RUN_MANIFEST).read_text())["files"]


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        target = data
        *parents, last = key.split(".")
        for p in parents:
            target = target[p]
        target[last] = value
    path.write_text(json.dumps(data))


# ------------------------------------------------------------------------ normal workflow


def test_train_calibrate_identify_flow_is_verified(trained: dict, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path)
    files = _listed(run)
    assert set(files) == {"model.json", "model.safetensors", "calibration.json",
                          "openset.safetensors", "fingerprints/fingerprints.json",
                          "fingerprints/fingerprints.safetensors"}
    for name, sha in files.items():
        assert sha == file_sha256(run / name)
    assert not list(run.rglob("*.tmp"))  # every write went through a temporary file
    assert verify_run(run).status == "verified"

    res = CliRunner().invoke(app, ["identify", str(run), *map(str, trained["paths"][:2]),
                                   "--json"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(lines) == 2 and all(d["run_integrity"] == "verified" for d in lines)
    assert "warning" not in res.output

    # Calibrating again rewrites calibration.json and its hash: the run stays verified.
    before = files["calibration.json"]
    res = CliRunner().invoke(app, ["calibrate", str(run), "--manifest", str(trained["manifest"]),
                                   "--target-false-unknown", "0.3", "--no-units"])
    assert res.exit_code == 0, res.output
    after = _listed(run)["calibration.json"]
    assert after != before and after == file_sha256(run / "calibration.json")
    assert json.loads((run / "calibration.json").read_text())["target_false_unknown"] == 0.3
    assert SourcePredictor.from_run(run).run_integrity == "verified"


# ------------------------------------------------------------------------ changed files


@pytest.mark.parametrize("name", ["calibration.json", "fingerprints/fingerprints.json",
                                  "model.json", "model.safetensors", "openset.safetensors"])
def test_a_changed_run_file_is_refused_naming_it(trained: dict, tmp_path: Path,
                                                 name: str) -> None:
    run = _copy(trained, tmp_path)
    path = run / name
    if name.endswith(".safetensors"):
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))
    elif name == "model.json":
        _edit_json(path, classes=list(reversed(json.loads(path.read_text())["classes"])))
    elif name == "calibration.json":
        _edit_json(path, temperature=3.0)  # in range: only the hash gives it away
    else:
        _edit_json(path, **{"config.threshold": 1.0})
    with pytest.raises(RunIntegrityError, match="changed since the run was written") as ei:
        SourcePredictor.from_run(run)
    assert ei.value.path == str(path) and ei.value.overridable
    res = CliRunner().invoke(app, ["identify", str(run), str(trained["paths"][0])])
    assert res.exit_code == 3 and name in res.output and "--allow-modified-run" in res.output


def test_added_or_removed_side_files_are_modifications(trained: dict, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path)
    (run / "calibration.json").unlink()  # would silently make the run uncalibrated
    with pytest.raises(RunIntegrityError, match="calibration.json: listed in run.json but "
                                                "missing"):
        SourcePredictor.from_run(run)
    record_files(run, ["calibration.json"])  # the writer's way of removing a file
    assert "calibration.json" not in _listed(run)
    assert SourcePredictor.from_run(run).temperature == 1.0
    # a hand-made calibration.json dropped into a verified run is not trusted
    (run / "calibration.json").write_text(json.dumps({"temperature": 5.0}))
    with pytest.raises(RunIntegrityError, match="calibration.json: not listed in run.json"):
        SourcePredictor.from_run(run)


def test_fingerprints_load_checks_the_run_manifest(trained: dict, tmp_path: Path) -> None:
    from medforensics.source.units import UnitFingerprints

    run = _copy(trained, tmp_path)
    assert UnitFingerprints.load(run / "fingerprints").units
    _edit_json(run / "fingerprints" / "fingerprints.json", **{"config.threshold": 75.0})
    with pytest.raises(RunIntegrityError, match="fingerprints.json: changed"):
        UnitFingerprints.load(run / "fingerprints")
    fps = UnitFingerprints.load(run / "fingerprints", allow_modified=True)
    assert fps.config.threshold == 75.0


# ------------------------------------------------------------------------ override


def test_override_loads_and_every_verdict_says_modified(trained: dict, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    run = _copy(trained, tmp_path)
    _edit_json(run / "calibration.json", temperature=3.0)
    with caplog.at_level(logging.WARNING, logger="medforensics.models.runfiles"):
        pred = SourcePredictor.from_run(run, allow_modified=True)
    assert pred.run_integrity == "modified" and pred.temperature == 3.0
    assert "calibration.json: changed" in caplog.text
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not an image")
    got = list(identify_files(pred, [trained["paths"][0], junk]))
    assert got[0][0].verdict != "unreadable" and got[1][0].verdict == "unreadable"
    assert [extra["run_integrity"] for _, extra in got] == ["modified", "modified"]

    res = CliRunner().invoke(app, ["identify", str(run), str(trained["paths"][0]), str(junk),
                                   "--json", "--allow-modified-run"])
    assert res.exit_code == 1, res.output  # the junk file is not analysed
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert lines[0]["run_integrity"] == "modified" and lines[1]["status"] == "error"
    assert "warning: the run was modified" in res.output


def test_calibrating_a_modified_run_keeps_it_modified(trained: dict, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path)
    _edit_json(run / "model.json", seed=99)
    res = CliRunner().invoke(app, ["calibrate", str(run), "--manifest", str(trained["manifest"]),
                                   "--no-units"])
    assert res.exit_code == 3 and "model.json" in res.output
    res = CliRunner().invoke(app, ["calibrate", str(run), "--manifest", str(trained["manifest"]),
                                   "--no-units", "--allow-modified-run"])
    assert res.exit_code == 0, res.output
    check = verify_run(run, allow_modified=True)
    assert check.status == "modified" and [n for n, _ in check.problems] == ["model.json"]


# ------------------------------------------------------------------------ value ranges


@pytest.mark.parametrize(("name", "change", "message"), [
    ("calibration.json", {"temperature": -1}, "temperature must be a finite number in"),
    ("calibration.json", {"temperature": 0.0}, "temperature must be"),
    ("calibration.json", {"temperature": float("nan")}, "temperature must be"),
    ("calibration.json", {"temperature": "1.0"}, "temperature must be"),
    ("calibration.json", {"unknown_threshold": float("inf")}, "unknown_threshold must be"),
    ("calibration.json", {"n_patches": 1e7}, "n_patches must be an integer in [1, 4096]"),
    ("calibration.json", {"n_patches": 10**7}, "n_patches must be an integer"),
    ("calibration.json", {"n_patches": 0}, "n_patches must be an integer"),
    ("calibration.json", {"feature_threshold": -1.0}, "feature_threshold must be"),
    ("calibration.json", {"feature_threshold": float("inf")}, "feature_threshold must be"),
    ("fingerprints/fingerprints.json", {"config.threshold": -1e9},
     "config.threshold must be a finite number >= 0"),
    ("fingerprints/fingerprints.json", {"config.threshold": float("inf")},
     "config.threshold must be"),
    ("model.json", {"input_spec.patch": 100000}, "input_spec.patch must be an integer"),
])
def test_unsafe_values_are_refused_even_with_the_override(trained: dict, tmp_path: Path,
                                                          name: str, change: dict,
                                                          message: str) -> None:
    run = _copy(trained, tmp_path)
    _edit_json(run / name, **change)
    for allow in (False, True):
        with pytest.raises(RunIntegrityError) as ei:
            SourcePredictor.from_run(run, allow_modified=allow)
        if allow:
            assert message in str(ei.value) and ei.value.path == str(run / name)
            assert not ei.value.overridable
    # re-hashing the bad file into the manifest does not make it acceptable
    record_files(run, [name])
    with pytest.raises(RunIntegrityError, match="refused whatever the run manifest says"):
        SourcePredictor.from_run(run)
    # nor does dropping the manifest (an "old" run)
    (run / RUN_MANIFEST).unlink()
    with pytest.raises(RunIntegrityError, match=name.split("/")[-1]):
        SourcePredictor.from_run(run)


def test_patch_budget_bounds_memory(trained: dict, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path)
    with pytest.raises(ConfigError, match="n_patches must be >= 1 and <= 4096"):
        SourcePredictor.from_run(run, n_patches=5000)
    res = CliRunner().invoke(app, ["identify", str(run), str(trained["paths"][0]),
                                   "--patches", "5000"])
    assert res.exit_code == 2 and "<= 4096" in res.output


# ------------------------------------------------------------------------ paths


@pytest.mark.parametrize("bad", ["../calibration.json", "/etc/hostname", "a/../../x",
                                 "fingerprints\\..\\x"])
def test_paths_leading_out_of_the_run_are_refused(trained: dict, tmp_path: Path,
                                                  bad: str) -> None:
    run = _copy(trained, tmp_path)
    data = json.loads((run / RUN_MANIFEST).read_text())
    data["files"][bad] = "0" * 64
    (run / RUN_MANIFEST).write_text(json.dumps(data))
    for allow in (False, True):
        with pytest.raises(RunIntegrityError, match="points outside the run folder"):
            SourcePredictor.from_run(run, allow_modified=allow)
    with pytest.raises(RunIntegrityError, match="outside"):
        record_files(run, [bad])


def test_links_leading_out_of_the_run_are_refused(trained: dict, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path)
    outside = tmp_path / "elsewhere.json"
    shutil.move(run / "calibration.json", outside)
    (run / "calibration.json").symlink_to(outside)
    for allow in (False, True):
        with pytest.raises(RunIntegrityError, match="link leading outside the run folder"):
            SourcePredictor.from_run(run, allow_modified=allow)
    (run / RUN_MANIFEST).unlink()  # nor in an old run, where nothing is listed
    with pytest.raises(RunIntegrityError, match="link leading outside the run folder"):
        SourcePredictor.from_run(run)


def test_weights_file_must_stay_in_the_run(trained: dict, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path)
    _edit_json(run / "model.json", weights_file="../model.safetensors")
    record_files(run, ["model.json"])
    with pytest.raises(ModelFileError, match="weights_file must be a .safetensors file name"):
        SourcePredictor.from_run(run)


# ------------------------------------------------------------------------ old runs


def test_old_run_without_manifest_loads_unverified(trained: dict, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    run = _copy(trained, tmp_path)
    (run / RUN_MANIFEST).unlink()
    with caplog.at_level(logging.WARNING, logger="medforensics.models.runfiles"):
        pred = SourcePredictor.from_run(run)
    assert pred.run_integrity == "unverified" and "has no run manifest" in caplog.text
    (_, extra), = identify_files(pred, [trained["paths"][0]])
    assert extra["run_integrity"] == "unverified"
    res = CliRunner().invoke(app, ["identify", str(run), str(trained["paths"][0]), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["run_integrity"] == "unverified"
    assert "has no run manifest" in res.output

    # Calibrating it cannot vouch for the older files: it stays unverified ...
    res = CliRunner().invoke(app, ["calibrate", str(run), "--manifest", str(trained["manifest"]),
                                   "--no-units"])
    assert res.exit_code == 0, res.output
    assert not (run / RUN_MANIFEST).exists()
    # ... until someone checks it and seals it.
    res = CliRunner().invoke(app, ["seal", str(run)])
    assert res.exit_code == 0, res.output
    assert SourcePredictor.from_run(run).run_integrity == "verified"
    assert set(_listed(run)) >= {"model.json", "model.safetensors", "calibration.json"}
    with pytest.raises(ModelFileError, match="not a run folder"):
        seal_run(tmp_path)


# ------------------------------------------------------------------------ forgery runs


def _ela_run(tmp_path: Path) -> Path:
    from medforensics.models.io import save_model
    from medforensics.models.registry import create_model

    torch.manual_seed(0)
    run = tmp_path / "ela"
    save_model(run, create_model("ela-cnn", 2, in_channels=1, input_size=128),
               {"preset": "ela-cnn", "classes": ["original", "tampered"], "threshold": 0.5,
                "input_scale": 1.0 / 255.0})
    return run


def test_forgery_run_checks_and_result_field(tmp_path: Path) -> None:
    from medforensics.forgery.detector import ForgeryDetector

    run = _ela_run(tmp_path)
    img = np.random.default_rng(0).uniform(0, 255, (96, 96)).astype(np.float32)
    assert ForgeryDetector.from_run(run).detect(img).to_dict()["run_integrity"] == "verified"
    assert ForgeryDetector.from_run(None).detect(img).to_dict()["run_integrity"] is None

    _edit_json(run / "model.json", threshold=0.01)  # would call nearly everything tampered
    with pytest.raises(RunIntegrityError, match="model.json: changed"):
        ForgeryDetector.from_run(run)
    det = ForgeryDetector.from_run(run, allow_modified=True)
    assert det.threshold == 0.01 and det.detect(img).to_dict()["run_integrity"] == "modified"

    _edit_json(run / "model.json", threshold=7.0)
    record_files(run, ["model.json"])
    for allow in (False, True):
        with pytest.raises(RunIntegrityError, match="threshold must be a finite number in"):
            ForgeryDetector.from_run(run, allow_modified=allow)


def test_forgery_detect_cli_flag(tmp_path: Path) -> None:
    from PIL import Image

    run = _ela_run(tmp_path)
    png = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 96), np.uint8)).save(png)
    _edit_json(run / "model.json", threshold=0.4)
    bad = CliRunner().invoke(app, ["forgery", "detect", str(run), str(png), "--json"])
    assert bad.exit_code == 3 and "model.json" in bad.output
    ok = CliRunner().invoke(app, ["forgery", "detect", str(run), str(png), "--json",
                                  "--allow-modified-run"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["run_integrity"] == "modified"


def test_cues_run_checks_its_recorded_source_run(trained: dict, tmp_path: Path) -> None:
    """A learned-combiner run names its source run by path (outside the run folder): that
    run is loaded through its own checks and must still hold the weights it was trained
    with."""
    from medforensics.forgery.combiner import CueCombiner
    from medforensics.forgery.detector import ForgeryDetector
    from medforensics.models.io import save_model
    from medforensics.models.registry import create_model
    from medforensics.common.jsonio import atomic_write_json

    source = _copy(trained, tmp_path)
    run = tmp_path / "cues"
    CueCombiner(cues=["fingerprint"], pixel_coef=np.zeros(2), pixel_intercept=0.0,
                image_coef=np.zeros(3), image_intercept=0.0, info={}, grid=4).save(run)
    atomic_write_json(run / "model.json", {
        "format": "medforensics-forgery-cues/1", "preset": "cues", "cues": ["fingerprint"],
        "threshold": 0.5, "pixel_grid": 4, "source_run": str(source),
        "source_weights_sha256": json.loads((source / "model.json").read_text())[
            "weights_sha256"]})
    record_files(run, ["combiner.safetensors", "model.json"])
    assert ForgeryDetector.from_run(run).run_integrity == "verified"

    # the source run is replaced by another (itself intact) run with other weights
    meta = json.loads((source / "model.json").read_text())
    torch.manual_seed(5)
    save_model(source, create_model("patch", 2, patch=32),
               {"classes": meta["classes"], "label_column": "model"})
    assert SourcePredictor.from_run(source).run_integrity == "verified"
    with pytest.raises(RunIntegrityError, match="other weights than the combiner was trained"):
        ForgeryDetector.from_run(run)
    assert ForgeryDetector.from_run(run, allow_modified=True).run_integrity == "modified"
    # and a source run that no longer matches its own manifest is refused as such
    _edit_json(source / "calibration.json", temperature=2.0)
    with pytest.raises(RunIntegrityError, match="calibration.json: changed"):
        ForgeryDetector.from_run(run)


def test_service_report_and_evaluate_carry_the_status(trained: dict, tmp_path: Path) -> None:
    from medforensics.data.manifest import read_manifest
    from medforensics.source.evaluate import evaluate_run
    from medforensics.report.html import render_case_report
    from medforensics.service.analysis import CaseService

    run = _copy(trained, tmp_path)
    _edit_json(run / "calibration.json", unknown_threshold=0.9)
    with pytest.raises(RunIntegrityError, match="calibration.json"):
        CaseService(run)
    svc = CaseService(run, allow_modified_run=True)
    assert svc.models_info()["source"]["run_integrity"] == "modified"
    path = trained["paths"][0]
    assert svc.identify(path, "x.dcm")["run_integrity"] == "modified"
    page = render_case_report(path, source=run, allow_modified_run=True)
    assert "run modified" in page and "not evidence" in page
    with pytest.raises(RunIntegrityError):
        render_case_report(path, source=run)
    res = evaluate_run(run, read_manifest(trained["manifest"]), tmp_path / "ev", split="val",
                       n_boot=0, progress=False, allow_modified=True)
    assert res["run_integrity"] == "modified"
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["run_integrity"] == "modified"
