"""Split a batch of files over processes or nodes for inference (``identify``, ``forgery detect``).

A large archive is cut into ``count`` disjoint shards; shard ``index`` (0-based) takes every
``count``-th file of the sorted, expanded file list starting at ``index`` (round-robin, so each
shard gets a similar mix of folders and sizes). Every file belongs to exactly one shard and the
union of all shards is the whole list, whatever the number of shards.

The shard is given explicitly (``--shard K/N``) or, under ``torchrun`` (or any launcher that
sets ``RANK`` and ``WORLD_SIZE``), taken from the environment, so

    torchrun --nproc-per-node 4 -m medforensics identify RUN /archive --out results.jsonl

runs four processes over disjoint quarters, each writing ``results.part-K-of-4.jsonl``.
No process group is created: inference ranks do not talk to each other.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from medforensics.errors import ConfigError

__all__ = ["parse_shard", "take_shard", "shard_output_path"]

T = TypeVar("T")


def parse_shard(text: str | None, env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """The shard to process: ``(index, count)`` with ``0 <= index < count``.

    Args:
        text: ``"K/N"`` (0-based K), or ``None`` / ``"auto"`` to read ``RANK`` and
            ``WORLD_SIZE`` from ``env`` (as torchrun sets them), or ``"none"`` for no sharding.
        env: environment (default ``os.environ``).

    Returns:
        ``(index, count)``; ``(0, 1)`` means "all files".

    Raises:
        ConfigError: malformed text or environment values, or index outside 0..count-1.
    """
    env = os.environ if env is None else env
    if text is None or text.strip().lower() == "auto":
        rank, world = env.get("RANK"), env.get("WORLD_SIZE")
        if rank is None or world is None:
            return 0, 1
        spec, where = f"{rank}/{world}", "RANK/WORLD_SIZE"
    elif text.strip().lower() == "none":
        return 0, 1
    else:
        spec, where = text.strip(), "--shard"
    try:
        k_text, n_text = spec.split("/")
        index, count = int(k_text), int(n_text)
    except ValueError:
        raise ConfigError(f"{where}: expected K/N with integers (e.g. 0/4), got {spec!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"{where}: shard {index} of {count} does not exist (0 <= K < N)")
    return index, count


def take_shard(items: Sequence[T], index: int, count: int) -> list[T]:
    """Items ``index, index + count, index + 2 count, ...`` of ``items`` (order kept).

    Raises:
        ConfigError: ``count < 1`` or ``index`` outside ``0..count-1``.
    """
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard {index} of {count} does not exist (0 <= K < N)")
    return list(items[index::count])


def shard_output_path(out: str | os.PathLike[str], index: int, count: int) -> Path:
    """Per-shard file name: ``out`` itself without sharding, else ``<stem>.part-K-of-N<suffix>``."""
    path = Path(out)
    if count == 1:
        return path
    return path.with_name(f"{path.stem}.part-{index}-of-{count}{path.suffix}")
