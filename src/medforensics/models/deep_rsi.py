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

from torch import nn

from medforensics.models._common import ConstrainedTanhNet, tanh_block
from medforensics.models.constrained import ConstrainedConv2d
from medforensics.models.registry import TrainingDefaults, register_model

__all__ = ["DeepRSI"]


#: Training defaults. The Deep-RSI paper's text: 100 epochs, Adam with learning rate 1e-4,
#: 256 x 256 inputs, class-weighted training. Its batch size is in a table we do not have:
#: 32 is our choice. Best epoch: the highest validation accuracy (balanced here).
DEFAULTS = TrainingDefaults(epochs=100, batch_size=32, lr=1e-4, optimizer="adam",
                            lr_schedule="constant", select="bacc", sampling="weighted", size=256)


@register_model("deep-rsi", defaults=DEFAULTS)
class DeepRSI(ConstrainedTanhNet):
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
            tanh_block(3, 96, 7, 2, 4, nn.MaxPool2d(3, 2)),
            tanh_block(96, 64, 5, 1, 2, nn.MaxPool2d(3, 2)),
            tanh_block(64, 64, 5, 1, 2, nn.MaxPool2d(3, 2)),
            tanh_block(64, 128, 1, 1, 0, nn.AvgPool2d(3, 2)),
        )
        self._init_head(num_classes, in_channels, input_size)
