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
    """Simulate, ingest, split, train 1 epoch and calibrate (session-scoped, a few seconds)."""
    import torch

    from medforensics.data.manifest import ingest
    from medforensics.data.simulate import simulate_archive
    from medforensics.data.splits import assign_splits
    from medforensics.predict import calibrate_run
    from medforensics.train.engine import train

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
    return ServiceArchive(root=root, run=run, paths=sorted(Path(p) for p in paths), rows=rows)


@pytest.fixture(scope="session")
def source_run(service_archive: ServiceArchive) -> Path:
    """Directory of the tiny trained + calibrated source run."""
    return service_archive.run
