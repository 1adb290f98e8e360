"""ELA-CNN forgery classifier (the "medical image forgery detection" paper, seed 004).

The paper: "4 pairs of convolution layers followed by max pooling layer, 1 flatten layer & 3
dense layers"; ReLU; "flattened into a one-dimensional vector of length 8x8x64 = 4096", dense
64 -> 32 -> 2 with softmax; input = the ELA image of the (resized) picture. 8x8 after four
2x2 poolings means a 128x128 input and size-preserving ("same") convolutions.

Choices where the paper is silent: 3x3 kernels with padding 1, filters 16-32-64-64 (only the
last, 64, is given), ReLU after the two hidden dense layers, raw logits out.

Channels: the paper builds the ELA image with PIL from an RGB JPEG re-save (``ImageChops``
difference of RGB images), so its network input is 3-channel. For grey medical images the three
channels are identical, so the default here is ``in_channels=1`` (the project's (N, 1, H, W)
contract); ``in_channels=3`` reproduces the paper's RGB input.

Input: float32 (N, in_channels, 128, 128) ELA image (absolute difference to a JPEG re-save,
brightness-scaled to 0..255 as in the paper; see ``medforensics.forgery.cues.ela``).
"""

from __future__ import annotations

import torch
from torch import nn

from medforensics.models._common import flatten_size
from medforensics.models.registry import TrainingDefaults, register_model

__all__ = ["ElaCNN"]


#: Training defaults. From the paper: 128 x 128 input (its 8x8x64 flatten after four poolings),
#: Adam, cross-entropy, ELA at JPEG quality 90. The paper states neither epochs, batch size nor
#: learning rate: Keras' defaults (Adam lr 1e-3, batch 32) and 30 epochs (ours); the epoch with
#: the best validation accuracy is kept.
DEFAULTS = TrainingDefaults(epochs=30, batch_size=32, lr=1e-3, optimizer="adam",
                            lr_schedule="constant", select="acc", sampling="shuffle", size=128,
                            ela_quality=90)


@register_model("ela-cnn", defaults=DEFAULTS)
class ElaCNN(nn.Module):
    """ELA-CNN (see module docstring).

    Args:
        num_classes: output classes (2 in the paper: original / tampered).
        in_channels: 1 (grey ELA, default) or 3 (RGB ELA as in the paper).
        input_size: square input side (128 gives the paper's 8x8x64 = 4096 flatten).
    """

    input_spec = {"size": 128, "channels": 1, "preprocess": "ela"}

    def __init__(self, num_classes: int = 2, in_channels: int = 1, input_size: int = 128) -> None:
        super().__init__()
        self.input_spec = {
            **type(self).input_spec, "size": int(input_size), "channels": int(in_channels)
        }
        widths = [in_channels, 16, 32, 64, 64]
        layers: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.flat_features = flatten_size(self.features, (in_channels, input_size, input_size))
        self.head = nn.Sequential(
            nn.Linear(self.flat_features, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, 32),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(32, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) float32 -> (N, 32) penultimate features (>= 0)."""
        return self.head(torch.flatten(self.features(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) float32 -> (N, num_classes) logits."""
        return self.classifier(self.embed(x))
