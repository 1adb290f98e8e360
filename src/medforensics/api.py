"""The public Python API: one import for the things a user does.

Example:
    >>> from medforensics import api
    >>> paths = api.simulate_archive("archive", patients=8, size=256, seed=0)
    >>> img = api.read_image(paths[0])
    >>> img.pixels.dtype, img.meta.manufacturer
    (dtype('float32'), ...)

Every name here is defined elsewhere; this module only gathers them, with plain imports so
that editors and type checkers see each name and its signature. It needs only the core
install: the web service (``medforensics[serve]``), ONNX export (``[export]``) and DICOM
results (``[dicom]``) are imported by their own modules when used.
"""

from __future__ import annotations

from medforensics.common.runtime import configure_threads
from medforensics.common.sharding import take_shard
from medforensics.data.manifest import ingest, read_manifest, write_manifest
from medforensics.data.splits import assign_splits, check_leakage
from medforensics.data.store import open_store, prepare_store
from medforensics.demo.pipeline import DemoConfig, run_demo
from medforensics.eval.metrics import bootstrap_interval
from medforensics.forgery.detector import ForgeryDetector, detect_files
from medforensics.forgery.evaluate import evaluate_detector
from medforensics.forgery.train import train_forgery
from medforensics.io import iter_frames, read_header, read_image
from medforensics.models.io import load_model
from medforensics.report.batch import write_report
from medforensics.models.registry import create_model, list_models
from medforensics.models.runfiles import seal_run, verify_run
from medforensics.pacs.results import dicom_results, write_dicom_results
from medforensics.source.calibrate import calibrate_run
from medforensics.source.evaluate import evaluate_run
from medforensics.source.predictor import (
    SourcePredictor,
    enroll_units,
    identify_files,
    identify_image,
)
from medforensics.source.units import UnitFingerprints
from medforensics.synth.simulate import simulate_archive
from medforensics.synth.tamper import tamper_array
from medforensics.training.engine import train

__all__ = [
    # reading pixels and headers (the pixel contract)
    "iter_frames",
    "read_header",
    "read_image",
    # data: simulation, ingest, splits
    "assign_splits",
    "check_leakage",
    "ingest",
    "read_manifest",
    "simulate_archive",
    "write_manifest",
    # models and training
    "create_model",
    "list_models",
    "load_model",
    "seal_run",
    "train",
    "verify_run",
    # source identification
    "SourcePredictor",
    "UnitFingerprints",
    "bootstrap_interval",
    "calibrate_run",
    "enroll_units",
    "evaluate_run",
    "identify_files",
    "identify_image",
    # forgery
    "ForgeryDetector",
    # results as DICOM (needs the [dicom] extra when called)
    "dicom_results",
    "write_dicom_results",
    "detect_files",
    "tamper_array",
    "evaluate_detector",
    "train_forgery",
    # scale: prepared store, threads, shards
    "configure_threads",
    "open_store",
    "prepare_store",
    "take_shard",
    # the main job
    "write_report",
    "DemoConfig",
    "run_demo",
]
