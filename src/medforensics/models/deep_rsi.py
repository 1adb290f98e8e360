"""Deep-RSI (radiograph source identification), Table 1 of the Deep-RSI paper (MISLnet-based).

Layers for a (N, 1, 256, 256) input (output sizes in brackets)::

    Constrained  1 -> 3, 5x5, stride 1, no padding, no bias       [3 x 252 x 252]
    Conv1        3 -> 96, 7x7, stride 2, pad 4, BN, tanh          [96 x 127 x 127]
    MaxPool      3, stride 2                                      [96 x 63 x 63]
    Conv2        96 -> 64, 5x5, stride 1, pad 2, BN, tanh         [64 x 63 x 63]
    MaxPool      3, stride 2                                      [64 x 31 x 31]
    Conv3        64 -> 64, 5x5, stride 1, pad 2, BN, tanh         [64 x 31 x 31]
    MaxPool      3, stride 2                                      [64 x 15 x 15]
    Conv4        64 -> 128, 1x1, BN, tanh                         [128 x 15 x 15]
    AvgPool      3, stride 2                                      [128 x 7 x 7]
    Flatten                                                       6272 = 128 * 7 * 7
    FC 6272 -> 200, tanh; FC 200 -> 200, tanh; FC 200 -> classes (logits)

Table 1 gives no padding for the constrained layer; with none (as in MISLnet) the flatten size
is exactly the paper's 6272. (With padding 2 it would also be 6272: 256 -> 129 -> 64 -> 64 ->
31 -> 15 -> 7.) The paper's batch norm + tanh in the convolutional blocks follow its text
("convolutional filters, batch normalization, tanh activation, and max pooling"); tanh after the
two hidden FC layers follows MISLnet. The output is raw logits (softmax is in the loss).

Input: float32 (N, 1, 256, 256), the paper preprocessing
(:func:`medforensics.data.transforms.paper_preprocess`: min-max to 8-bit 0..255, bilinear
resize to 256x256), which destroys most of the native noise fingerprint - kept for
reproducing the paper only.
"""

from __future__ import annotations

import torch
from torch import nn

from medforensics.models._common import flatten_size
from medforensics.models.constrained import ConstrainedConv2d
from medforensics.models.registry import register_model

__all__ = ["DeepRSI"]


def _block(cin: int, cout: int, k: int, stride: int, pad: int, pool: nn.Module) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=pad),
        nn.BatchNorm2d(cout),
        nn.Tanh(),
        pool,
    )


@register_model("deep-rsi")
class DeepRSI(nn.Module):
    """Deep-RSI network (see module docstring for the layer table).

    Args:
        num_classes: number of source classes.
        in_channels: input channels (1 for grey radiographs).
        input_size: square input side; 256 as in the paper (flatten size is computed from it).
    """

    input_spec = {"size": 256, "channels": 1, "preprocess": "paper-8bit"}

    def __init__(self, num_classes: int, in_channels: int = 1, input_size: int = 256) -> None:
        super().__init__()
        self.input_spec = {
            **type(self).input_spec, "size": int(input_size), "channels": int(in_channels)
        }
        self.constrained = ConstrainedConv2d(in_channels, 3, kernel_size=5, padding=0)
        self.features = nn.Sequential(
            _block(3, 96, 7, 2, 4, nn.MaxPool2d(3, 2)),
            _block(96, 64, 5, 1, 2, nn.MaxPool2d(3, 2)),
            _block(64, 64, 5, 1, 2, nn.MaxPool2d(3, 2)),
            _block(64, 128, 1, 1, 0, nn.AvgPool2d(3, 2)),
        )
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
