"""Bayar-Stamm constrained layer: invariant under init, projection, real training, loading, DDP."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _helpers import one_torch_thread, run_torchrun  # noqa: F401
from medforensics.errors import ConfigError
from medforensics.models.constrained import (
    ConstrainedConv2d,
    attach_projection,
    max_constraint_violation,
    project_constraints,
)

TOL = 2e-6


def _check_invariant(layer: ConstrainedConv2d, tol: float = TOL) -> None:
    w = layer.weight.detach().double()
    c = layer.kernel_size[0] // 2
    assert torch.isfinite(w).all()
    centre = w[:, :, c, c]
    assert torch.allclose(centre, torch.full_like(centre, -1.0), atol=tol)
    surround = w.sum(dim=(-2, -1)) - centre
    assert torch.allclose(surround, torch.ones_like(surround), atol=tol)


def _tiny_net(k: int = 5) -> nn.Sequential:
    return nn.Sequential(
        ConstrainedConv2d(1, 3, kernel_size=k),
        nn.Conv2d(3, 8, 3, stride=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Linear(8, 3),
    )


def test_init_satisfies_constraint_and_is_a_weighted_average():
    torch.manual_seed(0)
    for k in (3, 5, 7):
        layer = ConstrainedConv2d(2, 4, kernel_size=k)
        _check_invariant(layer)
        w = layer.weight.detach()
        c = k // 2
        mask = torch.ones(k, k, dtype=torch.bool)
        mask[c, c] = False
        assert (w[:, :, mask] > 0).all()  # init: a proper predictor (positive weights)


def test_constrained_output_ignores_offset():
    torch.manual_seed(1)
    layer = ConstrainedConv2d(1, 3, kernel_size=5)
    x = torch.randn(2, 1, 20, 20)
    # weights sum to 0 for every filter -> adding a constant changes nothing
    assert torch.allclose(layer(x), layer(x + 1000.0), atol=2e-3)


@pytest.mark.parametrize("k", [3, 5, 7])
def test_even_kernel_rejected_and_projection_idempotent(k):
    with pytest.raises(ConfigError):
        ConstrainedConv2d(1, 1, kernel_size=k + 1)
    torch.manual_seed(2)
    layer = ConstrainedConv2d(3, 5, kernel_size=k)
    with torch.no_grad():
        layer.weight.normal_(0, 10)
    assert layer.constraint_violation() > 1
    layer.project_()
    _check_invariant(layer)
    once = layer.weight.detach().clone()
    layer.project_()
    assert torch.equal(layer.weight, once)  # exactly idempotent


def test_projection_is_euclidean_nearest_point():
    """The projection moves the surround by a constant: no other feasible point is closer."""
    torch.manual_seed(3)
    layer = ConstrainedConv2d(1, 1, kernel_size=5)
    with torch.no_grad():
        layer.weight.normal_()
    before = layer.weight.detach().clone()
    layer.project_()
    after = layer.weight.detach()
    delta = (after - before)[0, 0].flatten().tolist()
    delta.pop(12)  # centre
    assert max(delta) - min(delta) < 1e-6  # uniform shift of all 24 surround weights
    # any other feasible point (after + zero-sum perturbation of the surround) is farther
    pert = torch.randn(5, 5)
    pert[2, 2] = 0
    pert -= pert.sum() / 24
    pert[2, 2] = 0
    other = after + 0.1 * pert
    assert (other - before).norm() > (after - before).norm()


def test_adversarial_near_zero_surround_sum_is_safe():
    """Surround summing to ~0 (where divide-by-sum projection explodes) stays finite."""
    layer = ConstrainedConv2d(1, 2, kernel_size=5)
    with torch.no_grad():
        w = torch.randn(2, 1, 5, 5)
        w[:, :, 2, 2] = 0
        w -= w.sum(dim=(-2, -1), keepdim=True) / 24
        w[:, :, 2, 2] = 0
        w[:, :, 0, 0] += 1e-9  # surround sum ~1e-9
        layer.weight.copy_(w)
    naive = w / w.sum(dim=(-2, -1), keepdim=True)  # what divide-by-sum would produce
    assert naive.abs().max() > 1e6
    layer.project_()
    _check_invariant(layer)
    assert layer.weight.abs().max() < 10


@pytest.mark.parametrize(
    "opt_name,lr,adversarial",
    [("adam", 1e-3, False), ("adam", 1.0, False), ("sgd", 10.0, False), ("adam", 0.3, True)],
)
def test_invariant_after_200_real_steps(opt_name, lr, adversarial):
    torch.manual_seed(4)
    net = _tiny_net()
    layer = net[0]
    if adversarial:
        with torch.no_grad():
            layer.weight.normal_()
            layer.weight[:, :, 2, 2] = 0
            layer.weight -= layer.weight.sum(dim=(-2, -1), keepdim=True) / 24
            layer.weight[:, :, 2, 2] = 0
        project_constraints(net)
    start = layer.weight.detach().clone()
    x = torch.randn(32, 1, 24, 24)
    x[:11] += 0.5 * torch.randn(11, 1, 24, 24).cumsum(-1)  # classes differ in texture
    y = torch.arange(32) % 3
    if opt_name == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=lr)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    handle = attach_projection(opt, net)
    losses = []
    for _ in range(200):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()  # the hook projects
        losses.append(loss.item())
        assert layer.constraint_violation() < 1e-5
    handle.remove()
    _check_invariant(layer, tol=1e-5)
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert not torch.allclose(layer.weight, start)  # the layer did learn
    if lr <= 1e-3:
        assert min(losses[-10:]) < losses[0]


def test_project_constraints_finds_nested_layers_and_reports_violation():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Sequential(ConstrainedConv2d(1, 2, 5)), ConstrainedConv2d(2, 2, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    assert max_constraint_violation(net) > 0.1
    assert project_constraints(net) == 2
    assert max_constraint_violation(net) < TOL
    assert max_constraint_violation(nn.Linear(2, 2)) == 0.0


def test_state_dict_round_trip_and_loading_violating_weights(caplog):
    torch.manual_seed(6)
    a = ConstrainedConv2d(1, 3, 5)
    b = ConstrainedConv2d(1, 3, 5)
    assert not torch.allclose(a.weight, b.weight)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.weight, b.weight)  # loading a valid state changes nothing
    _check_invariant(b)
    bad = {"weight": torch.randn(3, 1, 5, 5) * 5}
    with caplog.at_level(logging.WARNING, logger="medforensics.models.constrained"):
        b.load_state_dict(bad)
    assert "violate" in caplog.text
    _check_invariant(b)


_DDP_WORKER = """
import os, sys
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from medforensics.models.constrained import ConstrainedConv2d, project_constraints

torch.set_num_threads(1)
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(100 + rank)  # different init per rank: DDP must broadcast rank 0's
net = DDP(nn.Sequential(ConstrainedConv2d(1, 3, kernel_size=5), nn.Conv2d(3, 8, 3, stride=2),
                        nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                        nn.Linear(8, 3)))
opt = torch.optim.Adam(net.parameters(), lr=0.05)
gen = torch.Generator().manual_seed(rank)
for _ in range(20):
    x = torch.randn(8, 1, 20, 20, generator=gen)
    y = torch.randint(0, 3, (8,), generator=gen)
    opt.zero_grad()
    F.cross_entropy(net(x), y).backward()
    opt.step()
    project_constraints(net)  # through the DDP wrapper
w = net.module[0].weight.detach().clone()
gathered = [torch.empty_like(w) for _ in range(world)]
dist.all_gather(gathered, w)
diff = float((gathered[0] - gathered[1]).abs().max())
violation = net.module[0].constraint_violation()
with open(os.path.join(sys.argv[1], f"rank{rank}.txt"), "w") as fh:
    fh.write(f"{diff} {violation}")
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_ddp_two_ranks_identical_and_constrained(tmp_path):
    """Two gloo ranks under torchrun: identical weights, constraint kept after every step."""
    script = tmp_path / "worker.py"
    script.write_text(_DDP_WORKER)
    proc = run_torchrun([str(script), str(tmp_path)])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for rank in range(2):
        diff, violation = map(float, (tmp_path / f"rank{rank}.txt").read_text().split())
        assert diff == 0.0
        assert violation < TOL
