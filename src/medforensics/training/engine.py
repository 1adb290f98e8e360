"""Training a source-identification model: :func:`train`, the command behind ``medforensics
train``.

:func:`train` trains one preset (``patch``, ``deep-rsi`` or ``deepmammo``) on one label column
(``manufacturer``, ``model`` or ``unit``) of a split manifest:

* Rows with ``split == "train"`` train, rows with ``split == "val"`` validate after every
  epoch. Rows of the test split are never opened (only their ``split`` value is looked at);
  the engine asserts that no test row reaches a dataset. Only ``status == "eligible"`` rows
  are used; every other row is counted and reported in the log.
* The configuration (:class:`~medforensics.training.config.TrainConfig`) takes its defaults
  from the preset's registration (:func:`medforensics.models.registry.training_defaults`).
* The model, optimizer, loss, data and validation come from the ``build_*`` functions of
  :mod:`medforensics.training.builders`; the epochs, best-epoch tracking, checkpoints, resume
  and DDP are the one loop's (:func:`medforensics.training.loop.fit`).
* The final model (best epoch's weights) is written with
  :func:`medforensics.models.io.save_model` into the run directory.

Run directory layout::

    RUN/config.json            resolved training configuration
    RUN/metrics.jsonl          one JSON object per epoch
    RUN/metrics.csv            the same as CSV
    RUN/checkpoints/LATEST     name of the last complete checkpoint
    RUN/checkpoints/epoch-NNNN/  (see medforensics.training.checkpoint)
    RUN/model.safetensors, RUN/model.json   final model (best epoch)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medforensics.common.hashing import manifest_sha256
from medforensics.data.manifest import read_manifest
from medforensics.errors import ConfigError
from medforensics.models.io import save_model
from medforensics.synth.outliers import OUTLIER_LABEL
from medforensics.synth.simulate import load_devices
from medforensics.training.builders import (
    build_trainable,
    outlier_rows,
    select_rows,
    source_loss,
)
from medforensics.training.checkpoint import copy_state_exact, latest_checkpoint
from medforensics.training.config import (
    TrainConfig,
    check_resume_config,
    inherit_from_run,
)
from medforensics.training.distributed import (
    Determinism,
    barrier,
    dist_info,
    init_distributed_from_env,
    resolve_device,
    seed_everything,
)
from medforensics.training.loop import FitResult, LoopFiles, fit

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "train", "source_loss", "init_distributed_from_env"]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        out_dir: run directory (holds the final model).
        classes: class names in output order.
        best_epoch: epoch whose weights were saved as the final model.
        best_val_balanced_accuracy: its validation balanced accuracy (NaN without val data).
        epochs_run: epochs trained by this call (0 if the run was already complete).
        metrics: all per-epoch metric records of the run (including earlier, resumed ones).
        config: the resolved configuration used.
    """

    out_dir: Path
    classes: list[str]
    best_epoch: int
    best_val_balanced_accuracy: float
    epochs_run: int
    metrics: list[dict[str, Any]]
    config: TrainConfig


def _config(config: TrainConfig | None, kwargs: dict[str, Any]) -> TrainConfig:
    """The resolved configuration of a call (keyword arguments override ``config``)."""
    if config is None:
        try:
            config = TrainConfig(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"bad training arguments: {exc}") from None
    elif kwargs:
        config = dataclasses.replace(config, **kwargs)
    if config.resume:
        config = inherit_from_run(config)
    return config.resolved()


def train(
    manifest: str | Path | Sequence[Mapping[str, Any]],
    config: TrainConfig | None = None,
    *,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    image_source: Any = None,
    **kwargs: Any,
) -> TrainResult:
    """Train a source-identification model on a split manifest (see module docstring).

    Args:
        manifest: manifest CSV path (read with ``read_manifest``) or its rows (dicts).
        config: a :class:`TrainConfig`; or pass its fields as keyword arguments
            (``out_dir=...`` is required then).
        on_epoch_end: called with the epoch's metrics record after its checkpoint is written
            (rank 0 and others alike); an exception raised there stops training, as a kill
            would.
        image_source: an :class:`medforensics.data.datasets.ImageSource` to take pixels
            from (default: decode with ``read_image`` into an in-memory LRU of ``cache_mb``).
        **kwargs: TrainConfig fields (override ``config``'s).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ConfigError: bad settings, CUDA unavailable, resuming with other settings, or an
            existing run in ``out_dir`` without ``resume``.
        ManifestError: missing columns, fewer than 2 classes.
        medforensics.errors.ReadError: a training/validation image cannot be read.
    """
    cfg = _config(config, kwargs)
    device = resolve_device(cfg.device)
    world, rank = dist_info()
    is_main = rank == 0
    out_dir = Path(cfg.out_dir)
    rows = read_manifest(manifest) if isinstance(manifest, (str, Path)) else [
        dict(r) for r in manifest]
    sha = manifest_sha256(manifest)
    train_rows, val_rows, classes = select_rows(rows, cfg.label)
    del rows
    if cfg.outlier_devices:
        train_rows += outlier_rows(cfg, out_dir, is_main)
    if not val_rows:
        log.warning("no validation rows: the last epoch is kept as the final model")
    ckpt_root = out_dir / "checkpoints"
    if not cfg.resume and ckpt_root.exists() and latest_checkpoint(ckpt_root) is not None:
        raise ConfigError(
            f"{out_dir} already holds a training run; pass resume (--resume) to continue it "
            "or choose another output directory"
        )
    # the checkpoints' and config.json's run description (its manifest key predates
    # model.json's training_manifest_sha256 and stays, so old runs resume)
    run_info = {"config": dataclasses.asdict(cfg) | {"resume": False}, "classes": classes,
                "manifest_sha256": sha}
    with Determinism(device):
        seed_everything(cfg.seed)
        trainable = build_trainable(cfg, train_rows, val_rows, classes, device, world, rank,
                                    image_source)
        files = LoopFiles(
            out_dir=out_dir, info=run_info, resume=cfg.resume, metrics_csv=True,
            check_resume=lambda saved: check_resume_config(saved, cfg, sha, classes),
            label="epoch", progress=cfg.progress, on_epoch_end=on_epoch_end,
            on_start=lambda: _start_run(cfg, run_info, world, device, len(train_rows),
                                        len(val_rows)),
        )
        res = fit(trainable, int(cfg.epochs), files)
        if is_main:
            _save_final(trainable.net, res, cfg, classes, sha, out_dir, train_rows, val_rows)
        barrier()
    return TrainResult(
        out_dir=out_dir, classes=classes, best_epoch=res.best_epoch,
        best_val_balanced_accuracy=(res.best_score if trainable.validate is not None
                                    else float("nan")),
        epochs_run=res.epochs_run, metrics=res.records if is_main else [], config=cfg,
    )


def _start_run(cfg: TrainConfig, run_info: dict[str, Any], world: int, device: torch.device,
               n_train: int, n_val: int) -> None:
    """Write ``config.json`` (the run description) and log what is about to train."""
    Path(cfg.out_dir, "config.json").write_text(
        json.dumps(run_info | {"world_size": world}, indent=1), encoding="utf-8")
    log.info(
        "training %s on %s: %d classes, %d train / %d val images, %d epochs, "
        "batch %d, lr %g, device %s, world %d, %d CPU thread(s)",
        cfg.preset, cfg.label, len(run_info["classes"]), n_train, n_val, cfg.epochs,
        cfg.batch_size, cfg.lr, device, world, torch.get_num_threads(),
    )


def _all_simulated(rows: Any) -> bool:
    """Whether every row's image lies in an archive written by the project's simulator.

    The simulator writes ``devices.json`` (generator ``medforensics.synth.simulate``) at the
    archive root, at most three folders above each image.
    """
    known: dict[Path, bool] = {}

    def simulated(folder: Path, depth: int = 3) -> bool:
        if folder in known:
            return known[folder]
        marker = folder / "devices.json"
        hit = False
        if marker.is_file():
            try:
                load_devices(folder)
                hit = True
            except ConfigError:
                hit = False
        elif depth > 0 and folder.parent != folder:
            hit = simulated(folder.parent, depth - 1)
        known[folder] = hit
        return hit

    seen = False
    for row in rows:
        seen = True
        if not simulated(Path(str(row["path"])).resolve().parent):
            return False
    return seen



def _save_final(
    net: nn.Module,
    res: FitResult,
    cfg: TrainConfig,
    classes: list[str],
    sha: str,
    out_dir: Path,
    train_rows: list[dict],
    val_rows: list[dict],
) -> None:
    """Write the best epoch's weights with ``save_model`` (the live model is not modified)."""
    best_epoch, best_score = res.best_epoch, res.best_score
    final = copy.deepcopy(net)
    copy_state_exact(final, res.best_state)
    final.eval()
    description = (
        f"native stored values, {cfg.patch}x{cfg.patch} patches (never resized), normalised "
        f"per patch inside the model; image score = mean patch log-probability over "
        f"{cfg.val_patches} fixed patches"
        if cfg.preset == "patch"
        else "paper preprocessing: min-max rescale to 8-bit (0..255) and resize to 256x256 "
        "(medforensics.data.transforms.paper_preprocess), as in the Deep-RSI/DeepMammo papers"
    )
    # input_spec and software_version are filled in by save_model from the model itself.
    metadata = {
        "task": "source-identification",
        "classes": classes,
        "label_column": cfg.label,
        "preset": cfg.preset,
        "preprocess": dict(getattr(net, "input_spec", {})).get("preprocess"),
        "preprocessing_description": description,
        "training_manifest_sha256": sha,
        "torch_version": torch.__version__,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "best_epoch": best_epoch,
        "best_val_balanced_accuracy": best_score if val_rows else None,
        "train_images": len(train_rows),
        "val_images": len(val_rows),
        "val_patches": cfg.val_patches if cfg.preset == "patch" else None,
        "model_knowledge": ("simulated devices"
                            if _all_simulated(r for r in train_rows
                                              if r.get(cfg.label) != OUTLIER_LABEL)
                            else None),
        "outlier_exposure": ({"devices": int(cfg.outlier_devices),
                              "weight": float(cfg.outlier_weight)}
                             if cfg.outlier_devices else None),
        "training": {k: v for k, v in dataclasses.asdict(cfg).items()
                     if k not in ("out_dir", "resume", "progress")},
    }
    save_model(out_dir, final, metadata)
    log.info("saved final model (epoch %d) to %s", best_epoch, out_dir)
