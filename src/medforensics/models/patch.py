"""``patch``: our fast native-resolution patch classifier for source identification.

Unlike the paper presets, this model sees the stored values at native resolution (no 8-bit
squashing, no resizing), so the detector's noise fingerprint survives. Input: float32
(N, 1, P, P) patches of stored values (any bit depth, any offset), P typically 64..128; any
P >= 16 works because the network ends in global average pooling.

Normalisation happens inside the model, so callers pass raw stored values:

1. Per patch, the mean is subtracted and the patch is divided by its robust noise/texture
   scale ``s`` = mean absolute first difference (horizontal and vertical) + ``eps``. The result
   is invariant to offset (exposure, window level) and gain (12/14/16-bit, rescale slope) and
   uses no dataset statistics. A constant (blank/clipped) patch maps to zeros, never NaN.
2. A Bayar-Stamm constrained 5x5 layer (1 -> ``residual_channels``, no padding) computes
   prediction-error residuals. It is linear, so this equals normalising the residual itself by
   ``s``; normalising the 1-channel input is just cheaper than normalising R residual maps.
   With ``scale_feature=True`` ``log(s)`` is appended to the embedding (it carries the absolute
   noise level, which can be discriminative but also tracks exposure and bit depth).
3. ``PixelUnshuffle(2)`` (lossless space-to-depth: no residual sample is discarded), then 3x3
   conv + BN + ReLU stages, stride 2 for all but the last, then global average pooling ->
   ``embed`` (width ``widths[-1]``) -> linear logits. For P=64: 60 -> 30 -> 15 -> 8 -> 8.

Image-level decisions average per-patch log-probabilities: :func:`aggregate_patch_logprobs`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medforensics.errors import ConfigError
from medforensics.models.constrained import ConstrainedConv2d
from medforensics.models.registry import TrainingDefaults, register_model

__all__ = ["PatchNet", "aggregate_patch_logprobs"]


#: Training defaults (ours; no paper): 64-px patches, 48 training patches per image and epoch,
#: 32 fixed patches per validation image, batch 64, Adam 2e-3 with per-epoch cosine decay over
#: 12 epochs, best epoch by the lowest validation loss (with a few dozen validation images the
#: balanced accuracy moves by several points per image and ties often, while the log-loss uses
#: every image's probabilities), 16 outlier-exposure devices at weight 0.5. How they were chosen
#: is in docs/training.md.
DEFAULTS = TrainingDefaults(epochs=12, batch_size=64, lr=2e-3, optimizer="adam",
                            lr_schedule="cosine", select="loss", sampling="weighted", patch=64,
                            patches_per_image=48, val_patches=32, outlier_devices=16,
                            outlier_weight=0.5)


@register_model("patch", defaults=DEFAULTS)
class PatchNet(nn.Module):
    """Native-resolution patch CNN (see module docstring).

    Args:
        num_classes: number of source classes.
        patch: nominal patch side (recorded in ``input_spec``; any side >= 16 is accepted).
        residual_channels: outputs of the constrained layer.
        widths: channels of the conv stages; one stride-2 3x3 conv per stage, then one
            stride-1 3x3 conv in the last stage.
        scale_feature: append log(residual scale) to the embedding (default on: the absolute
            noise level is part of the fingerprint; docs/training.md compares it on and
            off).
        eps: added to the residual scale before dividing (stored-value units).
    """

    input_spec = {"patch": 64, "channels": 1, "preprocess": "native"}

    def __init__(
        self,
        num_classes: int,
        patch: int = 64,
        residual_channels: int = 4,
        widths: tuple[int, ...] | list[int] = (32, 64, 64),
        scale_feature: bool = True,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 1 or min(widths) < 1:
            raise ConfigError(f"widths must be a non-empty list of positive ints, got {widths!r}")
        if patch < 16:
            raise ConfigError(f"patch must be >= 16, got {patch}")
        self.input_spec = {**type(self).input_spec, "patch": int(patch)}
        self.eps = float(eps)
        self.scale_feature = bool(scale_feature)
        self.constrained = ConstrainedConv2d(1, residual_channels, kernel_size=5, padding=0)
        layers: list[nn.Module] = [nn.PixelUnshuffle(2)]
        cin = 4 * residual_channels
        for i, cout in enumerate(widths):
            stride = 2 if i < len(widths) - 1 else 1
            layers += [
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        self.features = nn.Sequential(*layers)
        self.embed_dim = cin + (1 if self.scale_feature else 0)
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def normalise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-patch offset/gain normalisation of the input.

        Args:
            x: (N, 1, P, P) float32 stored values.

        Returns:
            ``(xn, s)``: xn (N, 1, P, P) float32, zero mean, mean absolute first difference 1
            (0 everywhere for a constant patch); s (N, 1, 1, 1) float32 > 0, the scale in
            stored-value units.
        """
        x = x - x.mean(dim=(2, 3), keepdim=True)
        dh = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(1, 2, 3), keepdim=True)
        dv = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3), keepdim=True)
        s = 0.5 * (dh + dv) + self.eps
        return x / s, s

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features for open-set scoring: (N, 1, P, P) -> (N, embed_dim) float32."""
        if x.ndim != 4 or x.shape[1] != 1 or min(x.shape[-2:]) < 16:
            raise ConfigError(
                f"patch model expects (N, 1, P, P) input with P >= 16, got {tuple(x.shape)}"
            )
        xn, s = self.normalise(x)
        r = self.constrained(xn)
        h, w = r.shape[-2:]
        r = r[..., : h - h % 2, : w - w % 2]  # PixelUnshuffle(2) needs even sides
        z = self.features(r)
        if self.scale_feature:
            z = torch.cat([z, torch.log(s.flatten(1))], dim=1)
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, P, P) float32 stored values -> (N, num_classes) logits."""
        return self.classifier(self.embed(x))


def aggregate_patch_logprobs(
    logits_per_patch: torch.Tensor | np.ndarray, *, normalize: bool = True
) -> torch.Tensor | np.ndarray:
    """Combine per-patch logits of one image into image-level class log-probabilities.

    The image score is the mean over patches of the per-patch log-softmax (a geometric mean of
    the patch posteriors, i.e. naive-Bayes pooling of independent patches). With
    ``normalize=True`` (default) it is re-normalised with a log-softmax so that
    ``exp(result)`` sums to 1; the arg-max is the same either way.

    Args:
        logits_per_patch: (n_patches, C) or batched (B, n_patches, C) logits, torch or NumPy.
        normalize: re-normalise to a proper log-distribution.

    Returns:
        (C,) or (B, C) log-probabilities (float32), same library as the input.

    Raises:
        ConfigError: fewer than 2 dimensions or zero patches.
    """
    is_numpy = isinstance(logits_per_patch, np.ndarray)
    t = torch.as_tensor(logits_per_patch, dtype=torch.float32)
    if t.ndim < 2 or t.shape[-2] == 0 or t.shape[-1] == 0:
        raise ConfigError(
            f"expected (n_patches, C) logits with n_patches >= 1, got {tuple(t.shape)}"
        )
    out = torch.log_softmax(t, dim=-1).mean(dim=-2)
    if normalize:
        out = torch.log_softmax(out, dim=-1)
    return out.detach().cpu().numpy() if is_numpy else out
