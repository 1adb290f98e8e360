"""Training checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint is a directory::

    model.safetensors     model state_dict (current weights)
    best.safetensors      state_dict of the best epoch so far
    extra.safetensors     every tensor found in the optimizer and RNG states, flattened
    state.json            epoch, best-so-far, config, and the non-tensor parts of the optimizer
                          and RNG states, with ``{"__tensor__": key}`` references into
                          extra.safetensors

Arbitrary nested state (an optimizer ``state_dict``, NumPy's RNG state tuple, ...) is turned
into JSON by :func:`encode_tree`: tensors and NumPy arrays go to the tensor file, tuples and
int-keyed dicts are tagged so :func:`decode_tree` rebuilds them exactly. Unknown object types
are refused (never pickled).

Checkpoints of a run live in ``<run>/checkpoints/epoch-NNNN/``; ``<run>/checkpoints/LATEST``
names the last complete one and is replaced atomically only after the directory is fully
written, so a run killed mid-write resumes from the previous complete epoch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from medforensics.errors import ModelFileError

log = logging.getLogger(__name__)

__all__ = [
    "Checkpoint",
    "encode_tree",
    "decode_tree",
    "capture_rng_state",
    "restore_rng_state",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "copy_state_exact",
]

FORMAT = "medforensics-checkpoint/1"
LATEST = "LATEST"


def encode_tree(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "t") -> Any:
    """Encode nested state as JSON-able data, moving tensors/arrays into ``tensors``.

    Args:
        obj: dicts (str or int keys), lists, tuples, tensors, NumPy arrays and scalars,
            str, bool, None, int, float (NaN/inf allowed).
        tensors: receives ``key -> tensor`` (CPU, contiguous copies).
        prefix: key prefix for this subtree.

    Returns:
        A JSON-serialisable structure.

    Raises:
        TypeError: an object of another type (it would need pickle).
    """
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"{prefix}"
        arr = obj
        if arr.dtype in (np.uint16, np.uint32, np.uint64):
            arr = arr.astype(np.int64)
        tensors[key] = torch.from_numpy(np.ascontiguousarray(arr).copy())
        return {"__ndarray__": key, "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return encode_tree(obj.item(), tensors, prefix)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return {"__float__": repr(obj)}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_tree(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_tree(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"cannot encode dict key {k!r} of type {type(k).__name__}")
            items.append([k, encode_tree(v, tensors, f"{prefix}.{k}")])
        return {"__dict__": items}
    raise TypeError(f"cannot encode object of type {type(obj).__name__} without pickle")


def decode_tree(data: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode_tree`."""
    if isinstance(data, list):
        return [decode_tree(v, tensors) for v in data]
    if isinstance(data, dict):
        if "__tensor__" in data:
            return tensors[data["__tensor__"]]
        if "__ndarray__" in data:
            return tensors[data["__ndarray__"]].numpy().astype(np.dtype(data["dtype"]))
        if "__float__" in data:
            return float(data["__float__"])
        if "__tuple__" in data:
            return tuple(decode_tree(v, tensors) for v in data["__tuple__"])
        if "__dict__" in data:
            return {k: decode_tree(v, tensors) for k, v in data["__dict__"]}
        raise ModelFileError(f"unknown tagged object in checkpoint: {sorted(data)}")
    return data


def capture_rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA), NumPy legacy and Python ``random`` global RNG states."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore states captured by :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def copy_state_exact(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into ``module`` bit for bit.

    ``load_state_dict`` runs module hooks (e.g. re-projection of constrained layers) that may
    change the last bit of a weight; resuming must not, so after loading the values are copied
    over again in place.

    Raises:
        ModelFileError: keys or shapes do not match.
    """
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"checkpoint does not match the model: {exc}") from None
    with torch.no_grad():
        for key, tensor in module.state_dict().items():
            tensor.copy_(state[key])


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: checkpoint directory.
        epoch: last completed epoch (1-based).
        model: model state_dict after that epoch.
        best_model: state_dict of the best epoch so far.
        optimizer: optimizer state_dict.
        rng: RNG states for :func:`restore_rng_state`.
        info: the remaining JSON fields (best epoch/score, config, ...).
    """

    path: Path
    epoch: int
    model: dict[str, torch.Tensor]
    best_model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    info: dict[str, Any]


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _state_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_checkpoint(
    root: str | Path,
    *,
    epoch: int,
    model_state: dict[str, torch.Tensor],
    best_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    rng_state: dict[str, Any],
    info: dict[str, Any],
    keep: int = 1,
) -> Path:
    """Write ``root/epoch-NNNN/``, then point ``root/LATEST`` at it; keep ``keep`` newest.

    Returns:
        The checkpoint directory.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch:04d}"
    final = root / name
    tmp = root / f".{name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    extra: dict[str, torch.Tensor] = {}
    state = {
        "format": FORMAT,
        "epoch": int(epoch),
        "optimizer": encode_tree(optimizer_state, extra, "optimizer"),
        "rng": encode_tree(rng_state, extra, "rng"),
        "info": encode_tree(info, extra, "info"),
    }
    save_file(_state_tensors(model_state), str(tmp / "model.safetensors"))
    save_file(_state_tensors(best_state), str(tmp / "best.safetensors"))
    save_file(extra, str(tmp / "extra.safetensors"))
    (tmp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _atomic_write_text(root / LATEST, name + "\n")
    old = sorted(p for p in root.glob("epoch-*") if p.is_dir() and p.name != name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(root: str | Path) -> Path | None:
    """Directory of the last complete checkpoint under ``root``, or None if there is none."""
    root = Path(root)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text(encoding="utf-8").strip()
    if not (path / "state.json").is_file():
        raise ModelFileError(f"{pointer} names {path.name}, which is missing or incomplete")
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint directory written by :func:`save_checkpoint`.

    Raises:
        ModelFileError: missing files or an unknown format.
    """
    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        model = load_file(str(path / "model.safetensors"))
        best = load_file(str(path / "best.safetensors"))
        extra = load_file(str(path / "extra.safetensors"))
    except Exception as exc:  # OSError, JSON errors, safetensors' own error class
        raise ModelFileError(f"cannot read checkpoint {path}: {exc}") from None
    if state.get("format") != FORMAT:
        raise ModelFileError(f"{path}: unknown checkpoint format {state.get('format')!r}")
    return Checkpoint(
        path=path,
        epoch=int(state["epoch"]),
        model=model,
        best_model=best,
        optimizer=decode_tree(state["optimizer"], extra),
        rng=decode_tree(state["rng"], extra),
        info=decode_tree(state["info"], extra),
    )
