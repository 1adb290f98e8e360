"""End to end: what a small, freshly trained run names, refuses to name, or cannot judge."""

from __future__ import annotations

import json

import pytest
import torch

from medforensics.source.verdicts import INSUFFICIENT_EVIDENCE, UNKNOWN


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from medforensics.data.manifest import ingest
    from medforensics.synth.simulate import simulate_archive
    from medforensics.data.splits import assign_splits
    from medforensics.source.predictor import enroll_units
    from medforensics.source.calibrate import calibrate_run
    from medforensics.training.engine import train

    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("openset_run")
    simulate_archive(base / "archive", manufacturers=2, models_per_manufacturer=1,
                     units_per_model=1, patients=8, images_per_patient=2, size=(224, 288),
                     seed=4, multi_device_fraction=0.0)
    rows = [r for r in ingest([base / "archive"], progress=False, workers=1)
            if r["status"] == "eligible"]
    assign_splits(rows, by="patient", test=0.25, val=0.25, stratify="model", seed=0)
    run = base / "run"
    train(rows, label="model", preset="patch", out_dir=str(run), epochs=1,
          patches_per_image=8, progress=False, outlier_devices=2)
    cal = calibrate_run(run, rows, n_patches=8, outlier_devices=0)
    enroll_units(run, rows)
    return {"run": run, "rows": rows, "cal": cal, "base": base}


def test_too_few_validation_images_set_no_threshold(small_run: dict) -> None:
    cal = small_run["cal"]
    n_val = sum(r["split"] == "val" for r in small_run["rows"])
    assert cal["n_val_images"] == n_val < 39
    assert cal["feature_threshold"] is None
    assert "39 needed" in cal["threshold_note"]
    saved = json.loads((small_run["run"] / "calibration.json").read_text())
    assert saved["feature_threshold"] is None and saved["openset_file"] == "openset.safetensors"
    assert (small_run["run"] / "openset.safetensors").is_file()


def test_enrolled_unit_names_the_device_and_the_classifier_alone_does_not(small_run: dict
                                                                          ) -> None:
    from medforensics.source.predictor import SourcePredictor, identify_files

    train_rows = [r for r in small_run["rows"] if r["split"] == "train"][:2]
    pred = SourcePredictor.from_run(small_run["run"])
    for (v, extra), row in zip(identify_files(pred, [r["path"] for r in train_rows]),
                               train_rows):
        assert v.confident and v.named_by == "unit-pattern" and v.predicted == row["model"]
        assert v.to_dict()["named"] == row["model"]
        assert extra["unit"] == row["unit"]
        assert v.message.endswith("[this model knows only simulated devices]")
    # without unit patterns, and with the probability threshold out of the way, the missing
    # feature threshold alone keeps the classifier from naming anything
    pred.fingerprints, pred.require_unit_match, pred.unknown_threshold = None, False, 0.0
    v, _ = next(iter(identify_files(pred, [train_rows[0]["path"]])))
    assert v.verdict == UNKNOWN and not v.confident and v.to_dict()["named"] is None
    assert "no open-set threshold" in v.message and "39 needed" in v.message


def test_blank_copy_is_insufficient_evidence(small_run: dict) -> None:
    from medforensics.demo.pipeline import blank_copy
    from medforensics.source.predictor import SourcePredictor, identify_files

    row = next(r for r in small_run["rows"] if r["split"] == "test")
    blank = blank_copy(row["path"], small_run["base"] / "blank.dcm")
    v, extra = next(iter(identify_files(SourcePredictor.from_run(small_run["run"]), [blank])))
    assert v.verdict == INSUFFICIENT_EVIDENCE and not v.confident
    assert v.header_claim == row["model"] and extra["n_patches"] == 0
    assert extra["informative_windows"] == 0


def test_noise_alone_is_insufficient_evidence_for_the_classifier_alone(small_run: dict
                                                                       ) -> None:
    """Uniform noise under a known device's header: nobody's noise, so nothing is judged -
    even with every open-set test of the classifier out of the way."""
    import numpy as np

    from medforensics.io import read_image
    from medforensics.source.predictor import SourcePredictor, identify_image

    row = next(r for r in small_run["rows"] if r["split"] == "test")
    img = read_image(row["path"])
    pred = SourcePredictor.from_run(small_run["run"])
    pred.fingerprints, pred.require_unit_match, pred.unknown_threshold = None, False, 0.0
    pred.feature_threshold = float("inf")
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 4096, img.pixels.shape).astype(np.float32)
    v, extra = identify_image(pred, noise, img.meta, "noise.dcm")
    assert v.verdict == INSUFFICIENT_EVIDENCE and not v.confident
    assert "noise alone" in v.message and extra["informative_windows"] == 0
    # the image itself, with more noise on top, still has content to be judged
    noisy = img.pixels + rng.normal(0, 20, img.pixels.shape).astype(np.float32)
    w, _ = identify_image(pred, noisy, img.meta, "noisy.dcm")
    assert w.verdict != INSUFFICIENT_EVIDENCE


def test_calibration_summary_says_what_the_classifier_alone_does(small_run: dict) -> None:
    from medforensics.source.calibrate import calibration_summary

    cal = dict(small_run["cal"])
    assert cal["feature_threshold"] is None
    cal["leave_one_class_out_unknown_rate"] = 0.4
    text = calibration_summary(cal)
    # no threshold: the estimate of what a threshold would reject is not what the run does
    assert "classifier alone names no device" in text and "40%" not in text
    cal["feature_threshold"] = 1.5
    text = calibration_summary(cal)
    assert "feature distance 1.5" in text and "40% of left-out classes rejected" in text
