"""Tests of the training engine (medforensics.training.engine) on small synthetic data.

Images come from an in-memory ImageSource: three "devices" whose noise differs only in its
spatial correlation (white / horizontally / vertically correlated) on top of the same kind of
smooth content, so a model can only learn the class from the noise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from _helpers import one_torch_thread  # noqa: F401

from medforensics.errors import ConfigError, ManifestError
from medforensics.training.checkpoint import decode_tree, encode_tree
from medforensics.training.engine import train

CLASSES = ["vendorA", "vendorB", "vendorC"]
SIZE = 80


def synth_image(cls: int, seed: int, size: int = SIZE) -> np.ndarray:
    """float32 (size, size) stored values: smooth content + class-specific noise texture."""
    rng = np.random.default_rng([cls, seed, 11])
    yy, xx = np.mgrid[0:size, 0:size] / size
    content = 1500 + 400 * np.sin(rng.uniform(1, 4) * xx + rng.uniform(0, 6)) * yy
    n = rng.normal(0, 12, (size + 1, size + 1))
    if cls == 1:
        n = n + np.roll(n, 1, axis=1)
    elif cls == 2:
        n = n + np.roll(n, 1, axis=0)
    return (content + n[:size, :size]).astype(np.float32)


class DictSource:
    """ImageSource over synthetic images; records every path it is asked for."""

    def __init__(self, images: dict[str, np.ndarray]) -> None:
        self.images = images
        self.accessed: set[str] = set()

    def get(self, path: str) -> np.ndarray:
        self.accessed.add(path)
        if path not in self.images:
            raise FileNotFoundError(path)
        return self.images[path]

    def crop(self, path: str, y: int, x: int, h: int, w: int) -> np.ndarray:
        return np.array(self.get(path)[y : y + h, x : x + w])

    def shape(self, path: str) -> tuple[int, int]:
        return self.get(path).shape


def make_rows(n_train: int = 6, n_val: int = 3) -> tuple[list[dict], DictSource]:
    rows, images = [], {}
    for c, name in enumerate(CLASSES):
        for i in range(n_train + n_val):
            path = f"mem://{name}/{i}.dcm"
            images[path] = synth_image(c, i)
            split = "train" if i < n_train else "val"
            rows.append({"path": path, "model": name, "status": "eligible", "split": split,
                         "PatientID": f"{name}-{i}"})
        # Held-out test rows point to files that do not exist: they must never be opened.
        rows.append({"path": f"/nonexistent/test-{name}.dcm", "model": name,
                     "status": "eligible", "split": "test", "PatientID": f"t-{name}"})
    # An ineligible row is skipped (and reported in the log), not read either.
    rows.append({"path": "/nonexistent/bad.dcm", "model": "vendorA", "status": "unreadable",
                 "split": "train", "PatientID": "x"})
    return rows, DictSource(images)


FAST = dict(label="model", preset="patch", patch=32, patches_per_image=8, val_patches=4,
            batch_size=16, lr=2e-3, progress=False, outlier_devices=2)


def run(tmp: Path, rows: list[dict], source: DictSource, **kw: object):
    return train(rows, image_source=source, **(FAST | {"out_dir": str(tmp)} | kw))


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def checkpoint_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    ck = run_dir / "checkpoints" / (run_dir / "checkpoints" / "LATEST").read_text().strip()
    out = {}
    for name in ("model", "best", "extra"):
        out |= {f"{name}/{k}": v for k, v in load_file(str(ck / f"{name}.safetensors")).items()}
    return out


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_tiny_training_learns_and_writes_run(tmp_path: Path) -> None:
    rows, source = make_rows()
    res = run(tmp_path, rows, source, epochs=4)
    assert res.classes == CLASSES
    assert res.epochs_run == 4
    # Learned something: well above chance (1/3) on the held-out validation images.
    assert max(m["val_bacc"] for m in res.metrics) >= 0.65
    # patch keeps the epoch with the lowest validation loss (select="loss")
    losses = [m["val_loss"] for m in res.metrics]
    assert res.best_epoch == 1 + int(np.argmin(losses))
    assert res.best_val_balanced_accuracy == res.metrics[res.best_epoch - 1]["val_bacc"]
    # Test rows and the ineligible row were never opened.
    assert not any(p.startswith("/nonexistent") for p in source.accessed)
    # Per-epoch metrics, JSONL + CSV.
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4]
    first = json.loads(lines[0])
    assert {"train_loss", "val_loss", "val_acc", "val_bacc", "best_epoch"} <= set(first)
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 5
    # Final model + metadata.
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["classes"] == CLASSES and meta["label_column"] == "model"
    assert meta["preset"] == "patch" and meta["best_epoch"] == res.best_epoch
    assert meta["seed"] == 0 and meta["epochs"] == 4 and len(meta["training_manifest_sha256"]) == 64
    assert meta["input_spec"]["patch"] == 32
    from medforensics.models.io import load_model

    model, meta2 = load_model(tmp_path)
    assert meta2["classes"] == CLASSES
    # The saved weights are the best epoch's (kept in the checkpoint as best.safetensors).
    best = {k[5:]: v for k, v in checkpoint_tensors(tmp_path).items() if k.startswith("best/")}
    assert_same(final_weights(tmp_path), best)


def test_same_seed_same_weights_other_seed_differs(tmp_path: Path) -> None:
    rows, source = make_rows(4, 2)
    run(tmp_path / "a", rows, source, epochs=2)
    run(tmp_path / "b", rows, source, epochs=2)
    assert_same(checkpoint_tensors(tmp_path / "a"), checkpoint_tensors(tmp_path / "b"))
    run(tmp_path / "c", rows, source, epochs=2, seed=1)
    a, c = final_weights(tmp_path / "a"), final_weights(tmp_path / "c")
    assert any(not torch.equal(a[k], c[k]) for k in a)


class Killed(RuntimeError):
    pass


@pytest.mark.parametrize("sampling", ["weighted", "balanced"])
def test_resume_after_kill_is_bit_identical(tmp_path: Path, sampling: str) -> None:
    rows, source = make_rows(4, 2)
    full = run(tmp_path / "full", rows, source, epochs=3, sampling=sampling)

    def kill_after_2(rec: dict) -> None:
        if rec["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        run(tmp_path / "cut", rows, source, epochs=3, sampling=sampling,
            on_epoch_end=kill_after_2)
    assert not (tmp_path / "cut" / "model.json").exists()
    resumed = run(tmp_path / "cut", rows, source, epochs=3, sampling=sampling, resume=True)
    assert resumed.epochs_run == 1
    # Model, best model, optimizer state and RNG states after epoch 3 are bit-identical.
    assert_same(checkpoint_tensors(tmp_path / "full"), checkpoint_tensors(tmp_path / "cut"))
    assert_same(final_weights(tmp_path / "full"), final_weights(tmp_path / "cut"))
    drop = ("seconds",)
    strip = [{k: v for k, v in m.items() if k not in drop} for m in full.metrics]
    assert strip == [{k: v for k, v in m.items() if k not in drop} for m in resumed.metrics]


def test_run_directory_holds_no_pickle(tmp_path: Path) -> None:
    rows, source = make_rows(3, 1)
    run(tmp_path, rows, source, epochs=1)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files
    for p in files:
        head = p.read_bytes()[:2]
        assert head[:1] != b"\x80", f"{p} looks like a pickle"
        assert head != b"PK", f"{p} looks like a torch.save zip archive"
        outlier_image = p.parent.name == "outlier_devices" and p.suffix == ".png"
        assert (p.suffix in {".safetensors", ".json", ".jsonl", ".csv"} or p.name == "LATEST"
                or outlier_image), p
    for p in tmp_path.rglob("*.safetensors"):
        load_file(str(p))  # parses as safetensors


def test_existing_run_needs_resume_and_same_settings(tmp_path: Path) -> None:
    rows, source = make_rows(3, 1)
    run(tmp_path, rows, source, epochs=1)
    with pytest.raises(ConfigError, match="resume"):
        run(tmp_path, rows, source, epochs=2)
    with pytest.raises(ConfigError, match="lr"):
        run(tmp_path, rows, source, epochs=2, resume=True, lr=1e-3)
    # Resuming a finished run with the same epochs trains nothing.
    res = run(tmp_path, rows, source, epochs=1, resume=True)
    assert res.epochs_run == 0 and [m["epoch"] for m in res.metrics] == [1]


def test_bad_configuration_is_reported(tmp_path: Path) -> None:
    rows, source = make_rows(2, 1)
    with pytest.raises(ConfigError, match="preset"):
        run(tmp_path, rows, source, preset="nope")
    with pytest.raises(ConfigError, match="label"):
        run(tmp_path, rows, source, label="colour")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            run(tmp_path, rows, source, device="cuda")
    no_split = [{k: v for k, v in r.items() if k != "split"} for r in rows]
    with pytest.raises(ManifestError, match="split"):
        run(tmp_path, no_split, source)
    one_class = [r for r in rows if r["model"] == "vendorA"]
    with pytest.raises(ManifestError, match="2 classes"):
        run(tmp_path, one_class, source)
    assert not any(p.startswith("/nonexistent") for p in source.accessed)


def test_encode_tree_roundtrips_optimizer_and_rng_states() -> None:
    import random

    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=1e-3)
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()
    state = {"opt": opt.state_dict(), "np": np.random.get_state(), "py": random.getstate(),
             "torch": torch.get_rng_state(), "inf": float("-inf")}
    tensors: dict[str, torch.Tensor] = {}
    data = encode_tree(state, tensors)
    json.dumps(data)  # plain JSON
    back = decode_tree(json.loads(json.dumps(data)), tensors)
    assert back["opt"]["param_groups"][0]["betas"] == opt.state_dict()["param_groups"][0]["betas"]
    assert isinstance(back["opt"]["param_groups"][0]["betas"], tuple)
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert back["np"][0] == "MT19937" and np.array_equal(back["np"][1], state["np"][1])
    assert back["np"][1].dtype == np.uint32
    assert back["py"] == state["py"] and back["inf"] == float("-inf")
    with pytest.raises(TypeError):
        encode_tree({"f": object()}, {})


@pytest.mark.parametrize("preset,sampling", [("deep-rsi", "weighted"),
                                             ("deepmammo", "balanced")])
def test_paper_presets_train_on_8bit_256(tmp_path: Path, preset: str, sampling: str) -> None:
    rows, source = make_rows(2, 1)
    res = train(rows, image_source=source, out_dir=str(tmp_path), label="model", preset=preset,
                epochs=1, batch_size=3, progress=False)
    assert res.config.sampling == sampling and res.config.lr == 1e-4  # Deep-RSI's lr
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["preset"] == preset and meta["preprocess"] == "paper-8bit"
    assert meta["input_spec"]["size"] == 256
    assert "8-bit" in meta["preprocessing_description"]
    assert not any(p.startswith("/nonexistent") for p in source.accessed)


def test_worker_processes_give_identical_weights(tmp_path: Path) -> None:
    rows, source = make_rows(3, 1)
    run(tmp_path / "w0", rows, source, epochs=1)
    run(tmp_path / "w2", rows, source, epochs=1, workers=2)
    assert_same(checkpoint_tensors(tmp_path / "w0"), checkpoint_tensors(tmp_path / "w2"))


def test_select_bacc_and_legacy_runs_resume_with_their_rule(tmp_path: Path) -> None:
    rows, source = make_rows(4, 2)
    res = run(tmp_path / "b", rows, source, epochs=3, select="bacc")
    baccs = [(m["val_bacc"], -m["val_loss"]) for m in res.metrics]
    assert res.best_epoch == 1 + max(range(3), key=lambda i: baccs[i])
    with pytest.raises(ConfigError, match="select"):
        run(tmp_path / "x", rows, source, select="f1")
    # a run written before `select` existed resumes with the rule it was trained with (bacc)
    cfg_path = tmp_path / "b" / "config.json"
    saved = json.loads(cfg_path.read_text())
    del saved["config"]["select"]
    cfg_path.write_text(json.dumps(saved))
    more = run(tmp_path / "b", rows, source, epochs=4, resume=True)
    assert more.epochs_run == 1 and [m["epoch"] for m in more.metrics] == [1, 2, 3, 4]
