"""DeepMammo (mammogram source identification), Algorithm 1 of the DeepMammo paper.

Algorithm 1 lists::

    Conv 0 (error prediction): 6 filters 7x7, padding 2, centre -1, "normalised"  (constrained)
    Conv 1: 64 filters 7x7, stride 2, padding 3, maxPooling=3, Tanh
    Conv 2: 32 filters 7x7, stride 2, padding 2, maxPooling=3, Tanh
    Conv 3: 10 filters 1x1, stride 2, padding 0, Avg.Pooling=3, Tanh
    FC 200 Tanh, FC 200 Tanh, FC classes (softmax; here raw logits, softmax is in the loss)

on 256x256 PNGs rescaled to 0..255.

Choices where the paper is ambiguous (all documented, all overridable):

* Pool stride: "maxPooling=3" gives only the window. We use stride 2 (``pool_stride=2``), the
  convention of the same authors' Deep-RSI Table 1 and of MISLnet. For a 256x256 input the sizes
  are 254 -> 127 -> 63 -> 31 -> 15 -> 8 -> 3, flatten 10*3*3 = 90. ``pool_stride=3`` reproduces
  PyTorch's ``MaxPool2d(3)`` default (stride = window), flatten 10*1*1 = 10.
* Order inside a block: conv -> [batch norm] -> tanh -> pool (tanh is monotonic, so the order
  relative to max pooling does not matter; for the average pool it follows MISLnet).
* Batch norm: not listed in Algorithm 1, but present in every block of the authors' Deep-RSI,
  on which DeepMammo builds; without it tanh saturates on 0..255 residuals. Default
  ``batch_norm=True``; ``batch_norm=False`` is the literal Algorithm 1.
* The constrained layer has no bias and maps 1 -> 6 channels.

The flatten size is computed by a dummy forward at build time (``self.flat_features``).

Input: float32 (N, 1, 256, 256) from :func:`medforensics.data.transforms.paper_preprocess`
(8-bit min-max rescale + bilinear resize, which destroys most of the native noise fingerprint).
"""

from __future__ import annotations

from torch import nn

from medforensics.errors import ConfigError
from medforensics.models._common import ConstrainedTanhNet, tanh_block
from medforensics.models.constrained import ConstrainedConv2d
from medforensics.models.registry import TrainingDefaults, register_model

__all__ = ["DeepMammo"]


#: Training defaults. The DeepMammo paper gives 256 x 256 inputs and balanced batches; it
#: states neither epochs, batch size nor learning rate, so those are the authors' Deep-RSI
#: values (100 epochs, Adam 1e-4) and our batch of 32.
DEFAULTS = TrainingDefaults(epochs=100, batch_size=32, lr=1e-4, optimizer="adam",
                            lr_schedule="constant", select="bacc", sampling="balanced", size=256)


@register_model("deepmammo", defaults=DEFAULTS)
class DeepMammo(ConstrainedTanhNet):
    """DeepMammo network (see module docstring).

    Args:
        num_classes: number of source classes.
        in_channels: input channels (1 for grey mammograms).
        input_size: square input side (256 in the paper).
        pool_stride: stride of the 3x3 pooling layers (2 by default; see module docstring).
        batch_norm: batch norm after each convolution (default True; see module docstring).
    """

    input_spec = {"size": 256, "channels": 1, "preprocess": "paper-8bit"}

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        input_size: int = 256,
        pool_stride: int = 2,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if pool_stride not in (1, 2, 3):
            raise ConfigError(f"pool_stride must be 1, 2 or 3, got {pool_stride!r}")
        self.input_spec = {
            **type(self).input_spec, "size": int(input_size), "channels": int(in_channels)
        }
        self.constrained = ConstrainedConv2d(in_channels, 6, kernel_size=7, padding=2)
        self.features = nn.Sequential(
            tanh_block(6, 64, 7, 2, 3, nn.MaxPool2d(3, pool_stride), batch_norm=batch_norm),
            tanh_block(64, 32, 7, 2, 2, nn.MaxPool2d(3, pool_stride), batch_norm=batch_norm),
            tanh_block(32, 10, 1, 2, 0, nn.AvgPool2d(3, pool_stride), batch_norm=batch_norm),
        )
        self._init_head(num_classes, in_channels, input_size)
