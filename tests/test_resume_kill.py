"""kill -9 during `medforensics train`, then `--resume`: same final weights as an uninterrupted run.

The interrupted run is a real ``medforensics train`` process, killed with SIGKILL as soon as
its first checkpoint is complete (``RUN/checkpoints/LATEST`` appears), i.e. while it trains
epoch 2. ``medforensics train --resume`` then finishes it. The reference run is trained
uninterrupted with the same settings (in this process, one thread, while the other process
runs). Every tensor of the final model, of the last epoch's weights and of the optimizer /
RNG state must be bit-identical (``torch.equal``), and so must the per-epoch losses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

EPOCHS = 3
SETTINGS = {"epochs": EPOCHS, "patch": 32, "patches_per_image": 32, "batch_size": 32, "seed": 0}


def _cli(*args: str) -> list[str]:
    exe = Path(sys.executable).with_name("medforensics")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "medforensics.cli"]
    return cmd + list(args)


def _train_args(manifest: Path, out: Path) -> list[str]:
    return _cli("train", str(manifest), "--out", str(out), "--epochs", str(EPOCHS),
                "--patch", "32", "--patches-per-image", "32", "--batch-size", "32",
                "--seed", "0", "--no-progress")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medforensics.data.manifest import ingest, write_manifest
    from medforensics.synth.simulate import simulate_archive
    from medforensics.data.splits import assign_splits

    root = tmp_path_factory.mktemp("resume_kill")
    simulate_archive(root / "archive", manufacturers=2, models_per_manufacturer=1,
                     units_per_model=1, patients=6, images_per_patient=2, size=(96, 128),
                     seed=2)
    rows = ingest([root / "archive"], workers=1, progress=False)
    assign_splits(rows, by="patient", test=0.0, val=0.3, stratify="model", seed=0)
    path = root / "manifest.csv"
    write_manifest(rows, path)
    return path


def _losses(run: Path) -> list[tuple]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["epoch"], r["train_loss"], r.get("val_loss"), r["best_epoch"]) for r in recs]


def _assert_same_tensors(a: Path, b: Path) -> int:
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys(), (a, b)
    for k in x:
        assert x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]), f"{a.name}: {k} differs"
    return len(x)


def test_kill9_then_resume_gives_identical_weights(manifest: Path, tmp_path: Path) -> None:
    from medforensics.training.engine import train

    killed_run, reference = tmp_path / "killed", tmp_path / "reference"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    proc = subprocess.Popen(_train_args(manifest, killed_run), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    state: dict = {}

    def kill_at_first_checkpoint() -> None:
        latest = killed_run / "checkpoints" / "LATEST"
        deadline = time.monotonic() + 50
        while time.monotonic() < deadline and proc.poll() is None:
            if latest.exists():
                state["alive_at_kill"] = proc.poll() is None
                proc.send_signal(signal.SIGKILL)
                state["latest"] = latest.read_text().strip()
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=kill_at_first_checkpoint, daemon=True)
    watcher.start()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the uninterrupted reference, meanwhile, in this process
        train(manifest, out_dir=str(reference), progress=False, **SETTINGS)
    finally:
        torch.set_num_threads(threads)
    watcher.join(60)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, out.decode(errors="replace")[-2000:]
    assert state.get("alive_at_kill") is True
    # killed mid-run: a complete checkpoint before the last epoch, no final model yet
    assert state["latest"] in {f"epoch-{e:04d}" for e in range(1, EPOCHS)}
    assert not (killed_run / "model.json").exists()
    at_kill = load_file(str(killed_run / "checkpoints" / state["latest"] / "model.safetensors"))

    res = subprocess.run(_cli("train", str(manifest), "--out", str(killed_run), "--resume",
                              "--no-progress"),
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert f"last epoch {EPOCHS}" in res.stdout

    n = _assert_same_tensors(reference / "model.safetensors", killed_run / "model.safetensors")
    assert n > 4
    last = f"checkpoints/epoch-{EPOCHS:04d}"
    for name in ("model.safetensors", "best.safetensors", "extra.safetensors"):
        _assert_same_tensors(reference / last / name, killed_run / last / name)
    assert _losses(reference) == _losses(killed_run)
    assert len(_losses(reference)) == EPOCHS
    # the resumed run really trained on after the checkpoint the kill left behind
    final = load_file(str(killed_run / last / "model.safetensors"))
    assert any(not torch.equal(at_kill[k], final[k]) for k in final)
