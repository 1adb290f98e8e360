"""Training-throughput measurement for the registered models (CPU or GPU).

``python bench/model_throughput.py patch --batch 64 --size 64 --threads 1`` prints items/s
for full training steps (forward, cross-entropy, backward, Adam step, constrained-layer
projection) on random data; the numbers in the docs were produced this way.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from medforensics.models.constrained import attach_projection
from medforensics.models.registry import create_model

__all__ = ["training_throughput"]


def training_throughput(
    name: str,
    *,
    batch: int = 64,
    size: int | None = None,
    steps: int = 20,
    warmup: int = 3,
    threads: int | None = 1,
    num_classes: int = 4,
    seed: int = 0,
    device: str = "cpu",
    **model_kwargs: Any,
) -> dict[str, float]:
    """Measure training items/s of model ``name`` on random inputs.

    Args:
        name: registered model name.
        batch: items per step.
        size: input side (default: the model's ``input_spec`` size/patch).
        steps: timed steps (after ``warmup`` untimed ones).
        warmup: untimed steps.
        threads: ``torch.set_num_threads`` value for the measurement (None: leave as is);
            the previous value is restored afterwards.
        num_classes: classifier outputs.
        seed: torch seed for weights and data.
        device: torch device string.
        **model_kwargs: passed to ``create_model``.

    Returns:
        dict with ``items_per_s`` (wall clock), ``seconds_per_step``, ``cpu_seconds_per_step``
        and ``items_per_cpu_s`` (process CPU time, summed over threads: robust to other load
        on a shared machine), ``batch``, ``size``, ``threads``.
    """
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        torch.manual_seed(seed)
        model = create_model(name, num_classes, **model_kwargs).to(device).train()
        spec = model.input_spec
        side = int(size or spec.get("size") or spec.get("patch"))
        channels = int(spec.get("channels", 1))
        x = torch.rand(batch, channels, side, side, device=device) * 255.0
        y = torch.randint(0, num_classes, (batch,), device=device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        attach_projection(opt, model)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        for _ in range(warmup):
            step()
        if device != "cpu":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        if device != "cpu":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / steps
        cpu = (time.process_time() - c0) / steps
    finally:
        torch.set_num_threads(old_threads)
    return {"items_per_s": batch / dt, "seconds_per_step": dt, "cpu_seconds_per_step": cpu,
            "items_per_cpu_s": batch / cpu if cpu > 0 else float("nan"), "batch": batch,
            "size": side, "threads": old_threads if threads is None else int(threads)}
