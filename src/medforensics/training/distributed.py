"""The process environment of a training run: device, process group, seeds, determinism.

Used by the loop (:mod:`medforensics.training.loop`) and the builders; nothing here knows a
model or a dataset. Under ``torchrun`` (``WORLD_SIZE`` > 1) :func:`init_distributed_from_env`
starts the process group; every helper below works unchanged in a single process (world size
1, rank 0).
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch
import torch.distributed as dist

from medforensics.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["resolve_device", "init_distributed_from_env", "dist_info", "barrier",
           "all_reduce_sum", "broadcast_buffers", "seed_everything", "seed_worker", "Determinism"]


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a torch device (``cuda`` = this rank's GPU).

    Raises:
        ConfigError: CUDA asked for but not available, or an unknown device name.
    """
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name} requested but CUDA is not available to this torch "
                f"({torch.__version__}); use --device cpu or install a CUDA build of torch"
            )
        dev = torch.device(name)
        if dev.index is None:
            if dist.is_available() and dist.is_initialized():
                local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
                dev = torch.device("cuda", local % torch.cuda.device_count())
            else:
                dev = torch.device("cuda", torch.cuda.current_device())
        return dev
    raise ConfigError(f"unknown device {name!r}; use cpu or cuda")


def init_distributed_from_env(device: str = "cpu") -> bool:
    """Start the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    Uses NCCL (and ``cuda:LOCAL_RANK``) for CUDA devices, gloo on CPU. Does nothing when the
    world size is 1 or a process group already exists.

    Returns:
        True when a process group is active after the call.
    """
    if not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    log.info("process group: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(),
             dist.get_backend())
    return True


def dist_info() -> tuple[int, int]:
    """``(world size, rank)``; ``(1, 0)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum of ``t`` over ranks, returned on the CPU (``t`` itself in a single process)."""
    if dist.is_available() and dist.is_initialized():
        buf = t.to(device)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        return buf.cpu()
    return t


def broadcast_buffers(net: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics) before validating."""
    if dist.is_available() and dist.is_initialized():
        for buf in net.buffers():
            dist.broadcast(buf, 0)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's legacy global RNG and torch's global RNG."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive NumPy/Python seeds from the worker's torch seed.

    The datasets do not use global RNGs (positions come from (seed, epoch, key)), so workers
    cannot change the data; this only keeps any other library randomness reproducible. A
    worker decodes and crops (NumPy), so it runs torch on one thread: N workers with one
    intra-op pool each would otherwise oversubscribe a small machine N-fold.
    """
    torch.set_num_threads(1)
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


class Determinism:
    """Context manager: deterministic algorithms on (warn only), previous setting restored."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> None:
        if self.device.type == "cuda":
            # cuBLAS needs this for deterministic results (read when CUDA initialises).
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        self.prev = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
        )
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False

    def __exit__(self, *exc: object) -> None:
        enabled, warn_only, cudnn_det, cudnn_bench = self.prev
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.deterministic = cudnn_det
        torch.backends.cudnn.benchmark = cudnn_bench
