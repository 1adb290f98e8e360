"""``build_*`` functions of source-identification training: the only code that reads a
:class:`~medforensics.training.config.TrainConfig`.

From a resolved configuration and the manifest rows they build what the one loop
(:func:`medforensics.training.loop.fit`) needs: the model (:func:`build_model`), its Adam
optimizer, the loss (:func:`source_loss`, cross-entropy plus the outlier-exposure term), the
datasets and sampler (:func:`build_data`: Deep-RSI's class weighting for ``deep-rsi`` and
``patch``, DeepMammo's balanced batches for ``deepmammo``), the batches of an epoch and the
image-level validation (:func:`build_validate`); :func:`build_trainable` ties them together.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from medforensics.common.hashing import file_sha256
from medforensics.data.datasets import (
    MemoryImageSource,
    PaperImageDataset,
    PatchDataset,
    PatchSetDataset,
    RoutedImageSource,
)
from medforensics.data.store import identity_preprocess
from medforensics.errors import ManifestError
from medforensics.eval.classification import confusion_matrix
from medforensics.models.patch import aggregate_patch_logprobs
from medforensics.models.registry import create_model
from medforensics.synth.outliers import OUTLIER_LABEL, write_outlier_images
from medforensics.training.config import TrainConfig, epoch_lr
from medforensics.training.distributed import all_reduce_sum, barrier, seed_worker
from medforensics.training.loop import Trainable, Validation
from medforensics.training.samplers import BalancedBatchSampler, ClassWeightedSampler

log = logging.getLogger(__name__)

__all__ = ["TRAIN_SPLIT", "VAL_SPLIT", "TEST_SPLIT", "select_rows", "outlier_rows",
           "build_model", "build_data", "build_validate", "build_trainable", "make_loader",
           "source_loss"]

TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT = "train", "val", "test"


def select_rows(
    rows: Sequence[Mapping[str, Any]], label: str
) -> tuple[list[dict], list[dict], list[str]]:
    """Split rows into (train, val, classes). Test rows are counted, never returned.

    Only ``status == "eligible"`` rows with a non-empty ``label`` are used; every other row is
    counted and logged. Validation rows of a class without training rows are dropped.

    Raises:
        ManifestError: no rows, missing columns, or fewer than 2 training classes.
    """
    if not rows:
        raise ManifestError("the manifest has no rows")
    missing = [c for c in ("path", "split", "status", label) if c not in rows[0]]
    if missing:
        hint = " (run `medforensics split` first)" if "split" in missing else ""
        raise ManifestError(f"manifest lacks column(s) {', '.join(missing)}{hint}")
    train_rows: list[dict] = []
    val_rows: list[dict] = []
    skipped: Counter[str] = Counter()
    for row in rows:
        split = str(row.get("split") or "").strip()
        if split == TEST_SPLIT:
            skipped["test split (held out)"] += 1
            continue
        if split not in (TRAIN_SPLIT, VAL_SPLIT):
            skipped[f"split={split!r}"] += 1
            continue
        status = str(row.get("status") or "")
        if status != "eligible":
            skipped[f"{split}: status {status or 'empty'}"] += 1
            continue
        if not str(row.get(label) or "").strip():
            skipped[f"{split}: empty {label}"] += 1
            continue
        (train_rows if split == TRAIN_SPLIT else val_rows).append(dict(row))
    for reason, n in sorted(skipped.items()):
        log.info("not used for training: %d row(s), %s", n, reason)
    classes = sorted({str(r[label]) for r in train_rows})
    if len(classes) < 2:
        raise ManifestError(
            f"need at least 2 classes of {label!r} among eligible train rows, found "
            f"{len(classes)} ({len(train_rows)} rows)"
        )
    unseen = Counter(str(r[label]) for r in val_rows if str(r[label]) not in classes)
    if unseen:
        log.warning(
            "validation rows whose %s has no training rows are not validated: %s",
            label, ", ".join(f"{k} ({v})" for k, v in sorted(unseen.items())),
        )
        val_rows = [r for r in val_rows if str(r[label]) in classes]
    assert all(r["split"] != TEST_SPLIT for r in train_rows + val_rows), "test row leaked"
    return train_rows, val_rows, classes


def outlier_rows(cfg: TrainConfig, out_dir: Path, is_main: bool) -> list[dict[str, Any]]:
    """Training rows of ``cfg.outlier_devices`` procedurally drawn devices (rank 0 writes)."""
    folder = out_dir / "outlier_devices"
    if is_main:
        rows = write_outlier_images(folder, devices=int(cfg.outlier_devices), seed=cfg.seed)
    barrier()
    if not is_main:
        rows = [{"path": str(p), "status": "eligible"} for p in sorted(folder.glob("*.png"))]

    # sha256 keys the patch positions by content, so a run in another folder draws the same.
    return [{"path": r["path"], "status": "eligible", "split": TRAIN_SPLIT,
             cfg.label: OUTLIER_LABEL, "PatientID": f"outlier-{i}",
             "sha256": file_sha256(r["path"])}
            for i, r in enumerate(rows)]


def build_model(cfg: TrainConfig, n_classes: int, device: torch.device) -> nn.Module:
    """The preset's network (``create_model``) on ``device``; ``patch`` gets ``cfg.patch``."""
    model_kwargs = dict(cfg.model_kwargs)
    if cfg.preset == "patch":
        model_kwargs.setdefault("patch", cfg.patch)
    return create_model(cfg.preset, n_classes, **model_kwargs).to(device)


def build_data(
    cfg: TrainConfig,
    train_rows: list[dict],
    val_rows: list[dict],
    classes: list[str],
    world: int,
    rank: int,
    image_source: Any = None,
) -> tuple[Dataset, Any, Dataset | None]:
    """Training dataset, its (batch) sampler, validation dataset (or None)."""
    budget = int(cfg.cache_mb) << 20
    if cfg.preset == "patch":
        source = image_source if image_source is not None else MemoryImageSource(budget)
        train_ds: Dataset = PatchDataset(
            train_rows, cfg.label, classes, patch=cfg.patch,
            patches_per_image=cfg.patches_per_image, seed=cfg.seed, image_cache=source,
        )
        val_ds = (
            PatchSetDataset(val_rows, cfg.label, classes, patch=cfg.patch,
                            n_patches=cfg.val_patches, seed=cfg.seed, image_cache=source)
            if val_rows else None
        )
    else:
        paper_source, preprocess = image_source, None
        if getattr(image_source, "has_paper", False):
            # a prepared store with the 256x256 paper variants: no decode, no resize per epoch
            paper_source, preprocess = image_source.paper_source(), identity_preprocess
            log.info("paper preset: using the store's cached 256x256 paper variants")
        train_ds = PaperImageDataset(train_rows, cfg.label, classes, image_cache=paper_source,
                                     preprocess=preprocess, max_bytes=budget // 2)
        val_ds = (
            PaperImageDataset(val_rows, cfg.label, classes, image_cache=paper_source,
                              preprocess=preprocess, max_bytes=budget // 2)
            if val_rows else None
        )
    if cfg.workers > 0:
        # Worker processes are re-created every epoch: do the per-image work (decode, patch
        # position pools) once here so that they inherit it.
        for ds in (train_ds, val_ds):
            if hasattr(ds, "prepare"):
                ds.prepare()
    targets = list(train_ds.targets)
    tag = cfg.preset == "patch"
    # Outlier-device rows are drawn as one more class but do not lengthen the epoch.
    n_known = sum(1 for t in targets if classes[t] != OUTLIER_LABEL)
    if cfg.sampling == "weighted":
        sampler: Any = ClassWeightedSampler(
            targets, num_samples=n_known, seed=cfg.seed, num_replicas=world, rank=rank,
            tag_draws=tag,
        )
    else:
        sampler = BalancedBatchSampler(
            targets, cfg.batch_size, seed=cfg.seed, num_replicas=world, rank=rank,
            tag_draws=tag,
        )
    return train_ds, sampler, val_ds


def make_loader(
    ds: Dataset, cfg: TrainConfig, epoch: int, *, sampler: Any = None, batch_sampler: Any = None,
    batch_size: int = 1,
) -> DataLoader:
    """A DataLoader over ``ds`` whose generator is seeded by (``cfg.seed``, ``epoch``)."""
    g = torch.Generator()
    g.manual_seed(cfg.seed * 1_000_003 + epoch)
    kwargs: dict[str, Any] = {}
    if cfg.workers > 0:
        kwargs.update(worker_init_fn=seed_worker, persistent_workers=False)
    if batch_sampler is not None:
        return DataLoader(ds, batch_sampler=batch_sampler, num_workers=cfg.workers,
                          generator=g, **kwargs)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, shuffle=False,
                      num_workers=cfg.workers, generator=g, **kwargs)


def _epoch_batches(cfg: TrainConfig, train_ds: Dataset, sampler: Any, epoch: int
                   ) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of ``epoch``: the sampler's and dataset's draws for that epoch."""
    sampler.set_epoch(epoch)
    if hasattr(train_ds, "set_epoch"):
        train_ds.set_epoch(epoch)
    if isinstance(sampler, BalancedBatchSampler):
        return make_loader(train_ds, cfg, epoch, batch_sampler=sampler)
    return make_loader(train_ds, cfg, epoch, sampler=sampler, batch_size=cfg.batch_size)


def source_loss(logits: torch.Tensor, y: torch.Tensor, outlier_weight: float = 0.5
                ) -> torch.Tensor:
    """Cross-entropy on known classes plus the outlier-exposure term.

    Rows with ``y == C`` (C = ``logits.shape[1]``) are outlier-device patches; their term is
    the cross-entropy to the uniform distribution, ``-mean_c log softmax(logits)_c``, weighted
    by ``outlier_weight``. Both terms are averaged over the whole batch.

    Args:
        logits: (B, C) float logits.
        y: (B,) int64 targets in ``0..C`` (``C`` = outlier).
        outlier_weight: weight of the outlier term.

    Returns:
        Scalar loss.
    """
    n_classes = logits.shape[1]
    known = y < n_classes
    if bool(known.all()):
        return F.cross_entropy(logits, y)
    b = logits.shape[0]
    loss = logits.new_zeros(())
    if bool(known.any()):
        loss = F.cross_entropy(logits[known], y[known], reduction="sum") / b
    uniform = -torch.log_softmax(logits[~known], dim=1).mean(dim=1)
    return loss + float(outlier_weight) * uniform.sum() / b


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    if len(y_true) == 0:
        return float("nan")
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


@torch.no_grad()
def _validate(
    net: nn.Module, ds: Dataset, cfg: TrainConfig, n_classes: int, device: torch.device,
    world: int, rank: int,
) -> Validation:
    """Image-level validation; sharded over ranks and all-reduced (same result everywhere).

    For ``patch`` an image's prediction averages the log-probabilities of its ``val_patches``
    fixed patches (:func:`medforensics.models.patch.aggregate_patch_logprobs`). Score: the
    balanced accuracy; loss: the image-level negative log-likelihood.
    """
    net.eval()
    n = len(ds)
    mine = list(range(rank, n, world))
    logp = torch.zeros((n, n_classes), dtype=torch.float64)
    patch_correct = torch.zeros(2, dtype=torch.float64)  # (correct patches, patches)
    bs = max(1, cfg.batch_size // (cfg.val_patches if cfg.preset == "patch" else 1))
    pos = 0
    for x, y in make_loader(Subset(ds, mine), cfg, 0, batch_size=bs):
        x = x.to(device)
        if cfg.preset == "patch":
            b, k = x.shape[:2]
            logits = net(x.reshape(b * k, *x.shape[2:])).reshape(b, k, -1)
            patch_correct[0] += float((logits.argmax(-1).cpu() == y[:, None]).sum())
            patch_correct[1] += b * k
            out = aggregate_patch_logprobs(logits)
        else:
            out = torch.log_softmax(net(x), dim=-1)
        logp[mine[pos : pos + len(y)]] = out.double().cpu()
        pos += len(y)
    logp = all_reduce_sum(logp, device)
    patch_correct = all_reduce_sum(patch_correct, device)
    targets = torch.as_tensor(ds.targets, dtype=torch.long)
    pred = logp.argmax(1)
    metrics = {
        "val_loss": float(F.nll_loss(logp, targets)),
        "val_acc": float((pred == targets).double().mean()),
        "val_bacc": _balanced_accuracy(targets.numpy(), pred.numpy(), n_classes),
        "val_images": n,
    }
    if cfg.preset == "patch":
        metrics["val_patch_acc"] = float(patch_correct[0] / max(patch_correct[1], 1))
    return Validation(metrics, score=metrics["val_bacc"], loss=metrics["val_loss"])


def build_validate(cfg: TrainConfig, val_ds: Dataset | None, n_classes: int,
                   device: torch.device, world: int, rank: int) -> Any:
    """``net -> Validation`` on ``val_ds`` (None without validation rows)."""
    if val_ds is None:
        return None
    return lambda net: _validate(net, val_ds, cfg, n_classes, device, world, rank)


def build_trainable(cfg: TrainConfig, train_rows: list[dict], val_rows: list[dict],
                    classes: list[str], device: torch.device, world: int, rank: int,
                    image_source: Any = None) -> Trainable:
    """Everything the loop needs for source identification, in the seeded order.

    The model is built first (its initialisation draws from the global torch RNG seeded by
    the caller), then the optimizer and the data; an ``image_source`` is routed around the
    outlier-device images, which are read from disk.
    """
    net = build_model(cfg, len(classes), device)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    data_classes = classes + ([OUTLIER_LABEL] if cfg.outlier_devices else [])
    if cfg.outlier_devices and image_source is not None:
        image_source = RoutedImageSource(
            image_source, [r["path"] for r in train_rows if r[cfg.label] == OUTLIER_LABEL])
    train_ds, sampler, val_ds = build_data(cfg, train_rows, val_rows, data_classes, world, rank,
                                           image_source)
    weight = float(cfg.outlier_weight)
    return Trainable(
        net=net, optimizer=optimizer,
        criterion=lambda logits, y: source_loss(logits, y, weight),
        batches=lambda epoch: _epoch_batches(cfg, train_ds, sampler, epoch),
        lr_at=lambda epoch: epoch_lr(cfg, epoch),
        validate=build_validate(cfg, val_ds, len(classes), device, world, rank),
        select=str(cfg.select), device=device,
    )
