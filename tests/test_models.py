"""Model registry, preset output shapes, the patch model and patch aggregation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _helpers import one_torch_thread  # noqa: F401
from medforensics.errors import ConfigError
from medforensics.models import create_model, list_models, register_model
from medforensics.models.constrained import ConstrainedConv2d, attach_projection
from medforensics.models.patch import aggregate_patch_logprobs


def test_registry_lists_presets_and_input_specs():
    names = list_models()
    assert {"deep-rsi", "deepmammo", "patch", "ela-cnn"} <= set(names)
    assert names == sorted(names)
    assert create_model("deep-rsi", 3).input_spec["preprocess"] == "paper-8bit"
    assert create_model("patch", 3, patch=96).input_spec == {
        "patch": 96, "channels": 1, "preprocess": "native"
    }


def test_registry_errors():
    with pytest.raises(ConfigError, match="deep-rsi.*deepmammo") as exc:
        create_model("resnet-9000", 3)
    assert "resnet-9000" in str(exc.value)
    with pytest.raises(ConfigError, match="bad arguments"):
        create_model("patch", 3, no_such_argument=1)
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("patch", 1)
    with pytest.raises(ConfigError, match="input_spec"):
        @register_model("no-spec")
        class NoSpec(torch.nn.Module):
            pass
    with pytest.raises(ConfigError, match="already registered"):
        @register_model("patch")
        class Dup(torch.nn.Module):
            input_spec = {"patch": 64}


def test_create_model_records_rebuild_info():
    m = create_model("patch", 4, patch=96, widths=[8, 16])
    assert (m.model_name, m.num_classes) == ("patch", 4)
    assert m.model_kwargs == {"patch": 96, "widths": [8, 16]}


@pytest.mark.parametrize(
    "name,kw,shape,flat",
    [
        ("deep-rsi", {}, (2, 1, 256, 256), 6272),
        ("deepmammo", {}, (2, 1, 256, 256), 90),
        ("deepmammo", {"pool_stride": 3}, (2, 1, 256, 256), 10),
        ("deepmammo", {"batch_norm": False}, (2, 1, 256, 256), 90),
        ("ela-cnn", {}, (2, 1, 128, 128), 4096),
        ("ela-cnn", {"in_channels": 3}, (2, 3, 128, 128), 4096),
        ("patch", {}, (3, 1, 64, 64), None),
        ("patch", {"patch": 96}, (3, 1, 96, 96), None),
        ("patch", {}, (3, 1, 65, 65), None),
        ("patch", {"scale_feature": True}, (3, 1, 128, 128), None),
    ],
)
def test_preset_output_shapes(name, kw, shape, flat):
    torch.manual_seed(0)
    m = create_model(name, 5, **kw).eval()
    x = torch.rand(shape) * 255
    with torch.no_grad():
        out = m(x)
        emb = m.embed(x)
    assert out.shape == (shape[0], 5)
    assert torch.isfinite(out).all()
    assert emb.shape[0] == shape[0] and emb.ndim == 2
    assert torch.allclose(m.classifier(emb), out, atol=1e-5)
    if flat is not None:
        assert m.flat_features == flat


def test_deep_rsi_layer_sizes_match_table_1():
    m = create_model("deep-rsi", 4).eval()
    x = torch.zeros(1, 1, 256, 256)
    sizes = []
    with torch.no_grad():
        z = m.constrained(x)
        sizes.append(tuple(z.shape[1:]))
        for block in m.features:
            z = block(z)
            sizes.append(tuple(z.shape[1:]))
    assert sizes == [(3, 252, 252), (96, 63, 63), (64, 31, 31), (64, 15, 15), (128, 7, 7)]
    assert m.head[0].in_features == 6272 == 128 * 7 * 7
    convs = [mod for mod in m.features.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [
        (96, 7, 2, 4), (64, 5, 1, 2), (64, 5, 1, 2), (128, 1, 1, 0)
    ]
    assert isinstance(m.constrained, ConstrainedConv2d) and m.constrained.out_channels == 3


def test_patch_model_is_offset_and_gain_invariant_and_safe_on_constant_patches():
    torch.manual_seed(1)
    m = create_model("patch", 3, scale_feature=False).eval()
    x = torch.randn(4, 1, 64, 64) * 7 + 800
    with torch.no_grad():
        a = m(x)
        b = m(x * 16 + 3000)  # 12-bit -> 16-bit style gain and offset
        c = m(torch.full((2, 1, 64, 64), 4095.0))
    assert torch.allclose(a, b, atol=1e-3)
    assert torch.isfinite(c).all()
    # the default model also sees the absolute noise level (log scale): offset-invariant,
    # but a gain change is visible to it
    d = create_model("patch", 3).eval()
    with torch.no_grad():
        assert torch.allclose(d(x), d(x + 3000), atol=1e-3)
        assert not torch.allclose(d(x), d(x * 16), atol=1e-3)
        assert torch.isfinite(d(torch.full((2, 1, 64, 64), 4095.0))).all()
    with pytest.raises(ConfigError):
        m(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ConfigError):
        m(torch.zeros(1, 1, 8, 8))


def test_patch_model_learns_noise_texture():
    """Two 'devices' whose noise differs only in spatial correlation, not in level."""
    torch.manual_seed(2)
    gen = torch.Generator().manual_seed(2)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 2
        w = torch.randn(n, 1, 33, 33, generator=gen)
        smooth = (w[..., 1:, :] + w[..., :-1, :]) / 2 ** 0.5  # vertically correlated noise
        x = torch.where(y[:, None, None, None] == 1, smooth[..., :32, :32], w[..., :32, :32])
        return x * 5 + 1000 + torch.randn(n, 1, 1, 1, generator=gen) * 100, y

    m = create_model("patch", 2, patch=32, widths=[16, 16])
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    attach_projection(opt, m)
    for _ in range(60):
        x, y = batch(32)
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
    m.eval()
    x, y = batch(200)
    with torch.no_grad():
        acc = (m(x).argmax(1) == y).float().mean().item()
    assert acc > 0.9


def test_aggregate_patch_logprobs():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [3.0, -2.0, 0.0]])
    raw = aggregate_patch_logprobs(logits, normalize=False)
    assert torch.allclose(raw, torch.log_softmax(logits, -1).mean(0))
    out = aggregate_patch_logprobs(logits)
    assert torch.allclose(out.exp().sum(), torch.tensor(1.0))
    assert out.argmax() == raw.argmax() == 0
    batched = aggregate_patch_logprobs(torch.stack([logits, logits.flip(-1)]))
    assert batched.shape == (2, 3)
    assert torch.allclose(batched[0], out)
    npy = aggregate_patch_logprobs(logits.numpy())
    assert isinstance(npy, np.ndarray) and np.allclose(npy, out.numpy())
    # one confident wrong patch does not outvote many moderately right ones
    many = torch.tensor([[1.0, 0.0]] * 9 + [[-6.0, 0.0]])
    assert aggregate_patch_logprobs(many).argmax() == 0
    with pytest.raises(ConfigError):
        aggregate_patch_logprobs(torch.zeros(0, 3))
    with pytest.raises(ConfigError):
        aggregate_patch_logprobs(torch.zeros(3))


def test_training_throughput_helper_runs_real_steps():
    from medforensics.models.bench import training_throughput

    r = training_throughput("patch", batch=4, size=32, steps=2, warmup=1, widths=[8, 8])
    assert r["items_per_s"] > 0 and r["size"] == 32 and r["threads"] == 1
    assert torch.get_num_threads() == 1  # restored to the fixture's value


def test_presets_register_their_training_defaults():
    from medforensics.models.registry import training_defaults

    rsi, mammo = training_defaults("deep-rsi"), training_defaults("deepmammo")
    assert (rsi.epochs, rsi.lr, rsi.optimizer, rsi.size) == (100, 1e-4, "adam", 256)
    assert rsi.sampling == "weighted" and mammo.sampling == "balanced"
    ela = training_defaults("ela-cnn")
    assert (ela.epochs, ela.batch_size, ela.lr, ela.size, ela.ela_quality) == (30, 32, 1e-3,
                                                                              128, 90)
    patch = training_defaults("patch")
    assert patch.patch == 64 and patch.lr_schedule == "cosine" and patch.select == "loss"
    with pytest.raises(ConfigError, match="unknown model"):
        training_defaults("resnet-9000")
