"""End to end: simulated DICOM archive -> manifest -> split -> `medforensics train`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from _helpers import one_torch_thread  # noqa: F401

from medforensics.cli import app


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medforensics.data.manifest import ingest, write_manifest
    from medforensics.synth.simulate import simulate_archive
    from medforensics.data.splits import assign_splits

    root = tmp_path_factory.mktemp("train_cli")
    archive = root / "archive"
    simulate_archive(archive, manufacturers=2, models_per_manufacturer=1, units_per_model=1,
                     patients=16, images_per_patient=2, size=(128, 160), seed=1)
    rows = ingest([archive], label="model", workers=1, progress=False)
    assign_splits(rows, by="patient", test=0.2, val=0.3, stratify="model", seed=0)
    # Destroy the held-out test files: training must never open them.
    test_rows = [r for r in rows if r.get("split") == "test"]
    assert test_rows
    for r in test_rows:
        Path(r["path"]).write_bytes(b"not a dicom file")
    manifest = root / "manifest.csv"
    write_manifest(rows, manifest)
    return manifest


def test_cli_train_end_to_end(tiny_manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", str(tiny_manifest), "--label", "model", "--preset", "patch", "--out",
            str(out), "--epochs", "3", "--patch", "32", "--patches-per-image", "48",
            "--batch-size", "32", "--seed", "0", "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "best epoch" in res.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["label_column"] == "model" and len(meta["classes"]) == 2
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    # Learned the device from the noise: it fits the training patches, and on the unseen
    # validation patients' images (~8 images x 16 patches) it is clearly above chance (0.5).
    assert metrics[-1]["train_acc"] >= 0.85
    assert metrics[-1]["val_patch_acc"] >= 0.7
    assert max(m["val_bacc"] for m in metrics) >= 0.75

    # Paper-grade evaluation of the run on the validation patients, with patient intervals.
    ev = tmp_path / "ev"
    res = CliRunner().invoke(app, ["evaluate", str(out), "--manifest", str(tiny_manifest),
                                   "--split", "val", "--out", str(ev), "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    m = json.loads((ev / "metrics.json").read_text())
    iv = m["intervals"]
    assert iv["unit"] == "patient" and iv["n_boot"] == 200
    from medforensics.data.manifest import read_manifest

    val = [r for r in read_manifest(tiny_manifest) if r.get("split") == "val"]
    assert m["n_images"] == len(val) and iv["n_clusters"] == len({r["PatientID"] for r in val})
    lo, hi = iv["accuracy"]
    assert lo <= m["image_level"]["accuracy"] <= hi
    assert set(iv["tpr"]) == set(meta["classes"])
    assert "patients]" in res.output and "bootstrap intervals over" in (ev / "report.md").read_text()
    # what identify did with each image: the shares add up, every name is accounted for
    vd = m["verdicts"]
    assert vd["named_right"] + vd["named_wrong"] + vd["not_named"] == pytest.approx(1.0)
    named = round((vd["named_right"] + vd["named_wrong"]) * m["n_images"])
    assert vd["named_by_unit_pattern"] + vd["named_by_classifier"] == named
    assert "Identify verdicts on these images: named right" in (ev / "report.md").read_text()
    # the held-out test files were destroyed: every one is listed, the command fails cleanly
    bad = CliRunner().invoke(app, ["evaluate", str(out), "--manifest", str(tiny_manifest),
                                   "--out", str(tmp_path / "ev_test")])
    assert bad.exit_code != 0 and "failed" in bad.output

    # An existing run is not overwritten without --resume; --resume extends it.
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "resume" in again.output
    # Options left unset on --resume keep the run's values (patch 32, batch 32, ...).
    more = CliRunner().invoke(app, ["train", str(tiny_manifest), "--out", str(out), "--resume",
                                    "--epochs", "4", "--no-progress"])
    assert more.exit_code == 0, more.output
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    # ... and a conflicting explicit option is refused.
    clash = CliRunner().invoke(app, ["train", str(tiny_manifest), "--out", str(out), "--resume",
                                     "--epochs", "5", "--patch", "48", "--no-progress"])
    assert clash.exit_code == 2 and "patch" in clash.output


def test_cli_train_reports_bad_device(tiny_manifest: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    res = CliRunner().invoke(app, ["train", str(tiny_manifest), "--out", str(tmp_path / "r"),
                                   "--device", "cuda"])
    assert res.exit_code == 2 and "CUDA" in res.output
