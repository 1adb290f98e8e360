"""Model commands: ``train``, ``calibrate``, ``evaluate``, ``export``, ``seal``."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import typer

from medforensics.cli._common import (
    ALLOW_MODIFIED_OPT,
    PROGRESS_OPT,
    app,
    check_run_kind,
    fail,
    warn_integrity,
)
from medforensics.errors import ConfigError, MedForensicsError

log = logging.getLogger("medforensics.cli")

#: The training loop's logger: its per-epoch lines are the ``train`` command's progress report.
_ENGINE_LOGGER = "medforensics.training.engine"


@app.command("train")
def train_cmd(
    manifest: Path = typer.Argument(..., help="Split manifest CSV (train/val/test column)."),
    label: Optional[str] = typer.Option(
        None, "--label", help="Class label: manufacturer, model (default), unit."),
    preset: Optional[str] = typer.Option(
        None, "--preset", help="patch (default), deep-rsi or deepmammo."),
    out: Path = typer.Option(..., "--out", help="Run directory (model, checkpoints, metrics)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs (preset default)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch size."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate."),
    patch: Optional[int] = typer.Option(
        None, "--patch", help="Patch side in native pixels (patch preset; default 64)."),
    patches_per_image: Optional[int] = typer.Option(
        None, "--patches-per-image", help="Training patches per image and epoch (patch preset)."),
    sampling: Optional[str] = typer.Option(
        None, "--sampling", help="weighted (Deep-RSI) or balanced (DeepMammo batches)."),
    seed: Optional[int] = typer.Option(
        None, "--seed", help="Seed of initialisation, sampling, patches (default 0)."),
    select: Optional[str] = typer.Option(
        None, "--select", help="Best epoch by: loss (patch default) or bacc (paper presets)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out (unset options keep the run's)."),
    workers: int = typer.Option(0, "--workers", help="DataLoader workers (0 = deterministic)."),
    progress: Optional[bool] = PROGRESS_OPT,
    store: Optional[Path] = typer.Option(
        None, "--store", help="Prepared store (medforensics prepare): no decoding per epoch."),
    calibrate: bool = typer.Option(
        True, "--calibrate/--no-calibrate",
        help="After training: temperature + open-set thresholds (val), unit patterns (train). "
        "On by default, so no separate `calibrate` is needed."),
    outlier_devices: Optional[int] = typer.Option(
        None, "--outlier-devices",
        help="Procedurally drawn 'none of these' devices (outlier exposure; patch default 16, "
             "0 = off)."),
) -> None:
    """Train a source-identification model, then calibrate it and enrol unit patterns.

    Trains on the train split, validates on val, never reads test; calibration and unit
    enrolment follow unless --no-calibrate. Under torchrun (WORLD_SIZE > 1) the process group is started here (gloo on CPU, NCCL on
    CUDA); only rank 0 writes files and calibrates. One log line per epoch goes to stderr.
    """
    from medforensics.training.engine import init_distributed_from_env, train

    engine_log = logging.getLogger(_ENGINE_LOGGER)
    if engine_log.getEffectiveLevel() > logging.INFO:
        engine_log.setLevel(logging.INFO)
    try:
        distributed = init_distributed_from_env(device)
        source = None
        if store is not None:
            from medforensics.data.store import open_store

            source = open_store(store, manifest)
        res = train(
            manifest, label=label, preset=preset, out_dir=str(out), epochs=epochs,
            batch_size=batch_size, lr=lr, patch=patch, patches_per_image=patches_per_image,
            sampling=sampling, seed=seed, select=select, device=device, resume=resume,
            workers=workers, outlier_devices=outlier_devices,
            progress=progress is not False, image_source=source,
        )
        calibrated = False
        if calibrate and (not distributed or _rank() == 0):
            calibrated = _calibrate_after_training(out, manifest, device)
    except MedForensicsError as exc:
        fail(exc)
    last = res.metrics[-1] if res.metrics else {}
    cfg = res.config
    typer.echo(
        f"trained {cfg.preset} on {cfg.label} ({len(res.classes)} classes): "
        f"best epoch {res.best_epoch}, "
        f"val balanced accuracy {res.best_val_balanced_accuracy:.3f}; "
        f"last epoch {last.get('epoch', '-')}; model in {out}"
    )
    if calibrated:
        typer.echo("the run is calibrated (train calibrates after training): identify, "
                   "evaluate and report can use it now; no separate `calibrate` is needed")
    elif calibrate:
        typer.echo("not calibrated: the manifest has no val split; run `medforensics "
                   "calibrate` with a manifest that has one", err=True)


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank()


def _calibrate_after_training(run: Path, manifest: Path, device: str) -> bool:
    """Calibrate on val and enrol units on train; whether a calibration was written."""
    from medforensics.data.manifest import read_manifest
    from medforensics.source.calibrate import calibrate_run, calibration_summary
    from medforensics.source.predictor import enroll_units

    rows = read_manifest(manifest)
    calibrated = False
    if any(r.get("split") == "val" for r in rows):
        cal = calibrate_run(run, rows, device=device)
        typer.echo(f"calibrated on val: {calibration_summary(cal)}")
        calibrated = True
    if any(r.get("unit") and r.get("split") == "train" for r in rows):
        fps = enroll_units(run, rows)
        typer.echo(f"enrolled {len(fps.units)} unit reference patterns")
    return calibrated


@app.command("calibrate")
def calibrate_cmd(
    run: Path = typer.Argument(..., help="Trained run directory."),
    manifest: Path = typer.Option(..., "--manifest", help="The split manifest used to train."),
    target_false_unknown: float = typer.Option(
        0.05, "--target-false-unknown", help="Wanted UNKNOWN rate on known devices (val)."),
    units: bool = typer.Option(
        True, "--units/--no-units", help="Also enrol unit reference patterns (train split)."),
    noise_shape: bool = typer.Option(
        False, "--noise-shape/--no-noise-shape",
        help="Also judge the image's noise shape (residual correlations) in the open-set "
             "test (off by default; what it gains and costs: docs/openset.md)."),
    unit_window: Optional[int] = typer.Option(
        None, "--unit-window", min=0, help="Side in px of the window of an image compared "
        "with the unit patterns (default 1024; 0 = the whole image: slower, for weak patterns)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    allow_modified_run: bool = ALLOW_MODIFIED_OPT,
) -> None:
    """Fit temperature scaling + open-set threshold on val, and enrol unit fingerprints.

    `train` already does this after training; run it again to recalibrate (e.g. with another
    --target-false-unknown). The new files' hashes go into the run manifest (run.json)."""
    from medforensics.data.manifest import read_manifest
    from medforensics.source.calibrate import calibrate_run, calibration_summary
    from medforensics.source.predictor import CALIBRATION_FILE, enroll_units

    check_run_kind(run, "source", "RUN")
    if (run / CALIBRATION_FILE).is_file():
        typer.echo(f"note: {run} is already calibrated (train calibrates after training); "
                   "calibrating again replaces its calibration", err=True)
    try:
        rows = read_manifest(manifest)
        cal = calibrate_run(run, rows, target_false_unknown=target_false_unknown, device=device,
                            allow_modified=allow_modified_run, noise_shape=noise_shape)
        typer.echo(f"{calibration_summary(cal)}; val accuracy {cal['val_accuracy']:.3f}")
        if units and any(r.get("unit") for r in rows):
            fps = enroll_units(run, rows, window=unit_window)
            typer.echo(f"enrolled {len(fps.units)} units into {run / 'fingerprints'}")
    except MedForensicsError as exc:
        fail(exc)


@app.command("evaluate")
def evaluate_cmd(
    run: Path = typer.Argument(..., help="Trained run directory."),
    manifest: Path = typer.Option(..., "--manifest", help="Split manifest."),
    split: str = typer.Option("test", "--split", help="train, val, test or all."),
    out: Path = typer.Option(..., "--out", help="Output folder (metrics.json, report.md, PNGs)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    n_patches: Optional[int] = typer.Option(None, "--patches", help="Patches per image (patch)."),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", min=0,
        help="Resamples for 95 % confidence intervals over patients (0 = none)."),
    progress: Optional[bool] = PROGRESS_OPT,
    allow_modified_run: bool = ALLOW_MODIFIED_OPT,
) -> None:
    """Paper-grade evaluation: per-class TPR/TNR/PPV/NPV/AUC, confusion, ROC, per body part."""
    from medforensics.data.manifest import read_manifest
    from medforensics.eval.tables import fmt_interval
    from medforensics.source.evaluate import evaluate_run

    check_run_kind(run, "source", "RUN")
    try:
        res = evaluate_run(run, read_manifest(manifest), out, split=split, device=device,
                           n_patches=n_patches, n_boot=bootstrap,
                           allow_modified=allow_modified_run, progress=progress is not False)
    except MedForensicsError as exc:
        fail(exc)
    warn_integrity(res.get("run_integrity"))
    img, pat = res["image_level"], res["patient_level"]
    ci = res.get("intervals") or {}
    typer.echo(f"{res['n_images']} {split} images: accuracy {img['accuracy']:.4f}"
               f"{fmt_interval(ci.get('accuracy'), 3)}, balanced {img['balanced_accuracy']:.4f}"
               f"{fmt_interval(ci.get('balanced_accuracy'), 3)}, macro AUC "
               f"{img['macro_auc'] or float('nan'):.4f}{fmt_interval(ci.get('macro_auc'), 3)}; "
               f"patient level accuracy {pat['accuracy']:.4f}"
               + (f" [95 % CI over {ci['n_clusters']} patients]" if ci else ""))
    if "unit_level" in res:
        typer.echo(f"unit level (reference patterns): accuracy {res['unit_level']['accuracy']:.4f}")
    typer.echo(f"report: {out / 'report.md'}")


@app.command("export")
def export_cmd(
    run: Path = typer.Argument(..., help="Run directory (or its model.json) of a trained model."),
    out: Optional[Path] = typer.Option(None, "--out", help="ONNX file to write (e.g. model.onnx)."),
    onnx: Optional[Path] = typer.Option(
        None, "--onnx", help="Deprecated spelling of --out.", hidden=True),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (>= 17)."),
    exporter: str = typer.Option(
        "dynamo", "--exporter", help="dynamo (torch.export, default) or torchscript (legacy)."),
    check: bool = typer.Option(
        True, "--check/--no-check", help="Compare onnxruntime with PyTorch on random inputs."),
    tolerance: float = typer.Option(
        1e-4, "--tolerance", help="Parity: max |logit diff| <= tol * max(1, max |logit|)."),
    allow_modified_run: bool = ALLOW_MODIFIED_OPT,
) -> None:
    """Export a trained model to ONNX (dynamic batch; metadata in metadata_props)."""
    from medforensics.models.export import export_onnx

    if onnx is not None:
        typer.echo("note: --onnx is deprecated; use --out", err=True)
    target = out if out is not None else onnx
    if target is None:
        fail(ConfigError("missing option --out (the ONNX file to write)"))
    try:
        with _quiet_exporter():
            res = export_onnx(run, target, opset=opset, exporter=exporter, check=check,
                              tolerance=tolerance, allow_modified=allow_modified_run)
    except MedForensicsError as exc:
        fail(exc)
    axes = ", ".join(f"{i}:{n}" for i, n in res.dynamic_axes.items())
    typer.echo(f"wrote {res.path} ({res.preset}, {res.metadata['num_classes']} classes, "
               f"opset {res.opset}, {res.exporter} exporter, dynamic axes {axes}, "
               f"{res.bytes / 1e6:.1f} MB)")
    if res.parity is not None:
        p = res.parity
        typer.echo(f"parity with onnxruntime: max |logit diff| {p.max_abs_diff:.2e} "
                   f"(allowed {p.allowed:.1e}), arg-max agreement {p.argmax_agreement:.0%} "
                   f"on inputs {', '.join('x'.join(map(str, s)) for s in p.shapes)}")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the exporter's own chatter off the user's screen unless -vv: what it prints on
    stdout goes to the log at DEBUG, and its logger's notices (optional operator libraries
    not installed, ...) are raised to ERROR while it runs."""
    buf = io.StringIO()
    exporter_log = logging.getLogger("torch.onnx")
    old = exporter_log.level
    if logging.getLogger("medforensics").getEffectiveLevel() > logging.DEBUG:
        exporter_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(buf):
            yield
    finally:
        exporter_log.setLevel(old)
        for line in buf.getvalue().splitlines():
            if line.strip():
                log.debug("exporter: %s", line)


@app.command("seal")
def seal_cmd(
    run: Path = typer.Argument(..., help="Run directory written before run manifests."),
) -> None:
    """Vouch for a run as it is now: hash its files into its run manifest (run.json).

    For runs written before run manifests (their verdicts say run_integrity 'unverified').
    Check the run first: after sealing, any change to its files is refused when it loads."""
    from medforensics.models.runfiles import seal_run

    try:
        path = seal_run(run)
    except MedForensicsError as exc:
        fail(exc)
    typer.echo(f"wrote {path}")
