"""Small helpers shared by the model definitions (internal)."""

from __future__ import annotations

import torch
from torch import nn


def flatten_size(features: nn.Module, in_shape: tuple[int, int, int]) -> int:
    """Number of features ``features`` produces per sample for input shape ``(C, H, W)``.

    Runs one dummy forward on zeros under ``no_grad`` in eval mode (so BatchNorm statistics are
    not touched) and restores the previous training flag.
    """
    was_training = features.training
    features.eval()
    with torch.no_grad():
        out = features(torch.zeros((1, *in_shape), dtype=torch.float32))
    features.train(was_training)
    return int(out[0].numel())
