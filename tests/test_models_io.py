"""safetensors + JSON model files: round trip, metadata, and refusal of anything else."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from _helpers import one_torch_thread  # noqa: F401
from medforensics import __version__
from medforensics.errors import ConfigError, ModelFileError
from medforensics.models import create_model
from medforensics.models.constrained import attach_projection, max_constraint_violation
from medforensics.models.io import load_model, save_model


def _trained_patch_model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = create_model("patch", 3, patch=32, widths=[8, 16])
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    attach_projection(opt, m)
    for _ in range(3):  # move weights and BN running stats away from init
        opt.zero_grad()
        m(torch.randn(8, 1, 32, 32) * 10 + 500).sum().backward()
        opt.step()
    return m.eval()


META = {"classes": ["A", "B", "C"], "label_column": "model", "seed": 7,
        "training_manifest_sha256": "ab" * 32}


@pytest.mark.parametrize("target", ["dir", "file"])
def test_round_trip_identical_outputs(tmp_path, target):
    m = _trained_patch_model()
    dest = tmp_path / "run" if target == "dir" else tmp_path / "best.safetensors"
    json_path = save_model(dest, m, META)
    assert json_path == (dest / "model.json" if target == "dir" else tmp_path / "best.json")
    meta = json.loads(json_path.read_text())
    assert meta["name"] == "patch" and meta["num_classes"] == 3
    assert meta["classes"] == ["A", "B", "C"] and meta["label_column"] == "model"
    assert meta["input_spec"] == {"patch": 32, "channels": 1, "preprocess": "native"}
    assert meta["preprocess"] == "native" and meta["software_version"] == __version__
    assert meta["seed"] == 7 and len(meta["weights_sha256"]) == 64 and meta["created"]
    assert meta["model_kwargs"] == {"patch": 32, "widths": [8, 16]}

    loaded, meta2 = load_model(dest)
    assert meta2 == meta and not loaded.training
    x = torch.randn(5, 1, 32, 32) * 10 + 500
    with torch.no_grad():
        assert torch.equal(m(x), loaded(x))
    for k, v in m.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert max_constraint_violation(loaded) < 2e-6
    # the json and the safetensors path work too
    load_model(json_path)
    load_model(json_path.with_suffix(".safetensors"))


@pytest.mark.parametrize("name,kw", [("deep-rsi", {}), ("deepmammo", {"pool_stride": 3}),
                                     ("ela-cnn", {"in_channels": 3})])
def test_round_trip_other_presets(tmp_path, name, kw):
    torch.manual_seed(1)
    m = create_model(name, 2, **kw).eval()
    save_model(tmp_path, m, {})
    loaded, meta = load_model(tmp_path)
    assert meta["model_kwargs"] == kw and meta["classes"] is None
    size = m.input_spec["size"]
    x = torch.rand(1, m.input_spec["channels"], size, size) * 255
    with torch.no_grad():
        assert torch.equal(m(x), loaded(x))


def test_loader_refuses_pickles_and_never_unpickles(tmp_path, monkeypatch):
    def boom(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("torch.load / pickle must never be called")

    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    m = _trained_patch_model()
    for suffix in (".pt", ".pth", ".pkl", ".bin", ".ckpt"):
        p = tmp_path / f"model{suffix}"
        p.write_bytes(pickle.dumps(m.state_dict()))
        with pytest.raises(ModelFileError, match="refusing"):
            load_model(p)
    # a pickle renamed to .safetensors, with a forged json hash
    run = tmp_path / "run"
    save_model(run, m, META)
    (run / "model.safetensors").write_bytes(pickle.dumps(m.state_dict()))
    with pytest.raises(ModelFileError, match="sha256"):
        load_model(run)
    meta = json.loads((run / "model.json").read_text())
    import hashlib

    meta["weights_sha256"] = hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()
    (run / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="not a safetensors"):
        load_model(run)


def test_loader_refuses_missing_or_mismatched_files(tmp_path):
    m = _trained_patch_model()
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "empty")
    run = tmp_path / "run"
    save_model(run, m, META)
    # weights of another architecture under this json -> key mismatch
    other = tmp_path / "other"
    save_model(other, create_model("patch", 3, patch=32, widths=[8, 8, 16]), {})
    meta = json.loads((run / "model.json").read_text())
    (run / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    meta["weights_sha256"] = json.loads((other / "model.json").read_text())["weights_sha256"]
    (run / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="do not match"):
        load_model(run)
    # unknown preset, wrong format tag, path traversal in weights_file, missing weights
    for change in ({"name": "nope"}, {"format": "x"}, {"weights_file": "../x.safetensors"}):
        bad = dict(meta, **change)
        (run / "model.json").write_text(json.dumps(bad))
        with pytest.raises(ModelFileError):
            load_model(run)
    (run / "model.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="unreadable"):
        load_model(run)
    (other / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match="not found"):
        load_model(other)


def test_save_validates_metadata(tmp_path):
    m = _trained_patch_model()
    with pytest.raises(ConfigError, match="classes"):
        save_model(tmp_path, m, {"classes": ["A", "B"]})
    with pytest.raises(ConfigError, match="weights_sha256"):
        save_model(tmp_path, m, {"weights_sha256": "0" * 64})
    with pytest.raises(ConfigError, match="name"):
        save_model(tmp_path, m, {"name": "deep-rsi"})
    with pytest.raises(ConfigError, match="JSON"):
        save_model(tmp_path, m, {"extra": object()})
    with pytest.raises(ConfigError, match="create_model"):
        save_model(tmp_path, torch.nn.Linear(2, 2), {})
    # equal values of model-derived keys are accepted (as the training engine passes them)
    save_model(tmp_path, m, {"input_spec": dict(m.input_spec), "software_version": __version__,
                             "preset": "patch"})
    assert not list(tmp_path.glob("*.tmp"))


def test_old_manifest_key_loads_as_the_one_key(tmp_path):
    """A run written with ``manifest_sha256`` (the old source-run key) still loads, and the
    metadata then holds the hash under ``training_manifest_sha256`` only."""
    from medforensics.models.runfiles import record_files

    m = _trained_patch_model()
    save_model(tmp_path, m, {"classes": ["A", "B", "C"]})
    meta = json.loads((tmp_path / "model.json").read_text())
    del meta["training_manifest_sha256"]
    meta["manifest_sha256"] = "cd" * 32
    (tmp_path / "model.json").write_text(json.dumps(meta))
    record_files(tmp_path, ["model.json"])
    _, loaded = load_model(tmp_path)
    assert loaded["training_manifest_sha256"] == "cd" * 32 and "manifest_sha256" not in loaded
    assert loaded["classes"] == ["A", "B", "C"] and loaded["weights_sha256"] == meta[
        "weights_sha256"]
    # a writer passing the old key writes the one key
    save_model(tmp_path / "new", m, {"manifest_sha256": "ef" * 32})
    written = json.loads((tmp_path / "new" / "model.json").read_text())
    assert written["training_manifest_sha256"] == "ef" * 32 and "manifest_sha256" not in written


def test_model_json_structure_is_validated(tmp_path):
    """Wrong types are refused on load with the key named (ranges stay with runfiles)."""
    from medforensics.errors import RunIntegrityError
    from medforensics.models.runfiles import record_files

    save_model(tmp_path, _trained_patch_model(), META)
    good = json.loads((tmp_path / "model.json").read_text())
    for change, key in (({"classes": "A"}, "classes"), ({"model_kwargs": [1]}, "model_kwargs"),
                        ({"weights_sha256": None}, "weights_sha256")):
        (tmp_path / "model.json").write_text(json.dumps(good | change))
        record_files(tmp_path, ["model.json"])
        with pytest.raises(ModelFileError, match=key):
            load_model(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps(good | {"num_classes": 0}))
    with pytest.raises(RunIntegrityError, match="num_classes"):
        load_model(tmp_path)
