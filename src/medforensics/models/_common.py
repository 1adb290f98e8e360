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


def tanh_block(
    cin: int, cout: int, k: int, stride: int, pad: int, pool: nn.Module, *, batch_norm: bool = True
) -> nn.Sequential:
    """Conv ``k x k`` -> [BatchNorm] -> tanh -> ``pool``: the block of Deep-RSI and DeepMammo.

    Input (N, cin, H, W) float32; output (N, cout, H', W') float32 in [-1, 1].
    """
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride=stride, padding=pad)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers += [nn.Tanh(), pool]
    return nn.Sequential(*layers)


class ConstrainedTanhNet(nn.Module):
    """Shared layout of the paper presets: constrained layer -> conv features -> FC 200 tanh,
    FC 200 tanh -> linear logits.

    A subclass sets ``self.constrained`` and ``self.features`` in ``__init__`` and then calls
    :meth:`_init_head`, which computes the flatten size and builds ``head`` and ``classifier``.
    """

    constrained: nn.Module
    features: nn.Module

    def _init_head(self, num_classes: int, in_channels: int, input_size: int) -> None:
        """Build ``head`` (flatten -> 200 -> 200, tanh) and ``classifier`` (200 -> classes)."""
        self.flat_features = flatten_size(
            nn.Sequential(self.constrained, self.features), (in_channels, input_size, input_size)
        )
        self.head = nn.Sequential(
            nn.Linear(self.flat_features, 200),
            nn.Tanh(),
            nn.Linear(200, 200),
            nn.Tanh(),
        )
        self.classifier = nn.Linear(200, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: (N, C, S, S) float32 -> (N, 200) float32 in [-1, 1]."""
        z = self.features(self.constrained(x))
        return self.head(torch.flatten(z, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) float32 -> (N, num_classes) logits."""
        return self.classifier(self.embed(x))
