"""Fixtures for the web-service tests: a tiny trained and calibrated source run.

Import the fixtures into a test module with
``from fixtures_service import service_archive, source_run  # noqa: F401`` (``tests/`` has no
``__init__.py``, so pytest's default import mode puts it on ``sys.path``).

The run is trained for one epoch on a simulated archive of 2 models x 1 unit x 6 patients
(160x200 images), so it loads and predicts like a real run but is not accurate; tests must
assert the service's behaviour, not the model's accuracy. Session-scoped: built once (a few
seconds) and shared by every service test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@dataclass(frozen=True)
class ServiceArchive:
    """A simulated archive and the source run trained on it.

    Attributes:
        root: archive directory (DICOM files under ``<PatientID>/<study>/``).
        run: trained + calibrated run directory (model.safetensors, model.json,
            calibration.json).
        paths: the archive's DICOM files (sorted).
        rows: the split manifest rows.
    """

    root: Path
    run: Path
    paths: list[Path]
    rows: list[dict]


@pytest.fixture(scope="session")
def service_archive(tmp_path_factory: pytest.TempPathFactory) -> ServiceArchive:
    """Simulate, ingest, split, train 1 epoch, calibrate, enrol units (session-scoped)."""
    import torch

    from medforensics.data.manifest import ingest
    from medforensics.synth.simulate import simulate_archive
    from medforensics.data.splits import assign_splits
    from medforensics.source.predictor import enroll_units
    from medforensics.source.calibrate import calibrate_run
    from medforensics.training.engine import train

    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("service_run")
    root, run = base / "archive", base / "run"
    paths = simulate_archive(
        root, manufacturers=2, models_per_manufacturer=1, units_per_model=1, patients=6,
        size=(160, 200), seed=0,
    )
    rows = ingest([root], progress=False, workers=1)
    assign_splits(rows, by="patient", test=0.2, val=0.3, stratify="model", seed=0)
    train(rows, label="model", preset="patch", out_dir=str(run), epochs=1,
          patches_per_image=8, progress=False)
    calibrate_run(run, rows, n_patches=8)
    # Too few validation images back an open-set threshold here, so the classifier alone
    # names nothing; the enrolled units' reference patterns name the devices.
    enroll_units(run, rows)
    return ServiceArchive(root=root, run=run, paths=sorted(Path(p) for p in paths), rows=rows)


@pytest.fixture(scope="session")
def source_run(service_archive: ServiceArchive) -> Path:
    """Directory of the tiny trained + calibrated source run."""
    return service_archive.run


class ContractForgeryDetector:
    """Stand-in forgery detector following the ``detect(pixels, meta) -> ForgeryResult``
    contract.

    It marks the square ``[H/4, H/2) x [W/4, W/2)`` as forged (probability 1, else 0) and
    refuses images under 32 px with :class:`medforensics.errors.InvalidArrayError`, so tests
    can check what the service does with a result without training a forgery model.
    ``calls`` records ``(shape, meta.format)`` of every call.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, int], str]] = []

    def detect(self, pixels: np.ndarray, meta: object) -> Any:
        from medforensics.errors import InvalidArrayError
        from medforensics.forgery.detector import ForgeryResult

        if pixels.ndim != 2:
            raise InvalidArrayError("2-D only")
        h, w = pixels.shape
        if min(h, w) < 32:
            raise InvalidArrayError(f"image {h}x{w} too small for the detector")
        self.calls.append(((h, w), str(getattr(meta, "format", ""))))
        prob = np.zeros((h, w), np.float32)
        prob[h // 4: h // 2, w // 4: w // 2] = 1.0
        box = [w // 4, h // 4, w // 2, h // 2]
        area = (box[2] - box[0]) * (box[3] - box[1])
        region = {"bbox": box, "area_px": area, "area_percent": 100.0 * area / (h * w),
                  "mean_prob": 1.0, "max_prob": 1.0, "cue": "noise"}
        return ForgeryResult(score=float(np.float32(0.9)), verdict="tampered",
                             forged_area_percent=float(100 * prob.mean()), ela_score=0.25,
                             threshold=0.5, inconclusive_from=0.4, map_threshold=0.5,
                             method="contract", prob_map=prob, covered_fraction=1.0,
                             regions=[region])
