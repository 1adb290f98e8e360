"""Multi-process training: 2 CPU ranks (gloo) launched with torchrun on a tiny simulated archive.

Checks what the engine promises under torch.distributed: the run finishes, only rank 0 writes
files (every file-system write of each rank is recorded with an audit hook), metrics.jsonl has
the single-process format, every rank gets the same number of draws, the ranks' draws are
disjoint and together are exactly the single-process draw, validation metrics and final
weights are identical on both ranks.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from _helpers import run_torchrun

pytestmark = pytest.mark.slow  # two fresh interpreters importing torch: ~15-40 s in total

EPOCHS = 2
TRAIN_KW = dict(label="model", preset="patch", epochs=EPOCHS, batch_size=8, patch=32,
                patches_per_image=4, val_patches=2, seed=3, progress=False)

# Runs in each rank (torchrun sets RANK, WORLD_SIZE, MASTER_ADDR/PORT).
WORKER = textwrap.dedent(
    """
    import json, os, sys, hashlib

    out_dir, record_dir, manifest, train_kw = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    out_abs = os.path.abspath(out_dir)
    writes = []

    def _is_write(args):
        mode, flags = (args[1], args[2]) if len(args) >= 3 else (None, 0)
        if isinstance(mode, str):
            return any(c in mode for c in "wax+")
        bits = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
        return bool((flags or 0) & bits)

    def _under_out(p):
        try:
            q = os.path.abspath(os.fsdecode(p))
            return q == out_abs or q.startswith(out_abs + os.sep)
        except TypeError:
            return False

    def hook(event, args):
        if event == "open" and args and _under_out(args[0]) and _is_write(args):
            writes.append(["open", os.fsdecode(args[0])])
        elif event in ("os.rename", "os.replace", "os.remove", "os.rmdir", "os.mkdir",
                       "os.truncate", "shutil.rmtree", "shutil.move", "shutil.copyfile",
                       "os.symlink", "os.link") and args and any(
                           _under_out(a) for a in args if isinstance(a, (str, bytes, os.PathLike))):
            writes.extend([event, os.fsdecode(a)] for a in args
                          if isinstance(a, (str, bytes, os.PathLike)))

    sys.addaudithook(hook)

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    import medforensics.training.builders as builders
    import medforensics.training.engine as engine

    draws = {}

    class RecordingSampler(builders.ClassWeightedSampler):
        def __iter__(self):
            items = list(super().__iter__())
            draws.setdefault(str(self.epoch), []).extend([list(k) for k in items])
            return iter(items)

    builders.ClassWeightedSampler = RecordingSampler
    nets = []
    _create = builders.create_model

    def keep_model(*a, **k):
        nets.append(_create(*a, **k))
        return nets[-1]

    builders.create_model = keep_model
    epochs = []
    res = engine.train(manifest, out_dir=out_dir, on_epoch_end=lambda r: epochs.append(dict(r)),
                       **json.loads(train_kw))

    def digest(tensors):
        h = hashlib.sha256()
        for name, t in tensors:
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    params = digest(nets[0].named_parameters())
    buffers = digest(nets[0].named_buffers())
    dist.barrier()
    dist.destroy_process_group()
    with open(os.path.join(record_dir, f"rank{rank}.json"), "w") as fh:
        json.dump({"rank": rank, "world": world, "writes": writes, "draws": draws,
                   "epochs": epochs, "returned_metrics": res.metrics,
                   "best_epoch": res.best_epoch, "params": params, "buffers": buffers}, fh)
    """
)


def _make_manifest(root: Path) -> Path:
    from medforensics.data.manifest import ingest, write_manifest
    from medforensics.synth.simulate import simulate_archive
    from medforensics.data.splits import assign_splits

    simulate_archive(root / "archive", manufacturers=2, models_per_manufacturer=1,
                     units_per_model=1, patients=10, images_per_patient=2, size=96, seed=3)
    rows = ingest([root / "archive"], workers=0, progress=False, label="model")
    assign_splits(rows, by="patient", test=0.2, val=0.2, stratify="model", seed=0)
    return write_manifest(rows, root / "manifest.csv")


def test_two_rank_gloo_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import medforensics.training.builders as builders
    import medforensics.training.engine as engine

    manifest = _make_manifest(tmp_path)
    script = tmp_path / "ddp_worker.py"
    script.write_text(WORKER)
    record = tmp_path / "record"
    record.mkdir()
    out = tmp_path / "ddp_run"

    def reset() -> None:  # a retried launch starts from nothing
        shutil.rmtree(out, ignore_errors=True)
        for f in record.iterdir():
            f.unlink()

    proc = run_torchrun([str(script), str(out), str(record), str(manifest),
                         json.dumps(TRAIN_KW)], reset=reset)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (json.loads((record / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["world"], r1["world"]) == (2, 2)

    # only rank 0 touches the run directory
    assert r1["writes"] == []
    written = {Path(p).name for _, p in r0["writes"]}
    assert {"config.json", "metrics.csv", "model.json", "LATEST"} <= written
    assert any(n.startswith("metrics.jsonl") for n in written)
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    assert (out / "model.safetensors").is_file() and (out / "model.json").is_file()

    # gradients are all-reduced: both ranks end with the same weights
    assert r0["params"] == r1["params"]

    # same metrics on both ranks (validation is all-reduced); rank 0 returns them
    def timeless(recs: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in recs]

    assert timeless(r0["epochs"]) == timeless(r1["epochs"])
    assert len(r0["returned_metrics"]) == EPOCHS and r1["returned_metrics"] == []

    # single-process reference with the same settings, sampler recorded the same way
    torch.set_num_threads(1)
    single_draws: dict[str, list] = {}

    class RecordingSampler(builders.ClassWeightedSampler):
        def __iter__(self):  # type: ignore[override]
            items = list(super().__iter__())
            single_draws.setdefault(str(self.epoch), []).extend([list(k) for k in items])
            return iter(items)

    monkeypatch.setattr(builders, "ClassWeightedSampler", RecordingSampler)
    single = engine.train(str(manifest), out_dir=str(tmp_path / "single_run"), **TRAIN_KW)

    # metrics.jsonl: same format (keys, key order, value types, one line per epoch)
    def lines(run: Path) -> list[dict]:
        return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]

    ddp_lines, single_lines = lines(out), lines(tmp_path / "single_run")
    assert len(ddp_lines) == len(single_lines) == EPOCHS
    for a, b in zip(ddp_lines, single_lines):
        assert list(a) == list(b)
        assert {k: type(v) for k, v in a.items()} == {k: type(v) for k, v in b.items()}
        assert a["train_samples"] == b["train_samples"]  # all-reduced over ranks
        assert a["val_images"] == b["val_images"]
    assert [r["epoch"] for r in ddp_lines] == list(range(1, EPOCHS + 1))
    assert len(single.metrics) == EPOCHS

    # sampling: balanced, disjoint, and together exactly the single-process draw
    for epoch in map(str, range(1, EPOCHS + 1)):
        d0 = [tuple(k) for k in r0["draws"][epoch]]
        d1 = [tuple(k) for k in r1["draws"][epoch]]
        assert len(d0) == len(d1) > 0
        assert not {k[1] for k in d0} & {k[1] for k in d1}  # draw positions are disjoint
        assert sorted(d0 + d1, key=lambda k: k[1]) == \
            sorted((tuple(k) for k in single_draws[epoch]), key=lambda k: k[1])


def test_run_torchrun_retries_only_a_teardown_abort(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    calls: list[list[str]] = []
    outcomes = iter([(1, "exitcode: -6 ... Signal 6 (SIGABRT) received by PID 7"), (0, "ok"),
                     (1, "RuntimeError: real failure"), (1, "never reached")])

    def fake_run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        code, err = next(outcomes)
        return subprocess.CompletedProcess(cmd, code, "", err)

    monkeypatch.setattr(subprocess, "run", fake_run)
    resets: list[int] = []
    proc = run_torchrun(["w.py"], reset=lambda: resets.append(1))
    assert proc.returncode == 0 and len(calls) == 2 and resets == [1]
    assert calls[0][-1] == "w.py" and "--standalone" in calls[0]
    proc = run_torchrun(["w.py"], reset=lambda: resets.append(1))
    assert proc.returncode == 1 and len(calls) == 3 and resets == [1]  # no retry
