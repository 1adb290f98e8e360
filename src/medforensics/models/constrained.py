"""Bayar-Stamm constrained ("prediction-error") convolution.

Bayar & Stamm (IEEE TIFS 2018) constrain the first convolution of a forensic CNN so that every
filter ``w`` (one per output channel *and* input channel) satisfies

    w(0, 0) = -1        and        sum_{(x, y) != (0, 0)} w(x, y) = 1.

Each filter therefore predicts the centre pixel from its neighbours and subtracts the true
value: the output is a prediction-error residual, blind to constant offsets and local content,
which pushes the network towards device/processing traces instead of anatomy. The constraint
is not differentiable-by-construction; it is enforced by *projection*: random initialisation,
then projection, then projection again after every optimiser step.

Projection used here (and why)
------------------------------
Published code re-normalises the surround by dividing it by its own sum
(``w_s <- w_s / sum(w_s)``). That divides by a learned quantity: when the surround sum drifts
near 0 the weights explode (and its sign flips when the sum goes negative), which is how
training runs with a large learning rate end in inf/NaN.

:meth:`ConstrainedConv2d.project_` instead applies the *Euclidean (orthogonal) projection* onto
the affine constraint set: the excess ``sum(w_s) - 1`` is spread evenly over the ``k*k - 1``
surround weights and subtracted, and the centre is set to ``-1``:

    w_s <- w_s - (sum(w_s) - 1) / (k*k - 1);        w_c <- -1.

Properties: it divides only by the constant ``k*k - 1`` (never by a weight-dependent number), so
it is finite for any finite input; it is the nearest point of the constraint set in L2, which
is exactly the projection projected-gradient descent calls for; it is idempotent (filters that
already satisfy the constraint to float32 rounding are left bit-identical); and it is
deterministic and elementwise, so DDP ranks that hold identical weights after the
all-reduced step stay identical. The arithmetic is carried out in float64 and written back
in place (``weight.copy_`` under ``no_grad``: the Parameter object and the optimiser state
attached to it are kept), so the constraint holds to float32 precision (about 1e-6 relative
to the filter's L1 norm).

Typical use::

    model = create_model("deep-rsi", num_classes=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    attach_projection(opt, model)          # projects after every opt.step()
    # or, by hand after each step:  project_constraints(model)
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from medforensics.errors import ConfigError

__all__ = [
    "ConstrainedConv2d",
    "project_constraints",
    "attach_projection",
    "max_constraint_violation",
]

log = logging.getLogger(__name__)

#: Violation above which a loaded state dict is reported (it is projected either way).
_LOAD_WARN_TOL = 1e-3


class ConstrainedConv2d(nn.Conv2d):
    """2-D convolution whose filters are Bayar-Stamm prediction-error filters.

    Input ``(N, C_in, H, W)`` float32 of any value range; output ``(N, C_out, H', W')`` float32
    residuals in the units of the input (offset-invariant: each filter's weights sum to 0).

    Args:
        in_channels: input channels.
        out_channels: number of filters per input channel group (all input channels are mixed,
            as in a normal convolution; the constraint is enforced per (out, in) pair).
        kernel_size: odd filter size (5 in Bayar-Stamm / Deep-RSI, 7 in DeepMammo).
        stride: convolution stride.
        padding: zero padding.
        bias: add a bias (default False: a bias would re-introduce an offset into the residual).

    Raises:
        ConfigError: even or < 3 kernel size.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 5,
        stride: int = 1,
        padding: int = 0,
        bias: bool = False,
    ) -> None:
        if not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
            raise ConfigError(
                f"constrained kernel_size must be an odd int >= 3, got {kernel_size!r}"
            )
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias
        )
        self.register_load_state_dict_post_hook(_project_after_load)

    def reset_parameters(self) -> None:
        """Random prediction-error init: surround ~ U(0.01, 1) scaled to sum 1, centre -1.

        The divisor is a sum of ``k*k - 1 >= 8`` numbers each >= 0.01, so it is >= 0.08: safe.
        Uses the global torch RNG (seed it with ``torch.manual_seed`` for reproducibility).
        """
        k = self.kernel_size[0]
        c = k // 2
        with torch.no_grad():
            w = torch.empty_like(self.weight).uniform_(0.01, 1.0)
            w[:, :, c, c] = 0.0
            w = w / w.sum(dim=(-2, -1), keepdim=True)
            w[:, :, c, c] = -1.0
            self.weight.copy_(w)
            if self.bias is not None:
                self.bias.zero_()

    @torch.no_grad()
    def project_(self) -> None:
        """Project the weights onto the constraint set, in place (see module docstring).

        Filters that already satisfy the constraint to float32 rounding (surround sum within
        ``8 * eps32 * (1 + sum |w_s|)`` of 1 and centre exactly -1) are left bit-identical, so
        the projection is exactly idempotent and a saved/loaded model reproduces its outputs.
        """
        k = self.kernel_size[0]
        c = k // 2
        w = self.weight.detach().to(torch.float64)
        mask = torch.ones((k, k), dtype=torch.float64, device=w.device)
        mask[c, c] = 0.0
        surround = w * mask
        excess = surround.sum(dim=(-2, -1), keepdim=True) - 1.0
        projected = surround - excess / (k * k - 1) * mask
        projected[:, :, c, c] = -1.0
        l1 = surround.abs().sum(dim=(-2, -1), keepdim=True)
        tol = 8 * torch.finfo(torch.float32).eps * (1.0 + l1)
        done = (excess.abs() <= tol) & (w[:, :, c : c + 1, c : c + 1] == -1.0)
        self.weight.copy_(torch.where(done, w, projected).to(self.weight.dtype))

    @torch.no_grad()
    def constraint_violation(self) -> float:
        """Largest absolute deviation from the constraint (centre = -1, surround sum = 1)."""
        k = self.kernel_size[0]
        c = k // 2
        w = self.weight.detach().to(torch.float64)
        centre = w[:, :, c, c]
        surround_sum = w.sum(dim=(-2, -1)) - centre
        return float(
            torch.maximum((centre + 1.0).abs().max(), (surround_sum - 1.0).abs().max())
        )


def _project_after_load(module: nn.Module, incompatible_keys: object) -> None:
    """``load_state_dict`` post-hook: keep the invariant whatever was loaded."""
    assert isinstance(module, ConstrainedConv2d)
    violation = module.constraint_violation()
    if violation > _LOAD_WARN_TOL:
        log.warning(
            "loaded constrained-conv weights violate the constraint by %.3g; projecting", violation
        )
    module.project_()


def project_constraints(model: nn.Module) -> int:
    """Project every :class:`ConstrainedConv2d` inside ``model`` (DDP wrappers included).

    Call after each optimiser step (or use :func:`attach_projection`). Runs under
    ``torch.no_grad`` and modifies ``weight`` in place, so optimiser state stays attached.

    Returns:
        Number of constrained layers projected.
    """
    n = 0
    for module in model.modules():
        if isinstance(module, ConstrainedConv2d):
            module.project_()
            n += 1
    return n


def attach_projection(optimizer: torch.optim.Optimizer, model: nn.Module) -> RemovableHandle:
    """Register a step post-hook so every ``optimizer.step()`` is followed by projection.

    Returns:
        The hook handle (``handle.remove()`` detaches it).
    """

    def _hook(opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        project_constraints(model)

    return optimizer.register_step_post_hook(_hook)


def max_constraint_violation(model: nn.Module) -> float:
    """Largest constraint violation over all constrained layers in ``model`` (0.0 if none)."""
    values = [m.constraint_violation() for m in model.modules() if isinstance(m, ConstrainedConv2d)]
    return max(values, default=0.0)
