"""The one training loop: epochs, validation, best-epoch tracking, checkpoints, resume, DDP.

Every trained network goes through :func:`fit`. What differs between presets is built before
the loop by ``build_*`` functions (source identification: :mod:`medforensics.training.
builders`; the ELA-CNN forgery classifier: :mod:`medforensics.forgery.train`) and handed over
as a :class:`Trainable`: the network, its optimizer, the loss, the batches of an epoch, the
learning rate of an epoch, the validation and the best-epoch rule. The loop itself reads no
configuration.

Per epoch: set the learning rate, train on the epoch's batches (constrained layers are
projected after every optimizer step), validate, keep the best weights, append the epoch's
record to ``metrics.jsonl`` (and ``metrics.csv`` when asked), then write a checkpoint (model,
optimizer, RNG states, best so far; :mod:`medforensics.training.checkpoint`, no pickle).
``resume=True`` continues from the last complete checkpoint and, on CPU, ends with weights
bit-identical to an uninterrupted run.

Distributed: when ``torch.distributed`` is initialised the network is wrapped in
DistributedDataParallel, the training statistics are all-reduced, validation runs with rank 0's
buffers, and only rank 0 writes files and logs epochs.

Files under ``RUN/``: ``metrics.jsonl`` (one JSON object per epoch), optionally
``metrics.csv``, ``checkpoints/LATEST`` and ``checkpoints/epoch-NNNN/``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from medforensics.common.progress import ProgressReport, library_mode
from medforensics.models.constrained import project_constraints
from medforensics.training.checkpoint import (
    capture_rng_state,
    copy_state_exact,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from medforensics.training.distributed import (
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    dist_info,
)

log = logging.getLogger(__name__)

__all__ = ["Validation", "Trainable", "LoopFiles", "FitResult", "fit", "train_one_epoch",
           "read_metrics", "write_metrics", "SELECT_RULES"]

#: Best-epoch rules: ``bacc``/``acc`` keep the highest validation score (``bacc``: ties to the
#: lower validation loss, then the earlier epoch; ``acc``: ties to the earlier epoch),
#: ``loss`` the lowest validation loss (ties to the earlier epoch).
SELECT_RULES = ("bacc", "acc", "loss")


@dataclass
class Validation:
    """One validation pass.

    Attributes:
        metrics: what goes into the epoch record (``val_*`` keys).
        score: higher is better (rules ``bacc`` and ``acc``).
        loss: lower is better (rule ``loss``; the tie-break of ``bacc``).
    """

    metrics: dict[str, float]
    score: float
    loss: float = 0.0


@dataclass
class Trainable:
    """What the builders hand the loop.

    Attributes:
        net: the network (unwrapped; the loop wraps it for DDP), on ``device``.
        optimizer: its optimizer.
        criterion: ``(logits (B, C), targets (B,) int64) -> scalar loss``. Targets equal to
            ``C`` mark rows without a class (outlier exposure): they are not counted in the
            training accuracy.
        batches: ``epoch (1-based) -> iterable of (inputs, targets)``; the epoch's order.
        lr_at: ``epoch -> learning rate`` set on every parameter group before the epoch.
        validate: ``net -> Validation`` (the net in eval mode is the caller's job), or None
            without a validation split: then the last epoch is the best.
        select: best-epoch rule, one of :data:`SELECT_RULES`.
        device: where ``net`` lives.
    """

    net: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]
    lr_at: Callable[[int], float]
    validate: Callable[[nn.Module], Validation] | None
    select: str
    device: torch.device


@dataclass
class LoopFiles:
    """Where and how the loop writes, and how it resumes.

    Attributes:
        out_dir: run directory (``metrics.jsonl`` and ``checkpoints/`` inside).
        info: JSON-able run description stored in every checkpoint.
        resume: continue from the last complete checkpoint (a new run when there is none).
        check_resume: called with the checkpoint's ``info`` before resuming; raises
            ConfigError when the run was made with other settings.
        metrics_csv: also write ``metrics.csv``.
        label: progress-bar and log prefix.
        progress: show a per-epoch progress bar (rank 0 only; on a terminal only, the epoch
            log lines say how far training is otherwise).
        on_epoch_end: called with every epoch's record after its checkpoint is written (all
            ranks); an exception raised there stops training, as a kill would.
        on_start: called on rank 0 once a resumed run has passed ``check_resume``, before the
            first epoch (e.g. to write the run's configuration file).
    """

    out_dir: Path
    info: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    check_resume: Callable[[Mapping[str, Any]], None] | None = None
    metrics_csv: bool = False
    label: str = "epoch"
    progress: bool = True
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None
    on_start: Callable[[], None] | None = None


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        best_state: state dict of the best epoch (on the training device).
        best_epoch: that epoch (0 when no epoch ran).
        best_score: its validation score (the epoch number without validation).
        records: every epoch record of the run, resumed ones included (rank 0; [] elsewhere).
        epochs_run: epochs trained by this call.
    """

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_score: float
    records: list[dict[str, Any]]
    epochs_run: int


@dataclass
class _Best:
    epoch: int = 0
    score: float = -math.inf
    loss: float = math.inf
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def offer(self, rule: str, validated: bool, epoch: int, score: float, loss: float,
              net: nn.Module) -> None:
        """Keep ``net``'s weights when this epoch beats the best under ``rule``."""
        if rule == "loss" and validated:
            better = loss < self.loss
        elif rule == "acc":
            better = score > self.score
        else:
            better = score > self.score or (score == self.score and loss < self.loss)
        if better:
            self.epoch, self.score, self.loss = epoch, score, loss
            self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}


def fit(t: Trainable, epochs: int, files: LoopFiles) -> FitResult:
    """Train ``t`` up to epoch ``epochs`` (see module docstring); resumes when asked.

    Raises:
        ConfigError: (from ``files.check_resume``) resuming a run made with other settings.
        FloatingPointError: the training loss became NaN or infinite.
    """
    world, rank = dist_info()
    is_main = rank == 0
    ckpt_root = files.out_dir / "checkpoints"
    best = _Best(state={k: v.detach().clone() for k, v in t.net.state_dict().items()})
    start = _resume(t, files, best) if files.resume else 0
    if start > epochs:
        log.warning("the run already has %d epochs (more than the %d asked for); "
                    "nothing to train", start, epochs)
    model: nn.Module = t.net
    if world > 1:
        model = DistributedDataParallel(
            t.net, device_ids=[t.device.index] if t.device.type == "cuda" else None)
    records = read_metrics(files.out_dir / "metrics.jsonl", start) if is_main else []
    if is_main:
        files.out_dir.mkdir(parents=True, exist_ok=True)
        if files.on_start is not None:
            files.on_start()
    epochs_run = 0
    for epoch in range(start + 1, epochs + 1):
        t0 = time.perf_counter()
        lr_now = t.lr_at(epoch)
        for group in t.optimizer.param_groups:
            group["lr"] = lr_now
        desc = f"{files.label} {epoch}/{epochs}"
        rec: dict[str, Any] = {"epoch": epoch}
        rec |= train_one_epoch(model, t, t.batches(epoch), desc, files.progress and is_main)
        if t.validate is not None:
            broadcast_buffers(t.net)  # validate every rank with rank 0's BatchNorm statistics
            val = t.validate(t.net)
            rec |= val.metrics
            score, loss = val.score, val.loss
        else:
            score, loss = float(epoch), 0.0  # no validation: the latest epoch is the best
        best.offer(t.select, t.validate is not None, epoch, score, loss, t.net)
        rec["best_epoch"] = best.epoch
        rec["lr"] = lr_now
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        epochs_run += 1
        if is_main:
            records.append(rec)
            write_metrics(files.out_dir, records, csv_too=files.metrics_csv)
            save_checkpoint(
                ckpt_root, epoch=epoch, model_state=t.net.state_dict(), best_state=best.state,
                optimizer_state=t.optimizer.state_dict(), rng_state=capture_rng_state(),
                info=files.info | {"best_epoch": best.epoch, "best_score": best.score,
                                   "best_loss": best.loss},
            )
            _log_epoch(files.label, rec, epochs)
        barrier()
        if files.on_epoch_end is not None:
            files.on_epoch_end(rec)
    return FitResult(best.state, best.epoch, best.score, records, epochs_run)


def _resume(t: Trainable, files: LoopFiles, best: _Best) -> int:
    """Load the last complete checkpoint into ``t`` and ``best``; its epoch (0: none)."""
    path = latest_checkpoint(files.out_dir / "checkpoints")
    if path is None:
        log.info("nothing to resume in %s: starting a new run", files.out_dir)
        return 0
    ck = load_checkpoint(path)
    if files.check_resume is not None:
        files.check_resume(ck.info)
    copy_state_exact(t.net, ck.model)
    t.optimizer.load_state_dict(ck.optimizer)
    best.state = {k: v.to(t.device) for k, v in ck.best_model.items()}
    best.epoch = int(ck.info["best_epoch"])
    # ELA-CNN checkpoints written before the one loop kept the score as "best_val"
    best.score = float(ck.info["best_score"] if "best_score" in ck.info else ck.info["best_val"])
    best.loss = float(ck.info.get("best_loss", math.inf))
    restore_rng_state(ck.rng)
    log.info("resuming %s from epoch %d (best so far: epoch %d)", files.out_dir, ck.epoch,
             best.epoch)
    return ck.epoch


def train_one_epoch(model: nn.Module, t: Trainable,
                    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], desc: str,
                    show: bool) -> dict[str, float]:
    """One pass over ``batches``: forward, loss, backward, step, projection.

    Args:
        model: ``t.net`` or its DDP wrapper (forward and backward go through it).
        t: the trainable (its optimizer, criterion and unwrapped net).
        batches: (inputs, int64 targets) pairs.
        desc: progress-bar text.
        show: show a progress bar (on a terminal only: :mod:`medforensics.common.progress`).

    Returns:
        ``train_loss`` (sample-weighted mean), ``train_acc`` (over rows with a class) and
        ``train_samples``, summed over ranks.
    """
    model.train()
    total_loss, correct, seen, seen_known = 0.0, 0, 0, 0
    total = len(batches) if isinstance(batches, Sized) else None
    # No lines when stderr is redirected: the loop logs one line per epoch instead.
    bar = ProgressReport(desc, total, library_mode(show), unit="batches", every=0)
    try:  # the bar starts with the first batch, after DataLoader workers were forked
        for x, y in batches:
            x = x.to(t.device, non_blocking=True)
            y = y.to(t.device, non_blocking=True)
            t.optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            loss = t.criterion(logits, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} ({desc}); lower the learning rate")
            loss.backward()
            t.optimizer.step()
            project_constraints(t.net)
            n = int(y.shape[0])
            total_loss += float(loss.detach()) * n
            known = y < logits.shape[1]  # outlier-device rows have no class to be right about
            correct += int((logits.detach().argmax(1)[known] == y[known]).sum())
            seen += n
            seen_known += int(known.sum())
            bar.advance(note=f"loss {total_loss / seen:.3f} "
                             f"acc {correct / max(seen_known, 1):.3f}")
    finally:
        bar.close()
    stats = torch.tensor([total_loss, correct, seen, seen_known], dtype=torch.float64)
    total_loss, correct, seen, seen_known = (float(v) for v in all_reduce_sum(stats, t.device))
    return {"train_loss": total_loss / max(seen, 1), "train_acc": correct / max(seen_known, 1),
            "train_samples": int(seen)}


def _log_epoch(label: str, rec: Mapping[str, Any], epochs: int) -> None:
    val = " ".join(f"{name} {rec[key]:.4f}" if name == "loss" else f"{name} {rec[key]:.3f}"
                   for key, name in (("val_loss", "loss"), ("val_acc", "acc"),
                                     ("val_bacc", "bacc")) if key in rec)
    log.info("%s %d/%d: train loss %.4f acc %.3f%s (best epoch %d) %.1fs", label, rec["epoch"],
             epochs, rec["train_loss"], rec["train_acc"], f" val {val}" if val else "",
             rec["best_epoch"], rec["seconds"])


def read_metrics(path: Path, upto_epoch: int) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` up to epoch ``upto_epoch`` ([] without the file)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            if int(rec["epoch"]) <= upto_epoch:
                out.append(rec)
    return out


def write_metrics(out_dir: Path, records: list[dict[str, Any]], *, csv_too: bool = True) -> None:
    """Rewrite ``metrics.jsonl`` (atomically) and, with ``csv_too``, ``metrics.csv``."""
    lines = "".join(json.dumps(r, sort_keys=False) + "\n" for r in records)
    tmp = out_dir / "metrics.jsonl.tmp"
    tmp.write_text(lines, encoding="utf-8")
    tmp.replace(out_dir / "metrics.jsonl")
    if not csv_too:
        return
    fields: list[str] = []
    for r in records:
        fields += [k for k in r if k not in fields]
    with open(out_dir / "metrics.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(records)
