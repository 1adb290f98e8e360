"""Class-balanced, seeded, DDP-aware samplers.

Two balancing schemes from the papers:

* :class:`ClassWeightedSampler` (Deep-RSI "data weighting"): every draw picks an item with
  probability inversely proportional to the frequency of its class, so each class is drawn
  equally often on average. Draws are with replacement (minority classes are oversampled).
* :class:`BalancedBatchSampler` (DeepMammo "balancing batches"): a batch sampler whose every
  batch holds exactly the same number of items of each class.

Both are deterministic: the draw for an epoch depends only on ``(seed, epoch)``, never on global
RNG state, so a resumed run sees the same data as an uninterrupted one. Under
``torch.distributed`` every rank computes the same global draw for the epoch and keeps a
disjoint share of it (rank ``r`` of ``W`` keeps positions ``r, r + W, r + 2W, ...``), so the
union over ranks is exactly the single-process draw. Call ``set_epoch(epoch)`` before each epoch.

With ``tag_draws=True`` the samplers yield ``(index, draw)`` pairs instead of plain indices, where
``draw`` is the position of that draw in the epoch's global draw (unique across ranks). Datasets
that sample random patches use it to seed the patch position, so that an item drawn twice in an
epoch gives two different patches and the result does not depend on the number of ranks or
DataLoader workers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from medforensics.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "ClassWeightedSampler",
    "BalancedBatchSampler",
    "class_weights",
    "distributed_context",
    "epoch_rng",
]

_SAMPLER_STREAM = 0x5A3D  # distinguishes sampler streams from other users of (seed, epoch)


def distributed_context(
    num_replicas: int | None = None, rank: int | None = None
) -> tuple[int, int]:
    """Return ``(world_size, rank)``: the given values, else torch.distributed's, else (1, 0).

    Raises:
        ConfigError: if ``rank`` is outside ``[0, world_size)``.
    """
    if num_replicas is None or rank is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        else:
            num_replicas = 1 if num_replicas is None else num_replicas
            rank = 0 if rank is None else rank
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ConfigError(f"invalid distributed rank {rank} for world size {num_replicas}")
    return int(num_replicas), int(rank)


def epoch_rng(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    """A NumPy generator that depends only on ``(seed, epoch, stream)``.

    Args:
        seed: run seed (non-negative int).
        epoch: epoch number (non-negative int).
        stream: distinguishes independent users of the same (seed, epoch).
    """
    return np.random.default_rng([int(seed), int(epoch), int(stream)])


def _as_labels(labels: Sequence[int]) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.size == 0:
        raise ConfigError("a sampler needs a non-empty 1-D sequence of integer labels")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"sampler labels must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def class_weights(labels: Sequence[int]) -> np.ndarray:
    """Per-item draw probabilities inversely proportional to class frequency.

    Args:
        labels: integer class label of every item, length N.

    Returns:
        float64 array (N,), summing to 1, in which every class present has total mass
        ``1 / n_classes_present``.
    """
    arr = _as_labels(labels)
    classes, inverse, counts = np.unique(arr, return_inverse=True, return_counts=True)
    p = 1.0 / (len(classes) * counts[inverse].astype(np.float64))
    return p / p.sum()


class ClassWeightedSampler(Sampler):
    """Deep-RSI class weighting: draws with probability inversely proportional to class size.

    Args:
        labels: integer class label of every dataset item (length N).
        num_samples: draws per epoch over all ranks (default N). Rounded up to a multiple of
            the world size so that every rank gets the same number.
        seed: run seed; the epoch's draw depends only on (seed, epoch).
        num_replicas: world size (default: from torch.distributed, else 1).
        rank: this process's rank (default: from torch.distributed, else 0).
        tag_draws: yield ``(index, draw)`` pairs instead of indices (see module docstring).
    """

    def __init__(
        self,
        labels: Sequence[int],
        num_samples: int | None = None,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        tag_draws: bool = False,
    ) -> None:
        self.labels = _as_labels(labels)
        self.p = class_weights(self.labels)
        self.world, self.rank = distributed_context(num_replicas, rank)
        n = len(self.labels) if num_samples is None else int(num_samples)
        if n < 1:
            raise ConfigError(f"num_samples must be >= 1, got {n}")
        self.total = math.ceil(n / self.world) * self.world
        self.seed = int(seed)
        self.epoch = 0
        self.tag_draws = tag_draws

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draw the next iteration yields."""
        self.epoch = int(epoch)

    def global_draw(self) -> np.ndarray:
        """The whole epoch's draw over all ranks: int64 array (total,) of item indices."""
        rng = epoch_rng(self.seed, self.epoch, _SAMPLER_STREAM)
        return rng.choice(len(self.labels), size=self.total, replace=True, p=self.p)

    def __len__(self) -> int:
        return self.total // self.world

    def __iter__(self) -> Iterator:
        draw = self.global_draw()
        positions = range(self.rank, self.total, self.world)
        if self.tag_draws:
            return iter([(int(draw[k]), k) for k in positions])
        return iter([int(draw[k]) for k in positions])


class BalancedBatchSampler(Sampler):
    """DeepMammo balanced batches: every batch holds the same number of items of each class.

    Within a class, items are taken in a fresh random order and each item is used once before
    any is repeated (minority classes cycle more often). A batch is the concatenation of
    ``batch_size // n_classes`` items per class, shuffled. Pass it to a DataLoader as
    ``batch_sampler``.

    Args:
        labels: integer class label of every dataset item (length N).
        batch_size: requested batch size; the effective size is rounded down to a multiple of
            the number of classes present (a warning is logged when that changes it).
        num_batches: batches per epoch over all ranks (default ``ceil(N / batch)``), rounded
            up to a multiple of the world size.
        seed: run seed; the epoch's batches depend only on (seed, epoch).
        num_replicas: world size (default: from torch.distributed, else 1).
        rank: this process's rank (default: from torch.distributed, else 0).
        tag_draws: yield batches of ``(index, draw)`` pairs instead of indices.

    Raises:
        ConfigError: if ``batch_size`` is smaller than the number of classes.
    """

    def __init__(
        self,
        labels: Sequence[int],
        batch_size: int,
        num_batches: int | None = None,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        tag_draws: bool = False,
    ) -> None:
        self.labels = _as_labels(labels)
        self.classes = np.unique(self.labels)
        n_classes = len(self.classes)
        self.per_class = int(batch_size) // n_classes
        if self.per_class < 1:
            raise ConfigError(
                f"balanced batches need batch_size >= number of classes ({n_classes}), "
                f"got {batch_size}"
            )
        self.batch_size = self.per_class * n_classes
        if self.batch_size != batch_size:
            log.warning(
                "balanced batches: batch size %d rounded down to %d (%d per class x %d classes)",
                batch_size, self.batch_size, self.per_class, n_classes,
            )
        self.world, self.rank = distributed_context(num_replicas, rank)
        nb = math.ceil(len(self.labels) / self.batch_size) if num_batches is None else num_batches
        if nb < 1:
            raise ConfigError(f"num_batches must be >= 1, got {nb}")
        self.total_batches = math.ceil(nb / self.world) * self.world
        self.members = [np.flatnonzero(self.labels == c) for c in self.classes]
        self.seed = int(seed)
        self.epoch = 0
        self.tag_draws = tag_draws

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields."""
        self.epoch = int(epoch)

    def global_batches(self) -> np.ndarray:
        """All batches of the epoch over all ranks: int64 array (total_batches, batch_size)."""
        rng = epoch_rng(self.seed, self.epoch, _SAMPLER_STREAM + 1)
        need = self.total_batches * self.per_class
        columns = []
        for members in self.members:
            reps = math.ceil(need / len(members))
            stream = np.concatenate([rng.permutation(members) for _ in range(reps)])[:need]
            columns.append(stream.reshape(self.total_batches, self.per_class))
        batches = np.concatenate(columns, axis=1)
        for row in batches:
            rng.shuffle(row)
        return batches

    def __len__(self) -> int:
        return self.total_batches // self.world

    def __iter__(self) -> Iterator[list]:
        batches = self.global_batches()
        out = []
        for b in range(self.rank, self.total_batches, self.world):
            if self.tag_draws:
                base = b * self.batch_size
                out.append([(int(i), base + j) for j, i in enumerate(batches[b])])
            else:
                out.append([int(i) for i in batches[b]])
        return iter(out)
