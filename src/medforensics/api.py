"""The public Python API: one import for the things a user does.

Example:
    >>> from medforensics import api
    >>> paths = api.simulate_archive("archive", patients=8, size=256, seed=0)
    >>> img = api.read_image(paths[0])
    >>> img.pixels.dtype, img.meta.manufacturer
    (dtype('float32'), ...)

Every name here is defined elsewhere; this module only gathers them (lazily, so importing it
costs nothing until a name is used).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # reading pixels and headers (the pixel contract)
    "read_image": "medforensics.io",
    "read_header": "medforensics.io",
    "iter_frames": "medforensics.io",
    # data: simulation, ingest, splits
    "simulate_archive": "medforensics.synth.simulate",
    "ingest": "medforensics.data.manifest",
    "read_manifest": "medforensics.data.manifest",
    "write_manifest": "medforensics.data.manifest",
    "assign_splits": "medforensics.data.splits",
    "check_leakage": "medforensics.data.splits",
    # models and training
    "create_model": "medforensics.models.registry",
    "list_models": "medforensics.models.registry",
    "load_model": "medforensics.models.io",
    "verify_run": "medforensics.models.runfiles",
    "seal_run": "medforensics.models.runfiles",
    "train": "medforensics.training.engine",
    # source identification
    "SourcePredictor": "medforensics.source.predictor",
    "calibrate_run": "medforensics.source.calibrate",
    "enroll_units": "medforensics.source.predictor",
    "identify_files": "medforensics.source.predictor",
    "identify_image": "medforensics.source.predictor",
    "evaluate_run": "medforensics.source.evaluate",
    "bootstrap_interval": "medforensics.eval.metrics",
    "UnitFingerprints": "medforensics.source.units",
    # forgery
    "ForgeryDetector": "medforensics.forgery.detector",
    "train_forgery": "medforensics.forgery.train",
    "evaluate_detector": "medforensics.forgery.evaluate",
    # scale: prepared store, threads, shards
    "prepare_store": "medforensics.data.store",
    "open_store": "medforensics.data.store",
    "configure_threads": "medforensics.common.runtime",
    "take_shard": "medforensics.common.sharding",
    # the main job
    "run_demo": "medforensics.demo.pipeline",
    "DemoConfig": "medforensics.demo.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medforensics.api' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
