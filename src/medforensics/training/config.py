"""The source-identification training configuration (:class:`TrainConfig`) and its rules.

``None`` fields take the preset's training defaults registered with the model
(:func:`medforensics.models.registry.training_defaults`); when resuming they take the value of
the run being resumed instead (:func:`inherit_from_run`), and a resumed run must keep the
settings that shape its weights (:func:`check_resume_config`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medforensics.errors import ConfigError
from medforensics.models.registry import training_defaults
from medforensics.training.checkpoint import latest_checkpoint

__all__ = ["TrainConfig", "SOURCE_PRESETS", "LABEL_COLUMNS", "SAMPLINGS", "SCHEDULES",
           "SELECTS", "epoch_lr", "inherit_from_run", "check_resume_config"]

#: Registered presets this trainer trains (``ela-cnn`` is trained by ``forgery train``).
SOURCE_PRESETS = ("patch", "deep-rsi", "deepmammo")
LABEL_COLUMNS = ("manufacturer", "model", "unit")
SAMPLINGS = ("weighted", "balanced")
SCHEDULES = ("constant", "cosine")
SELECTS = ("bacc", "loss")
#: Settings that shape the weights: a resumed run must keep them.
RESUME_KEYS = ("label", "preset", "batch_size", "lr", "seed", "patch", "patches_per_image",
               "val_patches", "sampling", "lr_schedule", "select", "model_kwargs")
#: Settings that runs written before the setting existed used implicitly.
LEGACY_CONFIG = {"select": "bacc"}
#: Fields filled from the preset's registered defaults (or the resumed run).
_DEFAULTED = ("epochs", "batch_size", "lr", "sampling", "patches_per_image", "val_patches",
              "lr_schedule", "seed", "patch", "select", "outlier_devices", "outlier_weight")


@dataclass
class TrainConfig:
    """Training configuration. ``None`` fields take the preset's registered defaults.

    When resuming, ``None`` fields take the value of the run being resumed instead, so
    ``resume=True`` alone continues with the same settings (``epochs`` may be raised).

    Attributes:
        out_dir: run directory.
        label: label column: ``manufacturer``, ``model`` (default) or ``unit``.
        preset: ``patch`` (default), ``deep-rsi`` or ``deepmammo``.
        epochs: total number of epochs (also when resuming).
        batch_size: training batch size (patches for ``patch``, images otherwise).
        lr: Adam learning rate.
        seed: seed of initialisation, sampling and patch positions (default 0).
        device: ``cpu`` or ``cuda`` (``cuda:N`` also accepted).
        resume: continue from the last complete checkpoint in ``out_dir``.
        patch: patch side for the ``patch`` preset (native pixels, default 64).
        patches_per_image: training patches drawn per training image and epoch (``patch``).
        val_patches: fixed patches per validation image (``patch``).
        sampling: ``weighted`` (Deep-RSI) or ``balanced`` (DeepMammo batches).
        select: best-epoch criterion: ``bacc`` (highest validation balanced accuracy, ties to
            the lower loss; the papers) or ``loss`` (lowest validation loss; ``patch``).
        lr_schedule: ``constant`` (the papers) or ``cosine`` (per-epoch cosine decay from
            ``lr`` towards 0 over ``epochs``; a function of the epoch number only, so resuming
            needs no scheduler state).
        workers: DataLoader worker processes (0 = in-process, deterministic and simplest).
        cache_mb: in-memory budget for decoded images.
        progress: show a progress bar on a terminal (:mod:`medforensics.common.progress`).
        model_kwargs: extra keyword arguments for ``create_model``.
        outlier_devices: procedurally drawn devices that are in no class
            (:mod:`medforensics.synth.outliers`), trained towards a uniform output (outlier
            exposure) so that pixels of an unseen device do not get a confident name;
            0 = off (the paper presets' default: the papers did not use it).
        outlier_weight: weight of the outlier term in the loss.
    """

    out_dir: str
    label: str | None = None
    preset: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int | None = None
    device: str = "cpu"
    resume: bool = False
    patch: int | None = None
    patches_per_image: int | None = None
    val_patches: int | None = None
    sampling: str | None = None
    lr_schedule: str | None = None
    select: str | None = None
    workers: int = 0
    cache_mb: int = 2048
    progress: bool = True
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    outlier_devices: int | None = None
    outlier_weight: float | None = None

    def resolved(self) -> TrainConfig:
        """A copy with every ``None`` replaced by the preset default; validates values.

        Raises:
            ConfigError: unknown preset/label/sampling or a non-positive number.
        """
        label = "model" if self.label is None else self.label
        preset = "patch" if self.preset is None else self.preset
        if preset not in SOURCE_PRESETS:
            raise ConfigError(
                f"unknown preset {preset!r}; choose one of {', '.join(SOURCE_PRESETS)}"
            )
        if label not in LABEL_COLUMNS:
            raise ConfigError(
                f"unknown label column {label!r}; choose one of {', '.join(LABEL_COLUMNS)}"
            )
        d = training_defaults(preset).as_dict() | {"seed": 0}
        if d["patch"] is None:
            d["patch"] = 64  # recorded for the image presets too; only ``patch`` uses it
        out = dataclasses.replace(self, out_dir=str(self.out_dir), label=label, preset=preset)
        for name in _DEFAULTED:
            if getattr(out, name) is None:
                setattr(out, name, d.get(name))
        out._check()
        return out

    def _check(self) -> None:
        """Refuse out-of-range values of a resolved configuration (ConfigError)."""
        if int(self.outlier_devices) < 0 or int(self.outlier_devices) > 1000:
            raise ConfigError(f"outlier_devices must be in 0..1000, got {self.outlier_devices}")
        if self.outlier_devices and self.preset != "patch":
            raise ConfigError("outlier exposure is implemented for the patch preset only")
        if not (math.isfinite(float(self.outlier_weight)) and float(self.outlier_weight) >= 0):
            raise ConfigError(f"outlier_weight must be >= 0, got {self.outlier_weight}")
        for name, allowed in (("select", SELECTS), ("sampling", SAMPLINGS),
                              ("lr_schedule", SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"unknown {name} {getattr(self, name)!r}; choose one of {allowed}")
        for name in ("epochs", "batch_size", "patch"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.preset == "patch":
            for name in ("patches_per_image", "val_patches"):
                if int(getattr(self, name)) < 1:
                    raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr or self.lr <= 0 or not math.isfinite(self.lr):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")


def epoch_lr(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of ``epoch`` (1-based) under ``cfg.lr_schedule``."""
    if cfg.lr_schedule == "cosine" and cfg.epochs > 1:
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / cfg.epochs))
    return float(cfg.lr)


def inherit_from_run(config: TrainConfig) -> TrainConfig:
    """Fill ``None`` fields of ``config`` from the run in ``config.out_dir`` (if there is one)."""
    path = Path(config.out_dir) / "config.json"
    if latest_checkpoint(Path(config.out_dir) / "checkpoints") is None or not path.is_file():
        return config
    try:
        saved = LEGACY_CONFIG | json.loads(path.read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot read the run configuration {path}: {exc}") from None
    changes = {
        f.name: saved[f.name]
        for f in dataclasses.fields(config)
        if getattr(config, f.name) is None and saved.get(f.name) is not None
    }
    return dataclasses.replace(config, **changes)


def check_resume_config(saved: Mapping[str, Any], cfg: TrainConfig, sha: str,
                        classes: list[str]) -> None:
    """Refuse to resume a run (checkpoint ``info`` = ``saved``) made with other settings.

    Raises:
        ConfigError: a setting of :data:`RESUME_KEYS`, the manifest or the classes differ.
    """
    run_cfg = LEGACY_CONFIG | saved["config"]
    diffs = [
        f"{k}: run has {run_cfg.get(k)!r}, now {getattr(cfg, k)!r}"
        for k in RESUME_KEYS
        if run_cfg.get(k) != getattr(cfg, k)
    ]
    # the checkpoint's name for the training manifest's hash (see run_info in engine.train)
    if saved.get("manifest_sha256") != sha:
        diffs.append("the manifest changed (sha256 differs)")
    if saved.get("classes") != classes:
        diffs.append(f"classes: run has {saved.get('classes')}, now {classes}")
    if diffs:
        raise ConfigError("cannot resume with different settings: " + "; ".join(diffs))
