"""Tests for ONNX export (medforensics.models.export) and the `export` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from medforensics.errors import ConfigError, ModelFileError  # noqa: E402
from medforensics.models.export import (  # noqa: E402
    INPUT_NAME,
    OUTPUT_NAME,
    ParityReport,
    check_parity,
    export_onnx,
    random_inputs,
    read_onnx_metadata,
)
from medforensics.models.io import save_model  # noqa: E402
from medforensics.models.registry import create_model  # noqa: E402

CLASSES = ["Acme X1", "Beta Y2", "Gamma Z3"]


def _trained_like(name: str, seed: int = 0, **kw: object) -> torch.nn.Module:
    """A model whose weights look trained: non-trivial BN statistics, logits of order 10."""
    torch.manual_seed(seed)
    model = create_model(name, len(CLASSES), **kw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.5, generator=g)
                mod.running_var.uniform_(0.5, 2.0, generator=g)
                mod.weight.uniform_(0.5, 1.5, generator=g)
                mod.bias.normal_(0, 0.2, generator=g)
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.mul_(60.0)
    return model.eval()


def _run(tmp_path: Path, name: str, **kw: object) -> tuple[Path, torch.nn.Module]:
    model = _trained_like(name, **kw)
    run = tmp_path / f"run-{name}"
    save_model(run, model, {"classes": CLASSES, "label_column": "model",
                            "task": "source-identification"})
    return run, model


def _dims(onnx_path: Path) -> list[object]:
    m = onnx.load(str(onnx_path))
    (inp,) = [i for i in m.graph.input if i.name == INPUT_NAME]
    return [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]


@pytest.mark.parametrize(
    ("name", "spatial"),
    [("patch", 64), ("deep-rsi", 256), ("deepmammo", 256), ("ela-cnn", 128)],
)
def test_every_preset_exports_with_parity_torchscript(tmp_path: Path, name: str,
                                                      spatial: int) -> None:
    run, model = _run(tmp_path, name)
    out = tmp_path / f"{name}.onnx"
    res = export_onnx(run, out, exporter="torchscript")
    assert out.is_file() and res.bytes == out.stat().st_size
    assert res.opset >= 17
    p = res.parity
    assert p is not None and p.passed
    assert p.max_abs_logit > 1.0  # the comparison is not on near-zero logits
    assert p.max_abs_diff <= 1e-4 * p.max_abs_logit
    assert p.argmax_agreement == 1.0
    batches = {s[0] for s in p.shapes}
    assert {1, 3} <= batches  # not only the export's example batch of 2
    dims = _dims(out)
    assert isinstance(dims[0], str)  # dynamic batch
    if name == "patch":
        assert all(isinstance(d, str) for d in (dims[2], dims[3]))
        assert any(s[2] % 2 == 1 for s in p.shapes)  # odd sides were checked
    else:
        assert dims[2:] == [spatial, spatial]
    meta = read_onnx_metadata(out)
    assert meta["preset"] == name and meta["classes"] == CLASSES
    assert meta["num_classes"] == 3 and meta["label_column"] == "model"
    assert meta["input_spec"]["model"] == model.input_spec
    assert meta["input_spec"]["layout"] == "NCHW"
    saved = json.loads((run / "model.json").read_text())
    assert meta["weights_sha256"] == saved["weights_sha256"]
    assert meta["opset"] == res.opset and meta["exporter"] == "torchscript"


@pytest.mark.slow  # the dynamo exporter with symbolic H, W takes ~10-30 s on a busy CPU
def test_dynamo_export_patch_dynamic_spatial_axes(tmp_path: Path) -> None:
    run, model = _run(tmp_path, "patch", patch=32)
    out = tmp_path / "patch.onnx"
    res = export_onnx(run, out)  # default exporter: dynamo
    assert res.exporter == "dynamo" and res.opset == 18
    assert res.parity is not None and res.parity.passed
    dims = _dims(out)
    assert isinstance(dims[0], str) and isinstance(dims[2], str) and isinstance(dims[3], str)
    # an independent run at sizes the exporter never saw
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(11)
    for shape in [(5, 1, 47, 129), (1, 1, 16, 16)]:
        x = random_inputs(model, shape, rng)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        assert got.shape == (shape[0], 3)
        assert np.max(np.abs(got - ref)) <= 1e-4 * max(1.0, np.abs(ref).max())
    assert read_onnx_metadata(out)["input_spec"]["dynamic_axes"] == {
        "N": "batch", "H": "height", "W": "width"}


def test_dynamo_export_fixed_size_preset(tmp_path: Path) -> None:
    run, _ = _run(tmp_path, "deepmammo")
    out = tmp_path / "dm.onnx"
    res = export_onnx(run, out, exporter="dynamo", opset=17)
    assert res.opset == 17 and res.parity is not None and res.parity.passed
    assert _dims(out)[2:] == [256, 256]


def test_bad_arguments_and_inputs(tmp_path: Path) -> None:
    run, _ = _run(tmp_path, "ela-cnn")
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(run, tmp_path / "a.onnx", opset=16)
    with pytest.raises(ConfigError, match=".onnx"):
        export_onnx(run, tmp_path / "a.pt")
    with pytest.raises(ConfigError, match="exporter"):
        export_onnx(run, tmp_path / "a.onnx", exporter="magic")
    with pytest.raises(ModelFileError):
        export_onnx(tmp_path / "no-such-run", tmp_path / "a.onnx")
    foreign = tmp_path / "foreign.onnx"
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT,
                                                                       [1])])
    onnx.save(onnx.helper.make_model(graph), str(foreign))
    with pytest.raises(ModelFileError, match="not exported by medforensics"):
        read_onnx_metadata(foreign)
    with pytest.raises(ModelFileError):
        read_onnx_metadata(run / "model.json")


def test_failed_parity_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import medforensics.models.export as ex

    run, _ = _run(tmp_path, "ela-cnn")
    bad = ParityReport(shapes=[(1, 1, 128, 128)], max_abs_diff=1.0, max_abs_logit=2.0,
                       allowed=2e-4, argmax_agreement=1.0, tolerance=1e-4, passed=False)
    monkeypatch.setattr(ex, "check_parity", lambda *a, **k: bad)
    out = tmp_path / "x.onnx"
    with pytest.raises(ConfigError, match="parity check failed"):
        export_onnx(run, out, exporter="torchscript")
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_check_parity_detects_a_different_model(tmp_path: Path) -> None:
    run, model = _run(tmp_path, "ela-cnn")
    out = tmp_path / "e.onnx"
    export_onnx(run, out, exporter="torchscript", check=False)
    assert check_parity(model, out).passed
    other = _trained_like("ela-cnn", seed=1)
    rep = check_parity(other, out)
    assert not rep.passed and rep.max_abs_diff > rep.allowed


def test_cli_export(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medforensics.cli import app

    run, _ = _run(tmp_path, "ela-cnn")
    out = tmp_path / "cli" / "model.onnx"
    res = CliRunner().invoke(app, ["export", str(run), "--onnx", str(out), "--exporter",
                                   "torchscript"])
    assert res.exit_code == 0, res.output
    assert out.is_file()
    assert "parity with onnxruntime" in res.output and "agreement 100%" in res.output
    bad = CliRunner().invoke(app, ["export", str(run), "--onnx", str(out), "--opset", "12"])
    assert bad.exit_code == 2 and "opset" in bad.output
